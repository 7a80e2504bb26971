//! The write-ahead log: accepted samples, in sequence order, in segment files
//! `wal-{first_seq:020}.log` of the data directory. A segment is an 8-byte magic, then records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of the payload | payload
//! payload = u64 LE seq | u32 LE label | u32 LE n | n × f32 LE features
//! ```
//!
//! A crash can leave the last record of the last segment half-written; [`scan`] finds it by its
//! length or CRC (an expected condition: `Torn`), truncates it away and reports where the valid
//! records end. Nothing here spawns threads or decides when to sync: that is the service's.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::model_file::sync_dir;
use crate::store::StoreError;

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"FFDWAL1\n";
/// Bytes before a record's payload (length and CRC).
pub const RECORD_HEADER: usize = 8;
/// Payload bytes before the features (seq, label, feature count).
const PAYLOAD_HEADER: usize = 16;
/// Longest payload accepted when reading: a larger length is damage, not a record.
pub const MAX_PAYLOAD: usize = 64 << 20;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";

/// An accepted sample and its sequence number: one WAL record, and also what the service's
/// learn queue holds, so a sample read back from the log and one handed over live are the same
/// value for the learner.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedSample {
    /// Its sequence number (1, 2, ...; monotonic over the service's life, across restarts).
    pub seq: u64,
    /// Its label.
    pub label: usize,
    /// Its features.
    pub features: Vec<f32>,
}

/// Appends one record for `(seq, label, features)` to `buf`.
pub fn encode(buf: &mut Vec<u8>, seq: u64, label: usize, features: &[f32]) {
    let payload_len = PAYLOAD_HEADER + 4 * features.len();
    let start = buf.len();
    buf.reserve(RECORD_HEADER + payload_len);
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(label as u32).to_le_bytes());
    buf.extend_from_slice(&(features.len() as u32).to_le_bytes());
    for f in features {
        buf.extend_from_slice(&f.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes [`encode`] appends for a sample of `features` values.
pub fn encoded_len(features: usize) -> usize {
    RECORD_HEADER + PAYLOAD_HEADER + 4 * features
}

/// What reading the next record found.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// A record that verifies, and the offset just past it.
    Record(SequencedSample, u64),
    /// The clean end of the segment.
    End,
    /// A partial or damaged record at the current offset: what follows is not trusted.
    Torn(String),
}

/// Reads one segment's records in order.
#[derive(Debug)]
pub struct SegmentReader {
    file: BufReader<File>,
    offset: u64,
    payload: Vec<u8>,
}

impl SegmentReader {
    /// Opens `path` and checks its magic; a file too short for it, or with other bytes, fails
    /// with `Format`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut magic = [0u8; 8];
        match file.read_exact(&mut magic) {
            Ok(()) if &magic == MAGIC => {}
            Ok(()) => return Err(format_error(path, "not a WAL segment (bad magic)")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(format_error(path, "shorter than the segment header"))
            }
            Err(e) => return Err(io(e)),
        }
        Ok(Self {
            file,
            offset: MAGIC.len() as u64,
            payload: Vec::new(),
        })
    }

    /// Offset of the next record (just past the last one read).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record. I/O errors other than a short read are `Err`.
    pub fn next_record(&mut self) -> io::Result<Next> {
        let mut header = [0u8; RECORD_HEADER];
        match read_full(&mut self.file, &mut header)? {
            0 => return Ok(Next::End),
            n if n < RECORD_HEADER => return Ok(Next::Torn("a partial record header".into())),
            _ => {}
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(PAYLOAD_HEADER..=MAX_PAYLOAD).contains(&len) || (len - PAYLOAD_HEADER) % 4 != 0 {
            return Ok(Next::Torn(format!("an impossible record length {len}")));
        }
        self.payload.resize(len, 0);
        if read_full(&mut self.file, &mut self.payload)? < len {
            return Ok(Next::Torn("a partial record".into()));
        }
        if crc32fast::hash(&self.payload) != crc {
            return Ok(Next::Torn("a record whose CRC does not match".into()));
        }
        let p = &self.payload;
        let seq = u64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
        let label = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes")) as usize;
        let n = u32::from_le_bytes(p[12..16].try_into().expect("4 bytes")) as usize;
        if PAYLOAD_HEADER + 4 * n != len {
            return Ok(Next::Torn(
                "a record whose feature count disagrees with its length".into(),
            ));
        }
        let features = p[PAYLOAD_HEADER..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.offset += (RECORD_HEADER + len) as u64;
        Ok(Next::Record(
            SequencedSample {
                seq,
                label,
                features,
            },
            self.offset,
        ))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn format_error(path: &Path, reason: &str) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        reason: format!("WAL: {reason}"),
    }
}

/// A segment file and the sequence number its name says it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number of its first record (records may start later after a loss).
    pub start_seq: u64,
    /// The file.
    pub path: PathBuf,
}

/// File name of the segment starting at `start_seq`.
pub fn segment_name(start_seq: u64) -> String {
    format!("{PREFIX}{start_seq:020}{SUFFIX}")
}

/// Segments in `dir`, oldest first. A missing directory has none.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut found: Vec<Segment> = super::numbered_files(dir, PREFIX, SUFFIX)?
        .into_iter()
        .map(|(start_seq, path)| Segment { start_seq, path })
        .collect();
    found.sort_by_key(|s| s.start_seq);
    Ok(found)
}

