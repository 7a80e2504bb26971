//! `durability_bench damage`: damages a stopped server's files in one way per run and compares
//! what the damage destroyed with what recovery lost (see the module docs of
//! `durability_bench.rs`).
//!
//! "Destroyed" is computed from the files alone, before the server restarts: the acknowledged
//! sequence numbers that neither an intact WAL record nor an intact checkpoint (which holds
//! every sample up to its `last_seq`) holds any more. The WAL is parsed here (format versions
//! 1 and 2, see `src/store/wal.rs`) only to find the records' byte ranges and sequence numbers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffd::data::idx::load_mnist;
use rand::{RngCore, SeedableRng};

use super::{bodies, client, send, spawn, Result, Server};

/// One kind of damage to the files of a stopped server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// 4 KiB of random bytes in the middle of the newest WAL segment.
    GarbageNewestSegment,
    /// 4 KiB of random bytes in the middle of an older segment not yet learned.
    GarbageOlderSegment,
    /// The newest segment cut in the middle of its last record, as a crash mid-write leaves it.
    TornTail,
    /// An older segment not yet learned cut to half its length.
    TruncatedSegment,
    /// 4 KiB of random bytes in the middle of the newest checkpoint.
    NewestCheckpoint,
    /// 4 KiB of random bytes in the middle of every checkpoint.
    AllCheckpoints,
}

impl Damage {
    const ALL: [Damage; 6] = [
        Damage::GarbageNewestSegment,
        Damage::GarbageOlderSegment,
        Damage::TornTail,
        Damage::TruncatedSegment,
        Damage::NewestCheckpoint,
        Damage::AllCheckpoints,
    ];

    fn name(self) -> &'static str {
        match self {
            Damage::GarbageNewestSegment => "garbage-newest-segment",
            Damage::GarbageOlderSegment => "garbage-older-segment",
            Damage::TornTail => "torn-tail",
            Damage::TruncatedSegment => "truncated-segment",
            Damage::NewestCheckpoint => "newest-checkpoint",
            Damage::AllCheckpoints => "all-checkpoints",
        }
    }
}

/// Samples learned before the kill (a checkpoint about every 1 000, and one at the end) and
/// acknowledged after it with the learner paused.
const LEARNED: usize = 4_000;
const UNLEARNED: usize = 1_500;
const GARBAGE: usize = 4096;
/// Environment of the servers: small segments, so that damage hits one of many; a small
/// network, so that learning is quick.
const ENV: [(&str, &str); 6] = [
    ("FFD_DURABILITY__WAL_SEGMENT_BYTES", "262144"),
    ("FFD_DURABILITY__CHECKPOINT_EVERY_SAMPLES", "1000"),
    ("FFD_DURABILITY__CHECKPOINT_EVERY_SECONDS", "0"),
    ("FFD_DURABILITY__KEEP_CHECKPOINTS", "3"),
    ("FFD_LEARNER__QUEUE_CAPACITY", "20000"),
    ("FFD_NETWORK__HIDDEN", "[64, 64]"),
];

pub async fn run(mnist: &Path, kinds: &[String]) -> Result<()> {
    let kinds: Vec<Damage> = if kinds.is_empty() {
        Damage::ALL.to_vec()
    } else {
        kinds
            .iter()
            .map(|k| {
                Damage::ALL
                    .into_iter()
                    .find(|d| d.name() == k)
                    .ok_or_else(|| format!("unknown kind {k}"))
            })
            .collect::<std::result::Result<_, _>>()?
    };
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let mut failed = Vec::new();
    for kind in kinds {
        if !one(kind, Arc::clone(&bodies)).await? {
            failed.push(kind.name());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("lost differs from destroyed: {failed:?}").into())
    }
}

/// One record of a WAL segment: its bytes and sequence number.
#[derive(Debug, Clone, Copy)]
struct Record {
    start: u64,
    end: u64,
    seq: u64,
}

