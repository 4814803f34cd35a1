//! Number formats against independent oracles: ml_dtypes 0.6.0 (tests/data/format_golden.json, made by
//! tests/data/gen_golden.py) and the `half` crate for fp16/bf16.

use quantscope::formats::{lookup, Class, Format, Overflow};
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/format_golden.json"
    ))
    .expect("golden file");
    serde_json::from_str(&text).expect("golden json")
}

fn hex(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// ml_dtypes name → our catalog name (resolved through the alias table, so this also checks the aliases).
fn ours(golden_name: &str) -> Format {
    lookup(golden_name)
        .unwrap_or_else(|e| panic!("{golden_name}: {e}"))
        .format
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn every_code_of_every_small_float_matches_ml_dtypes() {
    let g = golden();
    let mut checked = 0;
    for (name, spec) in g["formats"].as_object().unwrap() {
        if spec["kind"] != "float" || spec["codes"].is_null() {
            continue;
        }
        let f = ours(name);
        let c = f.constants();
        assert_eq!(
            f.bits() as u64,
            spec["bits"].as_u64().unwrap(),
            "{name} bits"
        );
        assert_eq!(c.max, spec["max"].as_f64().unwrap(), "{name} max");
        assert_eq!(
            c.min_normal.unwrap(),
            spec["min_normal"].as_f64().unwrap(),
            "{name} min_normal"
        );
        let min_sub = c.min_subnormal.or(c.min_normal).unwrap();
        assert_eq!(
            min_sub,
            spec["min_subnormal"].as_f64().unwrap(),
            "{name} min_subnormal"
        );
        assert_eq!(c.eps.unwrap(), spec["eps"].as_f64().unwrap(), "{name} eps");
        assert_eq!(
            c.has_inf,
            spec["has_inf"].as_bool().unwrap(),
            "{name} has_inf"
        );
        assert_eq!(
            c.has_nan,
            spec["has_nan"].as_bool().unwrap(),
            "{name} has_nan"
        );
        assert_eq!(
            c.has_neg_zero,
            spec["has_neg_zero"].as_bool().unwrap(),
            "{name} has_neg_zero"
        );
        let codes = spec["codes"].as_array().unwrap();
        assert_eq!(codes.len(), 1 << f.bits(), "{name}: one entry per code");
        let mut finite = 0;
        for entry in codes {
            let code = entry["code"].as_u64().unwrap();
            let want = f32::from_bits(hex(&entry["f32_bits"])) as f64;
            let got = f.decode(code);
            assert!(
                same(got, want),
                "{name} code {code:#x}: got {got}, ml_dtypes {want}"
            );
            let class = match entry["class"].as_str().unwrap() {
                "zero" => Class::Zero,
                "subnormal" => Class::Subnormal,
                "normal" => Class::Normal,
                "inf" => Class::Inf,
                "nan" => Class::Nan,
                other => panic!("class {other}"),
            };
            assert_eq!(f.classify(code), class, "{name} code {code:#x} class");
            finite += got.is_finite() as u64;
            checked += 1;
        }
        assert_eq!(c.finite_codes, finite, "{name} finite codes");
    }
    assert_eq!(
        checked,
        16 + 64 + 64 + 256 * 8,
        "every code of every float format of 8 bits or fewer"
    );
}

/// The value ml_dtypes gives in its own (mostly non-saturating) mode, and the saturating expectation
/// `cast(clip(x, -max, max))` that the golden file's conventions define.
#[test]
fn every_golden_conversion_matches_in_both_overflow_modes() {
    let g = golden();
    let mut total = 0;
    let mut mismatches = Vec::new();
    for (name, spec) in g["formats"].as_object().unwrap() {
        if spec["kind"] != "float" {
            continue;
        }
        let f = ours(name);
        let max = f.constants().max;
        let has_nan = f.constants().has_nan;
        let is_e8m0 = name == "float8_e8m0fnu";
        let inputs = spec["inputs_f32_bits"].as_array().unwrap();
        let out_codes = spec["out_codes"].as_array().unwrap();
        let out_bits = spec["out_f32_bits"].as_array().unwrap();
        for i in 0..inputs.len() {
            let x = f32::from_bits(hex(&inputs[i])) as f64;
            let want_code = out_codes[i].as_u64().unwrap();
            let want = f32::from_bits(hex(&out_bits[i])) as f64;
            total += 1;
            if x.is_nan() && !has_nan {
                // A format without NaN has no right answer: ml_dtypes gives a signed zero with the sign of the
                // NaN inverted; we give +0 and report the value as not representable (see formats::Rounding).
                let e = f.encode(x, Overflow::NoSaturate);
                assert_eq!(e.value, 0.0, "{name}: NaN maps to zero");
                continue;
            }
            let e = f.encode(x, Overflow::NoSaturate);
            let code_ok = if want.is_nan() {
                e.value.is_nan()
            } else {
                e.code == want_code
            };
            if !code_ok || !same(e.value, want) {
                mismatches.push(format!(
                    "{name} {x:e}: got code {:#x} = {}, want {want_code:#x} = {want}",
                    e.code, e.value
                ));
            }
            // saturating mode: cast(clip(x, -max, max)); E8M0 is a scale with no sign, clip only its top
            let sat = f.encode(x, Overflow::Saturate);
            let clipped = if is_e8m0 {
                x.min(max)
            } else {
                x.clamp(-max, max)
            };
            let want_sat = if x.abs() > max || (is_e8m0 && x > max) {
                f.encode(clipped, Overflow::NoSaturate).value
            } else {
                want
            };
            if !same(sat.value, want_sat) {
                mismatches.push(format!(
                    "{name} {x:e} saturating: got {}, want {want_sat}",
                    sat.value
                ));
            }
            if x.abs() > max && !x.is_nan() && !is_e8m0 {
                // the clip itself must land on ±max
                assert_eq!(sat.value.abs(), max, "{name} {x:e} saturates to max");
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {total} conversions differ:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
    assert!(total > 25_000, "expected the full golden set, saw {total}");
}

#[test]
fn integer_round_and_saturate_matches_numpy() {
    let g = golden();
    let mut total = 0;
    for (name, spec) in g["formats"].as_object().unwrap() {
        if spec["kind"] != "int" {
            continue;
        }
        let f = ours(name);
        let c = f.constants();
        assert_eq!(c.min, spec["min"].as_f64().unwrap(), "{name} min");
        assert_eq!(c.max, spec["max"].as_f64().unwrap(), "{name} max");
        let inputs = spec["inputs_f32_bits"].as_array().unwrap();
        let outs = spec["out_rne_saturate"].as_array().unwrap();
        for (x, want) in inputs.iter().zip(outs) {
            let x = f32::from_bits(hex(x)) as f64;
            let e = f.encode(x, Overflow::Saturate);
            match want.as_i64() {
                None => assert!(x.is_nan(), "{name}: null only for NaN"),
                Some(w) => assert_eq!(e.value, w as f64, "{name} {x:e}"),
            }
            total += 1;
        }
        if let Some(codes) = spec["codes"].as_array() {
            for entry in codes {
                let code = entry["code"].as_u64().unwrap();
                assert_eq!(
                    f.decode(code),
                    entry["value"].as_f64().unwrap(),
                    "{name} code {code}"
                );
            }
        }
    }
    assert!(total > 20_000, "{total}");
}

#[test]
fn fp16_and_bf16_decode_every_bit_pattern_like_half() {
    let fp16 = lookup("fp16").unwrap().format;
    let bf16 = lookup("bf16").unwrap().format;
    for bits in 0..=u16::MAX {
        let h = half::f16::from_bits(bits).to_f64();
        assert!(same(fp16.decode(bits as u64), h), "fp16 {bits:#06x}");
        let b = half::bf16::from_bits(bits).to_f64();
        assert!(same(bf16.decode(bits as u64), b), "bf16 {bits:#06x}");
        // and every finite value encodes back to its own code (the round trip is the identity)
        if h.is_finite() {
            assert_eq!(
                fp16.encode(h, Overflow::NoSaturate).code,
                bits as u64,
                "fp16 re-encode {bits:#06x}"
            );
        }
        if b.is_finite() {
            assert_eq!(
                bf16.encode(b, Overflow::NoSaturate).code,
                bits as u64,
                "bf16 re-encode {bits:#06x}"
            );
        }
    }
}

#[test]
fn fp16_and_bf16_encode_like_half_on_many_f32() {
    let fp16 = lookup("fp16").unwrap().format;
    let bf16 = lookup("bf16").unwrap().format;
    // every 4099th f32 bit pattern (about a million, all signs, binades and ties' neighbourhoods)
    // plus every pattern within ±3 of each tie and overflow point of fp16
    let mut patterns: Vec<u32> = (0..=u32::MAX).step_by(4099).collect();
    for base in [
        0x4780_0000u32,
        0x477f_f000,
        0x3380_0000,
        0x3880_0000,
        0x3f80_1000,
        0x3f80_8000,
    ] {
        patterns.extend(base - 3..=base + 3);
    }
    for bits in patterns {
        let x = f32::from_bits(bits);
        let h = half::f16::from_f32(x);
        let e = fp16.encode(x as f64, Overflow::NoSaturate);
        if x.is_nan() {
            assert!(e.value.is_nan());
            continue;
        }
        assert_eq!(e.code, h.to_bits() as u64, "fp16 {x:e} ({bits:#010x})");
        let b = half::bf16::from_f32(x);
        let e = bf16.encode(x as f64, Overflow::NoSaturate);
        assert_eq!(e.code, b.to_bits() as u64, "bf16 {x:e} ({bits:#010x})");
    }
}

#[test]
fn fp32_and_fp64_are_identities_on_their_own_values() {
    let fp32 = lookup("fp32").unwrap().format;
    for bits in (0..=u32::MAX).step_by(65_537) {
        let x = f32::from_bits(bits);
        let e = fp32.encode(x as f64, Overflow::NoSaturate);
        if x.is_nan() {
            assert!(e.value.is_nan());
        } else {
            assert_eq!(e.code, bits as u64, "{x:e}");
            assert!(same(fp32.decode(bits as u64), x as f64));
        }
    }
    // f64 → fp32 rounding agrees with Rust's own `as` cast (round to nearest even)
    let fp64 = lookup("fp64").unwrap().format;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..200_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = f64::from_bits(state);
        if x.is_nan() {
            continue;
        }
        let e = fp32.encode(x, Overflow::NoSaturate);
        assert!(same(e.value, x as f32 as f64), "{x:e}");
        assert_eq!(fp64.encode(x, Overflow::NoSaturate).code, state);
    }
}
