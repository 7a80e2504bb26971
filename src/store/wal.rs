//! The write-ahead log: accepted samples, in sequence order, in segment files
//! `wal-{first_seq:020}.log` of the data directory. Format version 2:
//!
//! ```text
//! segment = header | record*
//! header  = "FFDWAL2\n" | u64 LE start_seq | u64 LE high_water | u32 LE CRC-32 of the 24 bytes before | u32 0
//! record  = "FFDR" | u32 LE payload length | u64 LE seq | u32 LE CRC-32 of (length, seq, payload) | payload
//! payload = u32 LE label | n × f32 LE features        (length = 4 + 4n)
//! ```
//!
//! `high_water` is the highest sequence number written to the segment; the writer rewrites it
//! in place after each write, before the sync, so it is durable with the records it covers and
//! names the records a damaged tail held. Every record starts with a magic and carries its own
//! length, sequence number and CRC, so [`scan`] resynchronises on the next record that verifies
//! after damage: only the damaged records are lost, and the sequence numbers between the
//! verified neighbours say exactly which. Damaged bytes are moved to a file beside the
//! segment (`<segment>.at-<offset>.damaged`), never deleted, and the segment is rewritten
//! without them.
//!
//! Version 1 segments (`"FFDWAL1\n"`, records without magic or sequence number in the
//! header) are still read, so an upgrade resumes from the log an older build wrote; they are
//! never appended to (each start writes a new segment) and disappear once a checkpoint covers
//! them. Damage in one cannot be resynchronised: its segment ends at the first bad record
//! (moved aside like any damage). Any other first 8 bytes are a damaged version 2 header.
//!
//! A crash can leave the end of the newest segment half-written. [`scan`] tells that torn
//! tail (a partial record, or zeros, where the file ends) from damage: a torn record was never
//! acknowledged in `fsync` mode (its sync did not complete), so it is cut and reported as
//! torn, not lost. Nothing here spawns threads or decides when to sync: that is the service's.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::model_file::sync_dir;
use crate::store::StoreError;

/// First bytes of every segment this build writes (format version 2).
pub const MAGIC: &[u8; 8] = b"FFDWAL2\n";
/// First bytes of a version 1 segment (read, never written).
pub const MAGIC_V1: &[u8; 8] = b"FFDWAL1\n";
/// Bytes of a version 2 segment header; the first record starts here.
pub const SEGMENT_HEADER: usize = 32;
/// First bytes of every version 2 record.
pub const RECORD_MAGIC: &[u8; 4] = b"FFDR";
/// Bytes of a record before its payload (magic, length, sequence number, CRC).
pub const RECORD_HEADER: usize = 20;
/// Longest payload accepted when reading: a larger length is damage, not a record.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Offset of the `high_water` field (and the header CRC after it).
const HIGH_WATER_AT: u64 = 16;
/// Version 1: bytes before a record's payload (length and CRC) and payload bytes before the
/// features (seq, label, feature count).
const V1_RECORD_HEADER: usize = 8;
const V1_PAYLOAD_HEADER: usize = 16;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
/// Suffix of the files damaged bytes are moved to.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// An accepted sample and its sequence number: one WAL record, and also what the service's
/// learn queue holds, so a sample read back from the log and one handed over live are the same
/// value for the learner.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedSample {
    /// Its sequence number (1, 2, ...; increasing over the service's life, across restarts,
    /// never reused).
    pub seq: u64,
    /// Its label.
    pub label: usize,
    /// Its features.
    pub features: Vec<f32>,
}

/// Appends one record for `(seq, label, features)` to `buf`.
pub fn encode(buf: &mut Vec<u8>, seq: u64, label: usize, features: &[f32]) {
    let payload_len = 4 + 4 * features.len();
    let start = buf.len();
    buf.reserve(RECORD_HEADER + payload_len);
    buf.extend_from_slice(RECORD_MAGIC);
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(label as u32).to_le_bytes());
    for f in features {
        buf.extend_from_slice(&f.to_le_bytes());
    }
    let crc = record_crc(&buf[start + 4..start + 16], &buf[start + RECORD_HEADER..]);
    buf[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes [`encode`] appends for a sample of `features` values.
pub fn encoded_len(features: usize) -> usize {
    RECORD_HEADER + 4 + 4 * features
}

fn record_crc(len_and_seq: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_and_seq);
    h.update(payload);
    h.finalize()
}