/// The records of a segment (format version 1 or 2), up to the first that does not parse.
fn records(bytes: &[u8]) -> Vec<Record> {
    let u32_at = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            bytes.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let mut out = Vec::new();
    match bytes.get(..8) {
        Some(b"FFDWAL1\n") => {
            // u32 length | u32 CRC | payload (u64 seq first)
            let mut at = 8;
            while let (Some(len), Some(seq)) = (u32_at(at), u64_at(at + 8)) {
                let end = at + 8 + len as usize;
                if end > bytes.len() {
                    break;
                }
                out.push(Record {
                    start: at as u64,
                    end: end as u64,
                    seq,
                });
                at = end;
            }
        }
        Some(b"FFDWAL2\n") => {
            // 32-byte header; "FFDR" | u32 length | u64 seq | u32 CRC | payload
            let mut at = 32;
            while bytes.get(at..at + 4) == Some(b"FFDR") {
                let (Some(len), Some(seq)) = (u32_at(at + 4), u64_at(at + 8)) else {
                    break;
                };
                let end = at + 20 + len as usize;
                if end > bytes.len() {
                    break;
                }
                out.push(Record {
                    start: at as u64,
                    end: end as u64,
                    seq,
                });
                at = end;
            }
        }
        _ => {}
    }
    out
}

/// Files of `dir` named `{prefix}{number}{suffix}`, by number.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            files.push((n, path));
        }
    }
    files.sort();
    Ok(files)
}

/// What the damage left: the sequence numbers intact files hold.
struct Damaged {
    /// WAL records destroyed, by sequence number.
    records: BTreeSet<u64>,
    /// Checkpoints destroyed, by `last_seq`.
    checkpoints: Vec<u64>,
}

fn overwrite(path: &Path, at: u64, len: usize, rng: &mut impl RngCore) -> Result<(u64, u64)> {
    use std::io::{Seek, SeekFrom, Write};
    let size = std::fs::metadata(path)?.len();
    let at = at.min(size.saturating_sub(len as u64));
    let mut garbage = vec![0u8; len];
    rng.fill_bytes(&mut garbage);
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(at))?;
    file.write_all(&garbage)?;
    file.sync_all()?;
    Ok((at, at + len as u64))
}

/// Damages `dir` as `kind` says; `after` is the newest checkpoint's `last_seq`: the WAL damage
/// hits records after it, which only the WAL holds.
fn apply(kind: Damage, dir: &Path, after: u64, rng: &mut impl RngCore) -> Result<Damaged> {
    let segments = numbered(dir, "wal-", ".log")?;
    let checkpoints = numbered(dir, "checkpoint-", ".safetensors")?;
    // Segments whose records all come after the newest checkpoint, with their records.
    let mut unlearned = Vec::new();
    for (first, path) in &segments {
        let bytes = std::fs::read(path)?;
        let recs = records(&bytes);
        if *first > after && !recs.is_empty() {
            unlearned.push((path.clone(), bytes.len() as u64, recs));
        }
    }
    // The newest segment ends the log (a torn tail is there); garbage goes in the newest one
    // with a few records, so that intact records surround it.
    let last = unlearned
        .last()
        .cloned()
        .ok_or("no segment after the checkpoint")?;
    unlearned.retain(|(_, _, recs)| recs.len() >= 4);
    let hit = |recs: &[Record], from: u64, to: u64| -> BTreeSet<u64> {
        recs.iter()
            .filter(|r| r.start < to && r.end > from)
            .map(|r| r.seq)
            .collect()
    };
    let newest = unlearned.last().ok_or("no segment after the checkpoint")?;
    let older = unlearned
        .get(unlearned.len().saturating_sub(3))
        .ok_or("no older segment")?;
    let mut damaged = Damaged {
        records: BTreeSet::new(),
        checkpoints: Vec::new(),
    };
    match kind {
        Damage::GarbageNewestSegment | Damage::GarbageOlderSegment => {
            let (path, len, recs) = if kind == Damage::GarbageNewestSegment {
                newest
            } else {
                older
            };
            let (from, to) = overwrite(path, len / 2, GARBAGE, rng)?;
            damaged.records = hit(recs, from, to);
        }
        Damage::TornTail => {
            let (path, _, recs) = &last;
            let last = recs.last().ok_or("an empty segment")?;
            let cut = last.start + (last.end - last.start) / 2;
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(cut)?;
            damaged.records = hit(recs, cut, u64::MAX);
        }
        Damage::TruncatedSegment => {
            let (path, len, recs) = older;
            let cut = len / 2;
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(cut)?;
            damaged.records = hit(recs, cut, u64::MAX);
        }
        Damage::NewestCheckpoint | Damage::AllCheckpoints => {
            let chosen: Vec<&(u64, PathBuf)> = if kind == Damage::NewestCheckpoint {
                checkpoints.last().into_iter().collect()
            } else {
                checkpoints.iter().collect()
            };
            for (seq, path) in chosen {
                let len = std::fs::metadata(path)?.len();
                overwrite(path, len / 2, GARBAGE, rng)?;
                damaged.checkpoints.push(*seq);
            }
        }
    }
    Ok(damaged)
}

