//! Serialises an `f32` config value through its shortest decimal form, so printed
//! configurations say `0.0003`, not `0.0003000000142492354`. Serialisers that have no `f32`
//! of their own (TOML, `serde_json::Value`) widen to `f64`, and the widened value's shortest
//! form is the long one; widening the shortest `f32` digits instead gives the `f64` nearest to
//! what the user wrote. Readers parse either back to the same `f32`.

use serde::Serializer;

/// `#[serde(serialize_with = "short_float::serialize")]` on an `f32` field.
pub fn serialize<S: Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(widen(*value))
}

/// The `f64` whose shortest form equals `value`'s shortest form.
pub fn widen(value: f32) -> f64 {
    // `f32`'s `Display` prints the shortest digits that read back as the same `f32`.
    value.to_string().parse::<f64>().unwrap_or(f64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The printed form is what the user wrote, and reads back bit-identical as an `f32`.
    #[test]
    fn prints_short_and_reads_back() {
        assert_eq!(widen(3e-4).to_string(), "0.0003");
        assert_eq!(widen(0.999).to_string(), "0.999");
        assert_eq!(widen(1e-8).to_string(), "0.00000001");
        for v in [
            3e-4_f32,
            1e-3,
            0.03,
            0.999,
            0.98,
            1e-8,
            3.0,
            1e37,
            f32::MIN_POSITIVE,
        ] {
            assert_eq!(widen(v) as f32, v, "{v}");
        }
        #[derive(serde::Serialize)]
        struct Lr {
            #[serde(serialize_with = "serialize")]
            lr: f32,
        }
        let toml = toml::to_string(&Lr { lr: 3e-4 }).expect("serialises");
        assert_eq!(toml.trim(), "lr = 0.0003");
        let json = serde_json::to_value(Lr { lr: 3e-4 }).expect("serialises");
        assert_eq!(json.to_string(), r#"{"lr":0.0003}"#);
    }
}
