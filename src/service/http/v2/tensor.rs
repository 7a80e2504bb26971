//! The tensor codec: the input tensor `features` as JSON `data` (flat row-major or nested) or
//! as little-endian bytes (Triton's binary tensor extension), decoded into checked
//! [`FeatureRows`]; and output values encoded as little-endian bytes.

use serde_json::Value;

use crate::service::http::error::ApiError;
use crate::service::http::features;
use crate::service::sample::FeatureRows;

use super::types::{InferInput, TensorData};
use super::{BINARY_DATA_SIZE, INPUT_FEATURES};

impl TensorData {
    /// Appends the values as little-endian bytes (the binary tensor extension's layout).
    pub fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Int(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            TensorData::Float(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        }
    }
}

/// Checks the one input tensor (name, datatype, shape, data) and flattens its values, from
/// JSON `data` or from the `binary` bytes after the JSON.
pub fn feature_rows(
    inputs: &[InferInput],
    width: usize,
    binary: &[u8],
) -> Result<FeatureRows, ApiError> {
    let input = match inputs {
        [one] => one,
        _ => {
            return Err(ApiError::InvalidInference(format!(
                "expected exactly one input, `{INPUT_FEATURES}`; got {}",
                inputs.len()
            )))
        }
    };
    let bad = |m: String| ApiError::InvalidInference(format!("input `{INPUT_FEATURES}`: {m}"));
    if input.name != INPUT_FEATURES {
        return Err(ApiError::InvalidInference(format!(
            "unknown input {:?}; the model's input is {INPUT_FEATURES:?}",
            input.name
        )));
    }
    let element_bytes = match input.datatype.as_str() {
        "FP32" => 4,
        "FP64" => 8,
        other => {
            return Err(bad(format!(
                "datatype {other:?} is not supported; use FP32 (or FP64)"
            )))
        }
    };
    let (batch, d) = match input.shape.as_slice() {
        [n, d] if (*n == -1 || *n >= 1) && *d >= 0 => (*n, *d as usize),
        _ => {
            return Err(bad(format!(
                "shape {:?} is not [N, {width}] (N >= 1, or -1)",
                input.shape
            )))
        }
    };
    if d != width {
        return Err(bad(format!(
            "shape {:?} has {d} features per sample; the model takes {width}",
            input.shape
        )));
    }
    let binary_size = match input
        .parameters
        .as_ref()
        .and_then(|p| p.get(BINARY_DATA_SIZE))
    {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            bad(format!(
                "`{BINARY_DATA_SIZE}` must be a byte count, not {v}"
            ))
        })?),
    };
    let mut values = Vec::new();
    let rows = match (binary_size, &input.data) {
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "has both `data` and `{BINARY_DATA_SIZE}`; send one"
            )))
        }
        (None, None) => return Err(bad("has no `data`".into())),
        (None, Some(data)) => {
            if !binary.is_empty() {
                return Err(bad(format!(
                    "{} bytes of binary data follow the JSON, but no input has `{BINARY_DATA_SIZE}`",
                    binary.len()
                )));
            }
            flatten(data, batch, width, &mut values).map_err(bad)?
        }
        (Some(size), None) => {
            if size != binary.len() as u64 {
                return Err(bad(format!(
                    "`{BINARY_DATA_SIZE}` is {size}, but {} bytes follow the JSON",
                    binary.len()
                )));
            }
            decode_le(binary, element_bytes, batch, width, &mut values).map_err(bad)?
        }
    };
    let checked = FeatureRows::from_flat(values, width)
        .map_err(|e| bad(format!("sample {}: {e}", e.index)))?;
    debug_assert_eq!(checked.len(), rows);
    Ok(checked)
}

/// Decodes little-endian FP32 (`element_bytes` 4) or FP64 (8) values into `out`; returns the
/// number of rows of `width`, which must match `batch` unless it is `-1`.
fn decode_le(
    bytes: &[u8],
    element_bytes: usize,
    batch: i64,
    width: usize,
    out: &mut Vec<f32>,
) -> Result<usize, String> {
    let row_bytes = width * element_bytes;
    if bytes.is_empty() || row_bytes == 0 || !bytes.len().is_multiple_of(row_bytes) {
        return Err(format!(
            "{} bytes of binary data are not a whole number of samples of {width} values of {element_bytes} bytes",
            bytes.len()
        ));
    }
    let rows = bytes.len() / row_bytes;
    if batch != -1 && batch as usize != rows {
        return Err(format!(
            "shape [{batch}, {width}] needs {} bytes, the binary data has {}",
            batch as usize * row_bytes,
            bytes.len()
        ));
    }
    out.reserve(rows * width);
    if element_bytes == 4 {
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    } else {
        out.extend(bytes.chunks_exact(8).map(|b| {
            features::narrow(f64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ]))
        }));
    }
    Ok(rows)
}

/// Flattens `data` (row-major numbers, or `rows` arrays of `width` numbers) into `out` and
/// returns the number of rows; `batch` is the declared row count, `-1` for any.
fn flatten(data: &Value, batch: i64, width: usize, out: &mut Vec<f32>) -> Result<usize, String> {
    let Value::Array(items) = data else {
        return Err("`data` must be an array".into());
    };
    let nested = items.first().is_some_and(Value::is_array);
    let rows = if nested {
        for (r, row) in items.iter().enumerate() {
            let Value::Array(row) = row else {
                return Err(format!("`data` row {r} is not an array"));
            };
            if row.len() != width {
                return Err(format!(
                    "`data` row {r} has {} values, expected {width}",
                    row.len()
                ));
            }
            for v in row {
                out.push(number(v, out.len())?);
            }
        }
        items.len()
    } else {
        for v in items {
            out.push(number(v, out.len())?);
        }
        if width == 0 || items.len() % width != 0 {
            return Err(format!(
                "`data` has {} values, not a whole number of samples of {width}",
                items.len()
            ));
        }
        items.len() / width
    };
    if rows == 0 {
        return Err("`data` is empty".into());
    }
    if batch != -1 && batch as usize != rows {
        return Err(format!(
            "shape [{batch}, {width}] needs {} values, `data` has {}",
            batch as usize * width,
            out.len()
        ));
    }
    Ok(rows)
}

/// One JSON number as a feature (a value beyond FP32's range becomes infinite, refused later).
fn number(v: &Value, at: usize) -> Result<f32, String> {
    v.as_f64()
        .map(features::narrow)
        .ok_or_else(|| format!("`data` value {at} is not a number: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(data: Value, batch: i64) -> Result<(usize, Vec<f32>), String> {
        let mut out = Vec::new();
        flatten(&data, batch, 3, &mut out).map(|n| (n, out))
    }

    #[test]
    fn flat_and_nested_data_flatten_alike() {
        let flat = rows(json!([1, 2, 3, 4, 5, 6]), 2).expect("flat");
        let nested = rows(json!([[1, 2, 3], [4, 5, 6]]), -1).expect("nested");
        assert_eq!(flat, nested);
        assert_eq!(flat.0, 2);
    }

    #[test]
    fn data_that_does_not_fit_the_shape_is_refused() {
        assert!(rows(json!([1, 2, 3, 4, 5]), -1).is_err());
        assert!(rows(json!([1, 2, 3]), 2).is_err());
        assert!(rows(json!([[1, 2, 3], [4, 5]]), 2).is_err());
        assert!(rows(json!([[1, 2, 3], 4]), 2).is_err());
        assert!(rows(json!([1, "2", 3]), 1).is_err());
        assert!(rows(json!([]), -1).is_err());
    }
}