/// Sequence numbers of every record of the WAL in `dir`.
fn wal_seqs(dir: &Path) -> Result<BTreeSet<u64>> {
    let mut seqs = BTreeSet::new();
    for (_, path) in numbered(dir, "wal-", ".log")? {
        seqs.extend(records(&std::fs::read(&path)?).iter().map(|r| r.seq));
    }
    Ok(seqs)
}

/// The acknowledged sequence numbers no intact file holds: not in an intact WAL record (of
/// `wal`, the records before the damage) and not at or below an intact checkpoint's
/// `last_seq`.
fn destroyed(
    dir: &Path,
    acked: &BTreeSet<u64>,
    wal: &BTreeSet<u64>,
    damaged: &Damaged,
) -> Result<BTreeSet<u64>> {
    let held: BTreeSet<u64> = wal.difference(&damaged.records).copied().collect();
    let checkpoint = numbered(dir, "checkpoint-", ".safetensors")?
        .into_iter()
        .map(|(seq, _)| seq)
        .filter(|seq| !damaged.checkpoints.contains(seq))
        .max()
        .unwrap_or(0);
    Ok(acked
        .iter()
        .copied()
        .filter(|s| *s > checkpoint && !held.contains(s))
        .collect())
}

/// Sequence numbers of `[first, last]` pairs.
fn seqs_of(ranges: &serde_json::Value) -> BTreeSet<u64> {
    let pair = |p: &serde_json::Value| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?));
    let mut out = BTreeSet::new();
    let mut add = |p: &serde_json::Value| {
        if let Some((a, b)) = pair(p) {
            out.extend(a..=b);
        }
    };
    match ranges.as_array() {
        Some(items) if items.first().is_some_and(serde_json::Value::is_array) => {
            items.iter().for_each(&mut add)
        }
        Some(_) => add(ranges),
        None => {}
    }
    out
}

/// `/v1/model` once recovery is over and the queue is empty, stable for a second.
async fn settled(server: &Server, c: &reqwest::Client) -> Result<serde_json::Value> {
    let mut last: Option<serde_json::Value> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(m) = server.get(c, "/v1/model").await else {
            continue;
        };
        let idle = m["queue_depth"] == 0 && m["recovery"]["recovering"] != true;
        if idle
            && last
                .as_ref()
                .is_some_and(|l| l["samples_learned"] == m["samples_learned"])
        {
            return Ok(m);
        }
        last = idle.then_some(m);
        if Instant::now() > deadline {
            return Err("recovery never settled".into());
        }
    }
}