/// The 32 header bytes of a version 2 segment.
fn header_bytes(start_seq: u64, high_water: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&start_seq.to_le_bytes());
    h[16..24].copy_from_slice(&high_water.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// What the first bytes of a segment say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Version 2 with a verified header: its `high_water`.
    V2 { high_water: u64 },
    /// Version 1.
    V1,
    /// Not a valid header: read as version 2, the header bytes are damage.
    Damaged,
}

impl Header {
    fn parse(bytes: &[u8]) -> Self {
        if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
            return Self::V1;
        }
        if bytes.len() >= SEGMENT_HEADER
            && &bytes[..8] == MAGIC
            && crc32fast::hash(&bytes[..24]) == u32_at(bytes, 24)
        {
            return Self::V2 {
                high_water: u64_at(bytes, 16),
            };
        }
        Self::Damaged
    }

    /// Offset of the first record.
    fn records_at(self) -> u64 {
        match self {
            Self::V1 => MAGIC_V1.len() as u64,
            _ => SEGMENT_HEADER as u64,
        }
    }
}

/// A record parsed from bytes starting at its first byte.
enum Parsed {
    /// It verifies: its sequence number, label, features' bytes and total length.
    Record {
        seq: u64,
        label: usize,
        features: std::ops::Range<usize>,
        len: usize,
    },
    /// The bytes end before the record does; `seq` when the header (not yet verified) names
    /// one.
    Short { seq: Option<u64> },
    /// Not a record.
    Bad(&'static str),
}

/// Parses a version 2 record at the start of `b`.
fn parse_v2(b: &[u8]) -> Parsed {
    if b.len() < RECORD_HEADER {
        if !RECORD_MAGIC.starts_with(&b[..b.len().min(4)]) {
            return Parsed::Bad("no record magic");
        }
        return Parsed::Short { seq: None };
    }
    if &b[..4] != RECORD_MAGIC {
        return Parsed::Bad("no record magic");
    }
    let len = u32_at(b, 4) as usize;
    if !(4..=MAX_PAYLOAD).contains(&len) || !len.is_multiple_of(4) {
        return Parsed::Bad("an impossible record length");
    }
    let seq = u64_at(b, 8);
    if b.len() < RECORD_HEADER + len {
        return Parsed::Short { seq: Some(seq) };
    }
    let payload = &b[RECORD_HEADER..RECORD_HEADER + len];
    if record_crc(&b[4..16], payload) != u32_at(b, 16) {
        return Parsed::Bad("a record whose CRC does not match");
    }
    Parsed::Record {
        seq,
        label: u32_at(payload, 0) as usize,
        features: RECORD_HEADER + 4..RECORD_HEADER + len,
        len: RECORD_HEADER + len,
    }
}

/// Parses a version 1 record at the start of `b`.
fn parse_v1(b: &[u8]) -> Parsed {
    if b.len() < V1_RECORD_HEADER {
        return Parsed::Short { seq: None };
    }
    let len = u32_at(b, 0) as usize;
    if !(V1_PAYLOAD_HEADER..=MAX_PAYLOAD).contains(&len)
        || !(len - V1_PAYLOAD_HEADER).is_multiple_of(4)
    {
        return Parsed::Bad("an impossible record length");
    }
    if b.len() < V1_RECORD_HEADER + len {
        return Parsed::Short { seq: None };
    }
    let p = &b[V1_RECORD_HEADER..V1_RECORD_HEADER + len];
    if crc32fast::hash(p) != u32_at(b, 4) {
        return Parsed::Bad("a record whose CRC does not match");
    }
    let n = u32_at(p, 12) as usize;
    if V1_PAYLOAD_HEADER + 4 * n != len {
        return Parsed::Bad("a record whose feature count disagrees with its length");
    }
    Parsed::Record {
        seq: u64_at(p, 0),
        label: u32_at(p, 8) as usize,
        features: V1_RECORD_HEADER + V1_PAYLOAD_HEADER..V1_RECORD_HEADER + len,
        len: V1_RECORD_HEADER + len,
    }
}

fn features_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
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

/// Reads one segment's records in order (a segment [`scan`] has verified and repaired: it
/// does not resynchronise).
#[derive(Debug)]
pub struct SegmentReader {
    file: BufReader<File>,
    v1: bool,
    offset: u64,
    buf: Vec<u8>,
}

impl SegmentReader {
    /// Opens `path` and checks its header; a file with another or a damaged one fails with
    /// `Format`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut head = [0u8; SEGMENT_HEADER];
        let n = read_full(&mut file, &mut head).map_err(io)?;
        let header = Header::parse(&head[..n]);
        if header == Header::Damaged {
            return Err(format_error(
                path,
                "not a WAL segment (bad or damaged header)",
            ));
        }
        let offset = header.records_at();
        // The bytes read past a version 1 header are its first record's: start over there.
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(Self {
            file,
            v1: header == Header::V1,
            offset,
            buf: Vec::new(),
        })
    }

