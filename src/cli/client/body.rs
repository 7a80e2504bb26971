//! JSON request bodies for `/learn` and `/classify`, written straight from a [`Dataset`] without
//! building intermediate values.
//!
//! Every feature is written in its shortest form that parses back to the same `f32` (serde_json's
//! float formatting), so the server learns exactly the values `ffd train` learns; zeros, most of an
//! MNIST image, are written as `0`.

use std::io::Write;

use crate::data::idx::Dataset;

/// `{"samples":[{"features":[...],"label":k},...]}` for the samples at `indices`, in that order.
///
/// Panics if an index is out of range for `data` (the caller draws indices from `0..data.len()`).
pub fn learn_body(data: &Dataset, indices: &[usize]) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(indices.len() * data.dim * 4 + 32);
    out.extend_from_slice(b"{\"samples\":[");
    for (n, &i) in indices.iter().enumerate() {
        let (features, label) = data.sample(i);
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"features\":");
        write_features(&mut out, features)?;
        write!(out, ",\"label\":{label}}}").map_err(serde_json::Error::io)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// `{"samples":[{"features":[...]},...]}` for the samples at `indices`, in that order.
///
/// Panics if an index is out of range for `data`.
pub fn classify_body(data: &Dataset, indices: &[usize]) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(indices.len() * data.dim * 4 + 32);
    out.extend_from_slice(b"{\"samples\":[");
    for (n, &i) in indices.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"features\":");
        write_features(&mut out, data.sample(i).0)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Appends `xs` as a JSON array. A non-finite value becomes `null`, which the server rejects.
fn write_features(out: &mut Vec<u8>, xs: &[f32]) -> serde_json::Result<()> {
    out.push(b'[');
    for (n, &x) in xs.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if x == 0.0 {
            out.push(b'0');
        } else {
            serde_json::to_writer(&mut *out, &x)?;
        }
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        // Every pixel value an MNIST image can hold, spread over 8 samples of 32 features.
        let features: Vec<f32> = (0..=255u8).map(|p| f32::from(p) / 255.0).collect();
        Dataset {
            features,
            labels: (0..8).collect(),
            dim: 32,
            shape: (4, 8),
            classes: 10,
        }
    }

    #[derive(serde::Deserialize)]
    struct Body {
        samples: Vec<Sample>,
    }

    #[derive(serde::Deserialize)]
    struct Sample {
        features: Vec<f32>,
        label: Option<usize>,
    }

    #[test]
    fn learn_body_round_trips_exactly_in_order() {
        let data = dataset();
        let indices = [5, 0, 7, 5];
        let body: Body = serde_json::from_slice(&learn_body(&data, &indices).unwrap()).unwrap();
        assert_eq!(body.samples.len(), 4);
        for (sample, &i) in body.samples.iter().zip(&indices) {
            let (features, label) = data.sample(i);
            // Bit-exact: the server must learn the same values as `ffd train`.
            assert_eq!(sample.features, features);
            assert_eq!(sample.label, Some(label));
        }
    }

    #[test]
    fn classify_body_has_features_only() {
        let data = dataset();
        let bytes = classify_body(&data, &[0, 3]).unwrap();
        let body: Body = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.samples.len(), 2);
        assert_eq!(body.samples[1].features, data.sample(3).0);
        assert!(body.samples.iter().all(|s| s.label.is_none()));
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("{\"samples\":[{\"features\":[0,"),
            "{text}"
        );
        assert!(!text.contains("label"), "{text}");
    }

    #[test]
    fn empty_batches_are_valid_json() {
        let data = dataset();
        assert_eq!(learn_body(&data, &[]).unwrap(), b"{\"samples\":[]}");
        assert_eq!(classify_body(&data, &[]).unwrap(), b"{\"samples\":[]}");
    }
}