/// Waits until a checkpoint at `seq` exists in `dir`.
async fn checkpoint_at(dir: &Path, seq: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !numbered(dir, "checkpoint-", ".safetensors")?
        .iter()
        .any(|(s, _)| *s >= seq)
    {
        if Instant::now() > deadline {
            return Err(format!("no checkpoint at {seq}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One damage run; true when recovery lost exactly what the damage destroyed, reported it,
/// and numbers new samples above every acknowledged one.
async fn one(kind: Damage, bodies: Arc<Vec<bytes::Bytes>>) -> Result<bool> {
    let probe_body = bodies[0].clone();
    let dir = tempfile::tempdir()?;
    let c = client()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let server = spawn(dir.path(), &ENV)?;
    server.ready(&c).await?;
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut acked_batches = send(
        &server.url,
        Arc::clone(&bodies),
        1,
        LEARNED / 100,
        Arc::clone(&in_flight),
        100,
    )
    .await;
    // The cadence leaves checkpoints near every 1 000 (a checkpoint is late while the writer is
    // busy, and the next one counts from there), not necessarily at 4 000: one is asked for, so
    // that the newest checkpoint holds every learned sample and the WAL after it is unlearned.
    server.drained(&c).await?;
    server.post(&c, "/admin/checkpoint").await?;
    checkpoint_at(dir.path(), LEARNED as u64).await?;
    server.post(&c, "/admin/pause").await?;
    acked_batches.extend(send(&server.url, bodies, 1, UNLEARNED / 100, in_flight, 100).await);
    server.kill_9()?;
    let acked: BTreeSet<u64> = acked_batches
        .iter()
        .flat_map(|&last| last.saturating_sub(99)..=last)
        .collect();
    let newest_checkpoint = numbered(dir.path(), "checkpoint-", ".safetensors")?
        .last()
        .map_or(0, |(s, _)| *s);

    let wal = wal_seqs(dir.path())?;
    let damaged = apply(kind, dir.path(), newest_checkpoint, &mut rng)?;
    let destroyed = destroyed(dir.path(), &acked, &wal, &damaged)?;

    let restarted = match spawn(dir.path(), &ENV) {
        Ok(server) => settled(&server, &c).await.map(|m| (server, m)),
        Err(e) => Err(e),
    };
    let (server, m) = match restarted {
        Ok(r) => r,
        Err(e) => {
            println!(
                "RESULT damage kind={} acknowledged={} destroyed={} lost=all reported=n/a seqs_match=n/a next_seq=none max_acked=0 next_above=no error={e}",
                kind.name(),
                acked.len(),
                destroyed.len()
            );
            return Ok(false);
        }
    };
    let learned = m["samples_learned"].as_u64().ok_or("no samples_learned")?;
    let lost = (acked.len() as u64).saturating_sub(learned);
    let r = &m["recovery"];
    let reported: Option<BTreeSet<u64>> = r.is_object().then(|| {
        let mut s = seqs_of(&r["wal_lost_seqs"]);
        s.extend(seqs_of(&r["unretained_seqs"]));
        s.extend(seqs_of(&r["torn_seqs"]));
        s
    });
    // The next sample's number.
    let probe = c
        .post(format!("{}/learn", server.url))
        .header("content-type", "application/json")
        .body(probe_body)
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let next = probe["last_seq"].as_u64().map(|s| s - 99);
    server.stop()?;
    let max_acked = acked.iter().next_back().copied().unwrap_or(0);
    let seqs = match &reported {
        None => "n/a",
        Some(r) if *r == destroyed => "yes",
        Some(_) => "no",
    };
    let above = next.is_some_and(|n| n > max_acked);
    println!(
        "RESULT damage kind={} acknowledged={} destroyed={} lost={lost} reported={} seqs_match={seqs} next_seq={} max_acked={max_acked} next_above={}",
        kind.name(),
        acked.len(),
        destroyed.len(),
        reported.as_ref().map_or("n/a".to_owned(), |r| r.len().to_string()),
        next.map_or("none".to_owned(), |n| n.to_string()),
        if above { "yes" } else { "no" },
    );
    if seqs == "no" {
        let reported = reported.unwrap_or_default();
        let missing: Vec<_> = destroyed.difference(&reported).take(10).collect();
        eprintln!(
            "{}: destroyed but not reported (first 10): {missing:?}; recovery: {r}",
            kind.name()
        );
    }
    Ok(lost == destroyed.len() as u64 && seqs != "no" && above)
}