/// One verified segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedSegment {
    /// The segment.
    pub segment: Segment,
    /// Bytes of verified records (the file was truncated to this if it was longer).
    pub valid_bytes: u64,
    /// Sequence numbers of its first and last verified records.
    pub seqs: Option<(u64, u64)>,
    /// Verified records.
    pub records: u64,
}

/// What [`scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every segment, oldest first.
    pub segments: Vec<ScannedSegment>,
    /// Records with a sequence number above the `after` given to [`scan`].
    pub backlog: u64,
    /// Their lowest sequence number (`None` without a backlog).
    pub backlog_first: Option<u64>,
    /// Highest verified sequence number (0 if none).
    pub last_seq: u64,
    /// Bytes of verified records on disk.
    pub bytes: u64,
    /// Damaged tails cut off, as `(segment, offset, what was found)`.
    pub truncated: Vec<(PathBuf, u64, String)>,
}

/// Verifies every segment in `dir`, counting records with a sequence number above `after`.
/// A damaged or partial record ends its segment: the file is truncated there (a torn write is
/// expected after a crash) and the damage reported in [`Scan::truncated`]. A segment whose
/// header is missing or wrong is reported the same way and not read.
pub fn scan(dir: &Path, after: u64) -> Result<Scan, StoreError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let mut out = Scan::default();
    for segment in list_segments(dir).map_err(io_at(dir))? {
        let mut reader = match SegmentReader::open(&segment.path) {
            Ok(r) => r,
            Err(StoreError::Format { reason, .. }) => {
                out.truncated.push((segment.path.clone(), 0, reason));
                rewrite_header(&segment.path).map_err(io_at(&segment.path))?;
                out.segments.push(ScannedSegment {
                    segment,
                    valid_bytes: MAGIC.len() as u64,
                    seqs: None,
                    records: 0,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut scanned = ScannedSegment {
            segment: segment.clone(),
            valid_bytes: reader.offset(),
            seqs: None,
            records: 0,
        };
        loop {
            match reader.next_record().map_err(io_at(&segment.path))? {
                Next::Record(r, end) => {
                    scanned.valid_bytes = end;
                    scanned.records += 1;
                    scanned.seqs = Some(match scanned.seqs {
                        None => (r.seq, r.seq),
                        Some((first, _)) => (first, r.seq),
                    });
                    if r.seq > after {
                        out.backlog += 1;
                        out.backlog_first.get_or_insert(r.seq);
                    }
                    out.last_seq = out.last_seq.max(r.seq);
                }
                Next::End => break,
                Next::Torn(what) => {
                    let at = reader.offset();
                    drop(reader);
                    truncate(&segment.path, at).map_err(io_at(&segment.path))?;
                    out.truncated.push((segment.path.clone(), at, what));
                    break;
                }
            }
        }
        out.bytes += scanned.valid_bytes;
        out.segments.push(scanned);
    }
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Replaces a segment whose header is damaged by an empty one, so later appends and scans see
/// a well-formed file.
fn rewrite_header(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(MAGIC)?;
    file.sync_all()
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates the segment for `start_seq` in `dir` (magic written and synced, and the
    /// directory synced so the new name survives a crash).
    pub fn create(dir: &Path, start_seq: u64) -> Result<Self, StoreError> {
        let path = dir.join(segment_name(start_seq));
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(MAGIC).map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(dir).map_err(io)?;
        Ok(Self {
            file,
            bytes: MAGIC.len() as u64,
            path,
        })
    }

    /// Appends encoded records (not synced).
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        self.file.write_all(records)?;
        self.bytes += records.len() as u64;
        Ok(())
    }

    /// Makes everything appended durable (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the file.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Deletes the segments of `dir` whose records all have sequence numbers `<= through` (those a
/// checkpoint at `through` covers): every segment whose successor starts at or before
/// `through + 1`. The newest segment is never deleted. Returns the bytes freed.
pub fn remove_covered(dir: &Path, through: u64) -> Result<u64, StoreError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let segments = list_segments(dir).map_err(io_at(dir))?;
    let mut freed = 0;
    for pair in segments.windows(2) {
        if pair[1].start_seq <= through.saturating_add(1) {
            let len = fs::metadata(&pair[0].path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&pair[0].path).map_err(io_at(&pair[0].path))?;
            freed += len;
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path, seqs: std::ops::RangeInclusive<u64>) {
        let mut w = SegmentWriter::create(dir, *seqs.start()).expect("create");
        let mut buf = Vec::new();
        for seq in seqs {
            encode(&mut buf, seq, (seq % 10) as usize, &[seq as f32, 1.0]);
        }
        w.append(&buf).expect("append");
        w.sync().expect("sync");
    }

    fn starts(dir: &Path) -> Vec<u64> {
        list_segments(dir)
            .expect("list")
            .iter()
            .map(|s| s.start_seq)
            .collect()
    }

    #[test]
    fn records_round_trip_and_scan_counts_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        segment(dir.path(), 1..=100);
        segment(dir.path(), 101..=150);
        let scan = scan(dir.path(), 120).expect("scan");
        assert_eq!(
            (scan.backlog, scan.backlog_first, scan.last_seq),
            (30, Some(121), 150)
        );
        assert!(scan.truncated.is_empty());
        let mut r = SegmentReader::open(&scan.segments[1].segment.path).expect("open");
        match r.next_record().expect("read") {
            Next::Record(rec, _) => assert_eq!(
                rec,
                SequencedSample {
                    seq: 101,
                    label: 1,
                    features: vec![101.0, 1.0]
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_segments_a_checkpoint_covers_are_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        segment(dir.path(), 1..=100);
        segment(dir.path(), 101..=200);
        segment(dir.path(), 201..=210);
        remove_covered(dir.path(), 150).expect("remove");
        assert_eq!(
            starts(dir.path()),
            [101, 201],
            "1..=100 covered; 101..=200 is not"
        );
        remove_covered(dir.path(), 200).expect("remove");
        assert_eq!(starts(dir.path()), [201]);
        remove_covered(dir.path(), 1000).expect("remove");
        assert_eq!(
            starts(dir.path()),
            [201],
            "the newest segment is never deleted"
        );
    }

    #[test]
    fn a_damaged_header_or_length_ends_the_segment() {
        let dir = tempfile::tempdir().expect("temp dir");
        segment(dir.path(), 1..=10);
        let path = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&path).expect("read");
        // Record 4's length field claims more than any record may hold.
        let at = MAGIC.len() + 3 * encoded_len(2);
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &bytes).expect("write");
        let scan = scan(dir.path(), 0).expect("scan");
        assert_eq!((scan.backlog, scan.last_seq), (3, 3));
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            at as u64,
            "cut there"
        );
        fs::write(&path, b"garbage").expect("write");
        let scan = super::scan(dir.path(), 0).expect("scan");
        assert_eq!(scan.backlog, 0);
        assert_eq!(scan.truncated.len(), 1);
    }
}