    /// Offset of the next record (just past the last one read).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record. I/O errors other than a short read are `Err`.
    pub fn next_record(&mut self) -> io::Result<Next> {
        let head = if self.v1 {
            V1_RECORD_HEADER
        } else {
            RECORD_HEADER
        };
        self.buf.resize(head, 0);
        match read_full(&mut self.file, &mut self.buf)? {
            0 => return Ok(Next::End),
            n if n < head => return Ok(Next::Torn("a partial record header".into())),
            _ => {}
        }
        let len = u32_at(&self.buf, if self.v1 { 0 } else { 4 }) as usize;
        if len > MAX_PAYLOAD {
            return Ok(Next::Torn("an impossible record length".into()));
        }
        self.buf.resize(head + len, 0);
        if read_full(&mut self.file, &mut self.buf[head..])? < len {
            return Ok(Next::Torn("a partial record".into()));
        }
        let parsed = if self.v1 {
            parse_v1(&self.buf)
        } else {
            parse_v2(&self.buf)
        };
        match parsed {
            Parsed::Record {
                seq,
                label,
                features,
                len,
            } => {
                self.offset += len as u64;
                Ok(Next::Record(
                    SequencedSample {
                        seq,
                        label,
                        features: features_of(&self.buf[features]),
                    },
                    self.offset,
                ))
            }
            Parsed::Short { .. } => Ok(Next::Torn("a partial record".into())),
            Parsed::Bad(what) => Ok(Next::Torn(what.into())),
        }
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

/// An inclusive range of sequence numbers.
pub type SeqRange = (u64, u64);

/// Bytes of a segment [`scan`] cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment.
    pub segment: PathBuf,
    /// Where the bytes were in it, and how many.
    pub offset: u64,
    pub bytes: u64,
    /// The file they were moved to.
    pub moved_to: PathBuf,
    /// A torn tail (what a crash leaves: never acknowledged in `fsync` mode) rather than
    /// damage.
    pub torn: bool,
    /// The sequence numbers of the records they held, when known.
    pub seqs: Option<SeqRange>,
    /// What was found there.
    pub what: String,
}

/// One verified segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedSegment {
    /// The segment.
    pub segment: Segment,
    /// Bytes of the (repaired) file.
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
    /// Lowest verified sequence number (`None` without records).
    pub first_seq: Option<u64>,
    /// Highest verified sequence number (0 if none).
    pub last_seq: u64,
    /// Highest sequence number the log shows was ever used: verified records, segment
    /// headers' `high_water`, segment names (a segment starting at `s` was started after
    /// `s - 1` was used). New samples must be numbered above it.
    pub high_water: u64,
    /// Bytes of the segments on disk (after repair).
    pub bytes: u64,
    /// Bytes cut out of segments (damage and torn tails), in file order.
    pub cuts: Vec<Cut>,
    /// Numbers segment headers count beyond the last record of older segments that end
    /// cleanly: cut at an earlier start and reported then.
    pub skipped: Vec<SeqRange>,
}

impl Scan {
    /// Sequence numbers lost to damage (not torn tails), in order.
    pub fn lost(&self) -> impl Iterator<Item = SeqRange> + '_ {
        self.cuts.iter().filter(|c| !c.torn).filter_map(|c| c.seqs)
    }

    /// Sequence numbers of torn tails, in order.
    pub fn torn(&self) -> impl Iterator<Item = SeqRange> + '_ {
        self.cuts.iter().filter(|c| c.torn).filter_map(|c| c.seqs)
    }
}

