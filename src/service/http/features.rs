//! Features as JSON numbers: each read as the 64-bit float nearest to its text (serde_json's
//! `float_roundtrip` parser, exact), then narrowed to 32 bits with one rounding to nearest.
//!
//! Why not serde_json's own `f32`: with `float_roundtrip` it rounds the text straight to 32 bits,
//! but reports a number beyond the 32-bit range (`1e39`) as a syntax error, so such a feature
//! would be answered 400 `malformed_json` instead of 422 `non_finite_feature`. Narrowing here
//! turns it into an infinity that [`crate::service::sample::check_features`] refuses by name.
//! Without `float_roundtrip`, the fast parser can be one unit in the last place off, which near
//! the ±1e15 bound moves a number the OpenAPI document allows onto the next 32-bit float and gets
//! it refused.
//!
//! A number a JSON encoder writes from a 64-bit float is read back as that float, so the one
//! narrowing is the exact rounding of the text: a number is taken exactly when the document's
//! bound (the midpoint between two 32-bit floats, see `openapi.rs`) says so. Only a text of more
//! than 17 significant digits lying within 2⁻⁵⁴ (relative) of such a midpoint could round twice.
//! A number beyond the 64-bit range (`1e400`) stays a syntax error (400 `malformed_json`).

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

/// One JSON number as a feature: `value` narrowed to 32 bits (rounded to nearest, ties to even;
/// beyond the 32-bit range it becomes infinite, which feature checks refuse).
pub fn narrow(value: f64) -> f32 {
    value as f32
}

/// A JSON array of numbers read with [`narrow`].
struct Features(Vec<f32>);

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Numbers;
        impl<'de> Visitor<'de> for Numbers {
            type Value = Features;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of numbers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Features, A::Error> {
                // The size hint comes from the request: bounded so a lying one cannot reserve
                // much (the body size limit bounds the real length).
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(value) = seq.next_element::<f64>()? {
                    values.push(narrow(value));
                }
                Ok(Features(values))
            }
        }
        deserializer.deserialize_seq(Numbers)
    }
}

/// `#[serde(deserialize_with = "features::required")]` for a `Vec<f32>` field.
pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
    Features::deserialize(deserializer).map(|f| f.0)
}

/// `#[serde(default, deserialize_with = "features::optional")]` for an `Option<Vec<f32>>` field:
/// `null` is absent.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<f32>>, D::Error> {
    Option::<Features>::deserialize(deserializer).map(|f| f.map(|f| f.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional")]
        features: Option<Vec<f32>>,
    }

    fn read(text: &str) -> Result<Option<Vec<f32>>, serde_json::Error> {
        serde_json::from_str::<Body>(text).map(|b| b.features)
    }

    /// The largest 32-bit float at most 1e15, the next one, and the midpoint between them.
    fn around_1e15() -> (f32, f32, f64) {
        let below = 1e15_f32;
        let above = f32::from_bits(below.to_bits() + 1);
        (below, above, (f64::from(below) + f64::from(above)) / 2.0)
    }

    #[test]
    fn numbers_round_once_to_the_nearest_32_bit_float() {
        let (below, above, midpoint) = around_1e15();
        let step = |x: f64, n: i64| f64::from_bits((x.to_bits() as i64 + n) as u64);
        // Every 64-bit float just under the midpoint, written as Rust (like most encoders) writes
        // it, rounds down; just over rounds up; the midpoint itself goes to the even neighbour.
        for n in 1..50 {
            let text = format!(
                "{{\"features\": [{:?}, {:?}]}}",
                step(midpoint, -n),
                step(midpoint, n)
            );
            assert_eq!(read(&text).unwrap(), Some(vec![below, above]), "{text}");
        }
        let even = if below.to_bits() % 2 == 0 {
            below
        } else {
            above
        };
        assert_eq!(
            read(&format!("{{\"features\": [{midpoint:?}]}}")).unwrap(),
            Some(vec![even])
        );
    }

    #[test]
    fn beyond_the_32_bit_range_is_infinite_not_an_error() {
        assert_eq!(
            read("{\"features\": [1e39, -1e39, 0.5, 3]}").unwrap(),
            Some(vec![f32::INFINITY, f32::NEG_INFINITY, 0.5, 3.0])
        );
        assert!(read("{\"features\": [1e400]}").is_err());
    }

    #[test]
    fn null_and_absent_are_none_and_non_numbers_are_refused() {
        assert_eq!(read("{\"features\": null}").unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(read("{\"features\": []}").unwrap(), Some(vec![]));
        for bad in ["\"1\"", "[\"1\"]", "[null]", "[[1]]", "1"] {
            assert!(read(&format!("{{\"features\": {bad}}}")).is_err(), "{bad}");
        }
    }
}
