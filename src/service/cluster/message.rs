//! The wire format of one published `/learn` request: the samples of one request, in order, in
//! one JetStream message. Binary and versioned: `FFDL`, a format version byte, the sample count
//! and the feature count (u32 little-endian each), then per sample its label (u32) and its
//! features (f32 little-endian). A message another version wrote, or a damaged one, is refused
//! by [`decode`] with the reason, and the learner counts and skips it: nothing in the stream
//! can stop the learner.
//!
//! Every sample gets a sequence number of its own inside the learner, built from the message's
//! stream sequence and the sample's index ([`sample_seq`]), so a checkpoint taken between two
//! samples of one message resumes exactly after the last sample it learned.

use crate::service::sample::{check_features, Sample, SampleShape};
use crate::store::wal::SequencedSample;

/// The first bytes of every message.
const MAGIC: &[u8; 4] = b"FFDL";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bits of a sample sequence number that hold the sample's index in its message.
const INDEX_BITS: u32 = 16;
/// Most samples one message (one request) may carry.
pub const MAX_SAMPLES_PER_MESSAGE: usize = (1 << INDEX_BITS) - 1;
const HEADER: usize = 4 + 1 + 4 + 4;

/// Why a message cannot be learned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not this format, or another version of it.
    #[error("not an ffd learn message of format version {VERSION}")]
    Format,
    /// The lengths do not add up.
    #[error("truncated or padded: {0}")]
    Length(String),
    /// Written for another network shape.
    #[error("{got} features per sample, this network takes {expected}")]
    Shape {
        /// Features per sample in the message.
        got: usize,
        /// `network.inputs`.
        expected: usize,
    },
    /// A sample the HTTP validation would have refused.
    #[error("sample {index}: {reason}")]
    Sample {
        /// Its index in the message.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The bytes of a message carrying `samples` (all of `inputs` features).
pub fn encode(samples: &[Sample], inputs: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + samples.len() * (4 + 4 * inputs));
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(inputs as u32).to_le_bytes());
    for s in samples {
        buf.extend_from_slice(&(s.label as u32).to_le_bytes());
        for v in &s.features {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    buf
}

/// The samples of the message at stream sequence `stream_seq`, checked against `shape` as
/// `/learn` checks them, numbered with [`sample_seq`].
pub fn decode(
    bytes: &[u8],
    stream_seq: u64,
    shape: SampleShape,
) -> Result<Vec<SequencedSample>, MessageError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(MessageError::Format);
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let count = word(5) as usize;
    let inputs = word(9) as usize;
    if inputs != shape.inputs {
        return Err(MessageError::Shape {
            got: inputs,
            expected: shape.inputs,
        });
    }
    if count == 0 || count > MAX_SAMPLES_PER_MESSAGE {
        return Err(MessageError::Length(format!("{count} samples")));
    }
    let per_sample = 4 + 4 * inputs;
    let expected = HEADER + count * per_sample;
    if bytes.len() != expected {
        return Err(MessageError::Length(format!(
            "{} bytes, {expected} expected for {count} samples",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for (index, chunk) in bytes[HEADER..].chunks_exact(per_sample).enumerate() {
        let label = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        if label >= shape.classes {
            return Err(MessageError::Sample {
                index,
                reason: format!("label {label}, expected 0..{}", shape.classes),
            });
        }
        let features: Vec<f32> = chunk[4..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        check_features(&features, inputs).map_err(|e| MessageError::Sample {
            index,
            reason: e.to_string(),
        })?;
        out.push(SequencedSample {
            seq: sample_seq(stream_seq, index),
            label,
            features,
        });
    }
    Ok(out)
}

/// The learner's sequence number of sample `index` of the message at `stream_seq`.
pub fn sample_seq(stream_seq: u64, index: usize) -> u64 {
    (stream_seq << INDEX_BITS) | index as u64
}

/// The stream sequence of the message holding the sample numbered `seq`.
pub fn stream_seq(seq: u64) -> u64 {
    seq >> INDEX_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: SampleShape = SampleShape {
        inputs: 3,
        classes: 4,
    };

    fn samples() -> Vec<Sample> {
        vec![
            Sample {
                features: vec![0.0, -1.5, 1e-30],
                label: 3,
            },
            Sample {
                features: vec![7.0, 0.25, f32::MIN_POSITIVE],
                label: 0,
            },
        ]
    }

    #[test]
    fn round_trips_bit_for_bit_and_numbers_each_sample() {
        let bytes = encode(&samples(), 3);
        let back = decode(&bytes, 42, SHAPE).expect("decodes");
        assert_eq!(back.len(), 2);
        for (b, s) in back.iter().zip(samples()) {
            assert_eq!(b.label, s.label);
            assert_eq!(b.features, s.features);
        }
        assert_eq!(stream_seq(back[1].seq), 42);
        assert!(back[0].seq < back[1].seq);
        assert!(sample_seq(41, MAX_SAMPLES_PER_MESSAGE - 1) < back[0].seq);
    }

    #[test]
    fn refuses_what_it_cannot_learn() {
        let good = encode(&samples(), 3);
        let mut other_version = good.clone();
        other_version[4] = VERSION + 1;
        assert_eq!(decode(&other_version, 1, SHAPE), Err(MessageError::Format));
        assert!(matches!(
            decode(&good[..good.len() - 1], 1, SHAPE),
            Err(MessageError::Length(_))
        ));
        assert!(matches!(
            decode(
                &good,
                1,
                SampleShape {
                    inputs: 4,
                    classes: 4
                }
            ),
            Err(MessageError::Shape {
                got: 3,
                expected: 4
            })
        ));
        assert!(matches!(
            decode(
                &good,
                1,
                SampleShape {
                    inputs: 3,
                    classes: 3
                }
            ),
            Err(MessageError::Sample { index: 0, .. })
        ));
        let mut nan = good.clone();
        nan[HEADER + 4..HEADER + 8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            decode(&nan, 1, SHAPE),
            Err(MessageError::Sample { index: 0, .. })
        ));
        assert_eq!(
            decode(b"{\"features\":[]}", 1, SHAPE),
            Err(MessageError::Format)
        );
    }
}