/// Random access to a file through a window of up to 1 MiB (more for a larger record).
struct Window {
    file: File,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    const SIZE: usize = 1 << 20;

    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            start: 0,
            buf: Vec::new(),
        })
    }

    /// Up to `n` bytes at `pos` (fewer where the file ends).
    fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        if pos >= self.len {
            return Ok(&[]);
        }
        let want_end = (pos + n as u64).min(self.len);
        let have_end = self.start + self.buf.len() as u64;
        if pos < self.start || want_end > have_end {
            let size = n
                .max(Self::SIZE)
                .min((self.len.saturating_sub(pos)) as usize);
            self.buf.resize(size, 0);
            self.file.seek(SeekFrom::Start(pos))?;
            let got = read_full(&mut self.file, &mut self.buf)?;
            self.buf.truncate(got);
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (want_end.saturating_sub(self.start) as usize).max(from);
        Ok(&self.buf[from..to.min(self.buf.len())])
    }
}

/// How a segment's bytes divide into verified records and the rest.
struct SegmentScan {
    header: Header,
    /// Verified records: (offset, length, seq).
    records: Vec<(u64, u64, u64)>,
    /// Bytes that are not verified records: (offset, length, torn, seqs, what).
    cuts: Vec<(u64, u64, bool, Option<SeqRange>, String)>,
    /// The header's `high_water` (0 when it has none).
    high_water: u64,
    /// Numbers the header counts beyond the last record of an older segment that ends
    /// cleanly: cut at an earlier start (and reported then).
    skipped: Option<SeqRange>,
}

/// Reads a segment: verified records, and resynchronisation after damage. `newest` is true
/// for the segment the last run appended to (only it can have a torn tail); `next_start` is
/// the next segment's first sequence number.
fn scan_segment(
    segment: &Segment,
    newest: bool,
    next_start: Option<u64>,
) -> io::Result<SegmentScan> {
    let mut w = Window::open(&segment.path)?;
    let head = w.get(0, SEGMENT_HEADER)?.to_vec();
    let header = Header::parse(&head);
    let high_water = match header {
        Header::V2 { high_water } => high_water,
        _ => 0,
    };
    let v1 = header == Header::V1;
    let mut out = SegmentScan {
        header,
        records: Vec::new(),
        cuts: Vec::new(),
        high_water,
        skipped: None,
    };
    let data_at = header.records_at().min(w.len);
    if header == Header::Damaged && w.len > 0 {
        out.cuts
            .push((0, data_at, false, None, "a damaged segment header".into()));
    }
    let mut pos = data_at;
    let mut prev = segment.start_seq.saturating_sub(1);
    let parse = |b: &[u8]| if v1 { parse_v1(b) } else { parse_v2(b) };
    while pos < w.len {
        let head_len = if v1 { V1_RECORD_HEADER } else { RECORD_HEADER };
        let b = w.get(pos, head_len)?;
        let need = match parse(b) {
            Parsed::Bad(_) => 0,
            _ if b.len() < head_len => head_len,
            _ => {
                let len = u32_at(b, if v1 { 0 } else { 4 }) as usize;
                head_len + len.min(MAX_PAYLOAD)
            }
        };
        let parsed = if need > 0 {
            parse(w.get(pos, need)?)
        } else {
            Parsed::Bad("no record magic")
        };
        let (what, short_seq) = match parsed {
            Parsed::Record { seq, len, .. } if seq > prev => {
                out.records.push((pos, len as u64, seq));
                prev = seq;
                pos += len as u64;
                continue;
            }
            Parsed::Record { .. } => ("a record out of sequence order", None),
            Parsed::Short { seq } => ("a partial record", seq),
            Parsed::Bad(what) => (what, None),
        };
        // Damage at `pos`: the next record that verifies (and follows `prev`) ends it.
        let next = if v1 {
            None
        } else {
            resync(&mut w, pos + 1, prev)?
        };
        match next {
            Some((at, seq)) => {
                let lost = (seq > prev + 1).then_some((prev + 1, seq - 1));
                out.cuts.push((pos, at - pos, false, lost, what.into()));
                pos = at;
            }
            None => {
                let tail = w.get(pos, (w.len - pos) as usize)?;
                let zeros = tail.iter().all(|&b| b == 0);
                // A partial record that would come next, or zeros: a torn write.
                let torn = newest
                    && (zeros
                        || matches!(short_seq, Some(s) if s == prev + 1)
                        || (short_seq.is_none() && what == "a partial record"));
                let upper = high_water.max(if newest {
                    0
                } else {
                    next_start.map_or(0, |s| s.saturating_sub(1))
                });
                let seqs = (upper > prev).then_some((prev + 1, upper));
                out.cuts.push((pos, w.len - pos, torn, seqs, what.into()));
                pos = w.len;
            }
        }
    }
    // A clean end short of the header's high-water mark in the newest segment: records the
    // header counted never reached the disk (a crash before the sync: not acknowledged).
    let tail_cut = out.cuts.last().is_some_and(|c| c.0 + c.1 >= w.len);
    if !newest && high_water > prev && !tail_cut {
        out.skipped = Some((prev + 1, high_water));
    }
    if newest && high_water > prev && !tail_cut {
        out.cuts.push((
            w.len,
            0,
            true,
            Some((prev + 1, high_water)),
            "records the header counts are missing at the end".into(),
        ));
    }
    Ok(out)
}

/// The offset and sequence number of the first record at or after `from` that verifies and
/// is numbered above `prev`.
fn resync(w: &mut Window, from: u64, prev: u64) -> io::Result<Option<(u64, u64)>> {
    let mut at = from;
    while at + RECORD_HEADER as u64 <= w.len {
        let chunk = w.get(at, Window::SIZE)?;
        let Some(i) = chunk.windows(4).position(|b| b == RECORD_MAGIC) else {
            // The magic may straddle the chunk's end: keep its last 3 bytes.
            at += chunk.len().saturating_sub(3).max(1) as u64;
            continue;
        };
        let cand = at + i as u64;
        let head = w.get(cand, RECORD_HEADER)?;
        if head.len() == RECORD_HEADER {
            let len = RECORD_HEADER + (u32_at(head, 4) as usize).min(MAX_PAYLOAD);
            if let Parsed::Record { seq, .. } = parse_v2(w.get(cand, len)?) {
                if seq > prev {
                    return Ok(Some((cand, seq)));
                }
            }
        }
        at = cand + 1;
    }
    Ok(None)
}

/// Verifies every segment in `dir`, counting records with a sequence number above `after`.
/// Damage is cut out: its bytes are moved to `<segment>.at-<offset>.damaged` beside the
/// segment and the segment is rewritten without them (see the module documentation); each
/// cut is reported in [`Scan::cuts`] with the sequence numbers it held.
pub fn scan(dir: &Path, after: u64) -> Result<Scan, StoreError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let mut out = Scan::default();
    let segments = list_segments(dir).map_err(io_at(dir))?;
    for (i, segment) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let next_start = segments.get(i + 1).map(|s| s.start_seq);
        let found = scan_segment(segment, newest, next_start).map_err(io_at(&segment.path))?;
        out.high_water = out
            .high_water
            .max(found.high_water)
            .max(segment.start_seq.saturating_sub(1));
        let mut scanned = ScannedSegment {
            segment: segment.clone(),
            valid_bytes: 0,
            seqs: None,
            records: 0,
        };
        for &(_, _, seq) in &found.records {
            scanned.records += 1;
            scanned.seqs = Some(match scanned.seqs {
                None => (seq, seq),
                Some((first, _)) => (first, seq),
            });
            if seq > after {
                out.backlog += 1;
                out.backlog_first.get_or_insert(seq);
            }
            out.first_seq = Some(out.first_seq.map_or(seq, |f| f.min(seq)));
            out.last_seq = out.last_seq.max(seq);
        }
        out.high_water = out.high_water.max(out.last_seq);
        out.skipped.extend(found.skipped);
        if found.cuts.iter().any(|c| c.1 > 0) || found.header == Header::Damaged {
            let cuts = repair(segment, &found).map_err(io_at(&segment.path))?;
            out.cuts.extend(cuts);
        } else {
            // Only a missing end the header counted: nothing to move.
            out.cuts
                .extend(found.cuts.iter().map(|c| cut(segment, c, PathBuf::new())));
        }
        scanned.valid_bytes = fs::metadata(&segment.path)
            .map_err(io_at(&segment.path))?
            .len();
        out.bytes += scanned.valid_bytes;
        out.segments.push(scanned);
    }
    Ok(out)
}

fn cut(
    segment: &Segment,
    c: &(u64, u64, bool, Option<SeqRange>, String),
    moved_to: PathBuf,
) -> Cut {
    Cut {
        segment: segment.path.clone(),
        offset: c.0,
        bytes: c.1,
        moved_to,
        torn: c.2,
        seqs: c.3,
        what: c.4.clone(),
    }
}

/// Moves every cut range of `segment` to a `.damaged` file beside it (synced), then replaces
/// the segment by its header and verified records (written to a temporary file, synced,
/// renamed over it, directory synced).
fn repair(segment: &Segment, found: &SegmentScan) -> io::Result<Vec<Cut>> {
    let path = &segment.path;
    let bytes = fs::read(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cuts = Vec::new();
    for c in &found.cuts {
        let (from, len) = (c.0 as usize, c.1 as usize);
        if len == 0 {
            cuts.push(cut(segment, c, PathBuf::new()));
            continue;
        }
        let moved_to = aside_path(&dir, &name, c.0);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&moved_to)?;
        f.write_all(&bytes[from.min(bytes.len())..(from + len).min(bytes.len())])?;
        f.sync_all()?;
        cuts.push(cut(segment, c, moved_to));
    }
    let mut clean = Vec::with_capacity(bytes.len());
    match found.header {
        Header::V1 => clean.extend_from_slice(MAGIC_V1),
        _ => {
            let last = found.records.last().map_or(0, |r| r.2);
            let high_water = found
                .high_water
                .max(last)
                .max(segment.start_seq.saturating_sub(1));
            clean.extend_from_slice(&header_bytes(segment.start_seq, high_water));
        }
    }
    for &(at, len, _) in &found.records {
        clean.extend_from_slice(&bytes[at as usize..(at + len) as usize]);
    }
    let tmp = dir.join(format!("{name}.repair"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&clean)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(&dir)?;
    Ok(cuts)
}

/// A new file name `<segment>.at-<offset>.damaged` (with `.N` before `.damaged` if taken).
fn aside_path(dir: &Path, segment: &str, offset: u64) -> PathBuf {
    let base = format!("{segment}.at-{offset}");
    let mut path = dir.join(format!("{base}{DAMAGED_SUFFIX}"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{base}.{n}{DAMAGED_SUFFIX}"));
        n += 1;
    }
    path
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    start_seq: u64,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates the segment for `start_seq` in `dir` (header written and synced, and the
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
        file.write_all(&header_bytes(start_seq, start_seq.saturating_sub(1)))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(dir).map_err(io)?;
        Ok(Self {
            file,
            bytes: SEGMENT_HEADER as u64,
            start_seq,
            path,
        })
    }

    /// Appends encoded records whose highest sequence number is `last_seq`, then records
    /// `last_seq` as the header's `high_water` (not synced: [`sync`](Self::sync) makes both
    /// durable together).
    pub fn append(&mut self, records: &[u8], last_seq: u64) -> io::Result<()> {
        self.file.write_all(records)?;
        self.bytes += records.len() as u64;
        let header = header_bytes(self.start_seq, last_seq);
        self.file.seek(SeekFrom::Start(HIGH_WATER_AT))?;
        self.file.write_all(&header[16..28])?;
        self.file.seek(SeekFrom::End(0))?;
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

/// Deletes the segments of `dir` whose records all have sequence numbers `<= through` (those
/// the oldest kept checkpoint, at `through`, covers): every segment whose successor starts at
/// or before `through + 1`. The newest segment is never deleted. Returns the bytes freed.
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

    fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in seqs {
            encode(&mut buf, seq, (seq % 10) as usize, &[seq as f32, 1.0]);
        }
        buf
    }

    fn segment(dir: &Path, seqs: std::ops::RangeInclusive<u64>) -> PathBuf {
        let mut w = SegmentWriter::create(dir, *seqs.start()).expect("create");
        let last = *seqs.end();
        w.append(&records(seqs), last).expect("append");
        w.sync().expect("sync");
        w.path().to_path_buf()
    }

    fn starts(dir: &Path) -> Vec<u64> {
        list_segments(dir)
            .expect("list")
            .iter()
            .map(|s| s.start_seq)
            .collect()
    }

    /// Offset of record `seq` in a segment of [`segment`] starting at `start`.
    fn at(start: u64, seq: u64) -> usize {
        SEGMENT_HEADER + (seq - start) as usize * encoded_len(2)
    }

    #[test]
    fn records_round_trip_and_scan_counts_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        segment(dir.path(), 1..=100);
        segment(dir.path(), 101..=150);
        let scan = scan(dir.path(), 120).expect("scan");
        assert_eq!(
            (
                scan.backlog,
                scan.backlog_first,
                scan.last_seq,
                scan.high_water
            ),
            (30, Some(121), 150, 150)
        );
        assert!(scan.cuts.is_empty());
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
    fn garbage_in_the_middle_loses_only_the_records_it_covers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment(dir.path(), 1..=10);
        segment(dir.path(), 11..=12);
        let mut bytes = fs::read(&path).expect("read");
        let original = bytes.clone();
        // From the middle of record 4 to the middle of record 6: 4, 5 and 6 are damaged.
        let (from, to) = (at(1, 4) + 7, at(1, 6) + 9);
        for b in &mut bytes[from..to] {
            *b = 0xa5;
        }
        fs::write(&path, &bytes).expect("write");
        let scan = scan(dir.path(), 0).expect("scan");
        assert_eq!(scan.lost().collect::<Vec<_>>(), [(4, 6)]);
        assert_eq!((scan.backlog, scan.last_seq), (9, 12));
        let cut = &scan.cuts[0];
        assert_eq!(
            (cut.offset, cut.bytes),
            (at(1, 4) as u64, encoded_len(2) as u64 * 3)
        );
        assert_eq!(
            fs::read(&cut.moved_to).expect("moved aside"),
            &bytes[at(1, 4)..at(1, 7)]
        );
        // The repaired segment holds the other records, byte for byte.
        let repaired = fs::read(&path).expect("read");
        assert_eq!(
            &repaired[SEGMENT_HEADER..at(1, 4)],
            &original[SEGMENT_HEADER..at(1, 4)]
        );
        assert_eq!(&repaired[at(1, 4)..], &original[at(1, 7)..]);
        let again = super::scan(dir.path(), 0).expect("scan");
        assert!(again.cuts.is_empty(), "repaired once: {:?}", again.cuts);
        assert_eq!(again.backlog, 9);
    }

    #[test]
    fn a_damaged_tail_is_lost_a_torn_one_is_not() {
        // Garbage over the last three records of the newest segment: the header names them.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment(dir.path(), 1..=10);
        let mut bytes = fs::read(&path).expect("read");
        let end = bytes.len();
        for b in &mut bytes[at(1, 8) + 3..end] {
            *b = 0x5a;
        }
        fs::write(&path, &bytes).expect("write");
        let s = scan(dir.path(), 0).expect("scan");
        assert_eq!(s.lost().collect::<Vec<_>>(), [(8, 10)]);
        assert_eq!((s.last_seq, s.high_water), (7, 10));

        // Half of record 10 missing: a torn write, not a loss; its number is still used.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment(dir.path(), 1..=10);
        let len = fs::metadata(&path).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len - 5))
            .expect("truncate");
        let s = scan(dir.path(), 0).expect("scan");
        assert_eq!(s.lost().count(), 0);
        assert_eq!(s.torn().collect::<Vec<_>>(), [(10, 10)]);
        assert_eq!((s.last_seq, s.high_water), (9, 10));
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            at(1, 10) as u64,
            "cut there"
        );
        assert!(s.cuts[0].moved_to.exists());
    }

    #[test]
    fn a_damaged_header_loses_no_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment(dir.path(), 1..=10);
        let mut bytes = fs::read(&path).expect("read");
        bytes[..8].copy_from_slice(b"garbage!");
        fs::write(&path, &bytes).expect("write");
        let s = scan(dir.path(), 0).expect("scan");
        assert_eq!((s.backlog, s.lost().count()), (10, 0));
        assert_eq!(s.cuts.len(), 1);
        assert!(SegmentReader::open(&path).is_ok(), "a fresh header");
    }

    #[test]
    fn version_1_segments_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = MAGIC_V1.to_vec();
        for seq in 1..=3u64 {
            let mut payload = Vec::new();
            payload.extend_from_slice(&seq.to_le_bytes());
            payload.extend_from_slice(&7u32.to_le_bytes());
            payload.extend_from_slice(&1u32.to_le_bytes());
            payload.extend_from_slice(&(seq as f32).to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        let path = dir.path().join(segment_name(1));
        fs::write(&path, &bytes).expect("write");
        let s = scan(dir.path(), 0).expect("scan");
        assert_eq!((s.backlog, s.last_seq), (3, 3));
        let mut r = SegmentReader::open(&path).expect("open");
        let mut seqs = Vec::new();
        while let Next::Record(rec, _) = r.next_record().expect("read") {
            assert_eq!(rec.label, 7);
            seqs.push(rec.seq);
        }
        assert_eq!(seqs, [1, 2, 3]);
    }
}
