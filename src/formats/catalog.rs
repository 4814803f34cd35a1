//! Named formats: the catalog a person picks from, and the parser for parametric names.

use super::{Codebook, Format, FormatError, IntEncoding, IntFormat, MiniFloat, Specials};

#[derive(Debug, Clone, PartialEq)]
pub struct NamedFormat {
    pub name: String,
    /// Other names accepted for it (ml_dtypes / PyTorch spellings).
    pub aliases: Vec<&'static str>,
    pub description: String,
    pub format: Format,
}

fn float(
    name: &str,
    aliases: &[&'static str],
    e: u32,
    m: u32,
    bias: Option<i32>,
    specials: Specials,
    description: &str,
) -> NamedFormat {
    let mut f = MiniFloat::new(e, m, specials);
    if let Some(b) = bias {
        f = f.with_bias(b);
    }
    NamedFormat {
        name: name.into(),
        aliases: aliases.to_vec(),
        description: description.into(),
        format: Format::Float(f),
    }
}

fn int(name: &str, bits: u32, encoding: IntEncoding, description: &str) -> NamedFormat {
    NamedFormat {
        name: name.into(),
        aliases: vec![],
        description: description.into(),
        format: Format::Int(IntFormat::new(bits, encoding)),
    }
}

/// The named formats, in the order the catalog table shows them.
pub fn catalog() -> Vec<NamedFormat> {
    use Specials::*;
    vec![
        float(
            "fp64",
            &["float64", "f64", "double"],
            11,
            52,
            None,
            Ieee,
            "IEEE 754 binary64",
        ),
        float(
            "fp32",
            &["float32", "f32", "float"],
            8,
            23,
            None,
            Ieee,
            "IEEE 754 binary32",
        ),
        float(
            "fp16",
            &["float16", "f16", "half"],
            5,
            10,
            None,
            Ieee,
            "IEEE 754 binary16",
        ),
        float(
            "bf16",
            &["bfloat16"],
            8,
            7,
            None,
            Ieee,
            "bfloat16: the top half of an fp32",
        ),
        float(
            "fp8_e4m3",
            &["float8_e4m3fn", "e4m3fn"],
            4,
            3,
            None,
            AllOnesNan,
            "OCP FP8 E4M3: no Inf, NaN = S.1111.111, max 448",
        ),
        float(
            "fp8_e5m2",
            &["float8_e5m2"],
            5,
            2,
            None,
            Ieee,
            "OCP FP8 E5M2: IEEE-like, max 57344",
        ),
        float(
            "fp8_e4m3fnuz",
            &["float8_e4m3fnuz"],
            4,
            3,
            Some(8),
            Fnuz,
            "AMD/Graphcore E4M3 FNUZ: bias 8, one NaN, no -0, max 240",
        ),
        float(
            "fp8_e5m2fnuz",
            &["float8_e5m2fnuz"],
            5,
            2,
            Some(16),
            Fnuz,
            "AMD/Graphcore E5M2 FNUZ: bias 16, one NaN, no -0",
        ),
        float(
            "fp8_e4m3_ieee",
            &["float8_e4m3"],
            4,
            3,
            None,
            Ieee,
            "IEEE-style E4M3 with Inf/NaN, max 240",
        ),
        float(
            "fp8_e3m4",
            &["float8_e3m4"],
            3,
            4,
            None,
            Ieee,
            "IEEE-style E3M4 with Inf/NaN, max 15.5",
        ),
        float(
            "fp8_e4m3b11fnuz",
            &["float8_e4m3b11fnuz"],
            4,
            3,
            Some(11),
            Fnuz,
            "E4M3 with bias 11, FNUZ (TPU), max 30",
        ),
        float(
            "fp6_e3m2",
            &["float6_e3m2fn"],
            3,
            2,
            None,
            Finite,
            "OCP MX FP6 E3M2: no Inf/NaN, max 28",
        ),
        float(
            "fp6_e2m3",
            &["float6_e2m3fn"],
            2,
            3,
            None,
            Finite,
            "OCP MX FP6 E2M3: no Inf/NaN, max 7.5",
        ),
        float(
            "fp4_e2m1",
            &["float4_e2m1fn", "fp4"],
            2,
            1,
            None,
            Finite,
            "OCP MX FP4 E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6",
        ),
        float(
            "fp4_e1m2",
            &[],
            1,
            2,
            None,
            Finite,
            "FP4 E1M2 (bias 0): 0 … 3.5 in steps of 0.5",
        ),
        float(
            "fp4_e3m0",
            &[],
            3,
            0,
            None,
            Finite,
            "FP4 E3M0 (bias 3): 0 and powers of two 0.25 … 16",
        ),
        float(
            "e8m0",
            &["float8_e8m0fnu", "fp8_e8m0"],
            8,
            0,
            None,
            E8m0,
            "OCP MX scale: powers of two 2^-127 … 2^127, 0xFF = NaN",
        ),
        NamedFormat {
            name: "nf4".into(),
            aliases: vec!["normalfloat4"],
            description: "QLoRA NormalFloat4: 16 normal quantiles in [-1, 1]".into(),
            format: Format::Codebook(Codebook::nf4()),
        },
        int(
            "int8",
            8,
            IntEncoding::TwosComplement,
            "8-bit two's complement, -128 … 127",
        ),
        int("uint8", 8, IntEncoding::Unsigned, "8-bit unsigned, 0 … 255"),
        int(
            "int4",
            4,
            IntEncoding::TwosComplement,
            "4-bit two's complement, -8 … 7",
        ),
        int("uint4", 4, IntEncoding::Unsigned, "4-bit unsigned, 0 … 15"),
        int(
            "int2",
            2,
            IntEncoding::TwosComplement,
            "2-bit two's complement, -2 … 1",
        ),
    ]
}

pub fn catalog_names() -> Vec<String> {
    catalog().into_iter().map(|f| f.name).collect()
}

/// Find a format by catalog name, alias, or parametric name (see [`FormatError::Unknown`] for the grammar).
pub fn lookup(name: &str) -> Result<NamedFormat, FormatError> {
    let key = name.trim().to_ascii_lowercase();
    let cat = catalog();
    if let Some(f) = cat
        .iter()
        .find(|f| f.name == key || f.aliases.contains(&key.as_str()))
    {
        return Ok(f.clone());
    }
    let invalid = |why: String| FormatError::Invalid {
        name: name.to_string(),
        why,
    };
    if let Some(parsed) = parse_int(&key) {
        let (fmt, canonical) = parsed.map_err(invalid)?;
        fmt.validate().map_err(invalid)?;
        let desc = describe_int(&fmt);
        return Ok(NamedFormat {
            name: canonical,
            aliases: vec![],
            description: desc,
            format: Format::Int(fmt),
        });
    }
    if let Some(parsed) = parse_float(&key, &cat) {
        return parsed.map_err(invalid);
    }
    Err(FormatError::Unknown {
        name: name.to_string(),
        known: catalog_names().join(", "),
    })
}

fn num(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

type Parsed<T> = Option<Result<T, String>>;

fn parse_int(key: &str) -> Parsed<(IntFormat, String)> {
    let (encoding, rest, fixed) = if let Some(r) = key.strip_prefix("uint") {
        (IntEncoding::Unsigned, r, false)
    } else if let Some(r) = key.strip_prefix("smint") {
        (IntEncoding::SignMagnitude, r, false)
    } else if let Some(r) = key.strip_prefix("int") {
        (IntEncoding::TwosComplement, r, false)
    } else if let Some(r) = key.strip_prefix("ufix") {
        (IntEncoding::Unsigned, r, true)
    } else if let Some(r) = key.strip_prefix("fix") {
        (IntEncoding::TwosComplement, r, true)
    } else {
        return None;
    };
    if fixed {
        let (n, f) = rest.split_once('_')?;
        let (n, f) = (num(n)?, num(f)?);
        if f > n {
            return Some(Err(format!("{f} fractional bits do not fit in {n} bits")));
        }
        Some(Ok((IntFormat::fixed(n, encoding, f), key.to_string())))
    } else {
        let n = num(rest)?;
        Some(Ok((IntFormat::new(n, encoding), key.to_string())))
    }
}

fn describe_int(f: &IntFormat) -> String {
    let (lo, hi) = f.int_range();
    let enc = match f.encoding {
        IntEncoding::Unsigned => "unsigned",
        IntEncoding::TwosComplement => "two's complement",
        IntEncoding::SignMagnitude => "sign-magnitude",
    };
    if f.frac_bits == 0 {
        format!("{}-bit {enc}, {lo} … {hi}", f.bits)
    } else {
        format!(
            "{}-bit {enc} fixed point, {} fractional bits, step 2^-{}",
            f.bits, f.frac_bits, f.frac_bits
        )
    }
}

/// `eXmY[_ieee|_fn|_fnuz|_finite][_bB]`. With no policy and no bias, `eXmY` names the catalog float with
/// that layout when there is one (e4m3 = fp8_e4m3, e2m1 = fp4_e2m1, …); otherwise the policy is `finite`.
fn parse_float(key: &str, cat: &[NamedFormat]) -> Parsed<NamedFormat> {
    let rest = key.strip_prefix('e')?;
    let mut parts = rest.split('_');
    let (e, m) = parts.next()?.split_once('m')?;
    let (e, m) = (num(e)?, num(m)?);
    let mut specials = None;
    let mut bias = None;
    for p in parts {
        match p {
            "ieee" => specials = Some(Specials::Ieee),
            "fn" => specials = Some(Specials::AllOnesNan),
            "fnuz" => specials = Some(Specials::Fnuz),
            "finite" => specials = Some(Specials::Finite),
            _ => match p.strip_prefix('b').and_then(|b| b.parse::<i32>().ok()) {
                Some(b) => bias = Some(b),
                None => {
                    return Some(Err(format!(
                        "unknown part '{p}': use _ieee, _fn, _fnuz, _finite or _bB"
                    )))
                }
            },
        }
    }
    if specials.is_none() && bias.is_none() {
        let known = cat
            .iter()
            .find(|f| matches!(f.format, Format::Float(x) if x.exp_bits == e && x.man_bits == m));
        if let Some(f) = known {
            return Some(Ok(f.clone()));
        }
    }
    if e == 0 || e > 11 {
        return Some(Err(format!("exponent bits must be 1..=11, got {e}")));
    }
    let specials = specials.unwrap_or(Specials::Finite);
    let mut f = MiniFloat::new(e, m, specials);
    if let Some(b) = bias {
        f = f.with_bias(b);
    }
    if let Err(why) = f.validate() {
        return Some(Err(why));
    }
    let policy = match specials {
        Specials::Ieee => "ieee",
        Specials::AllOnesNan => "fn",
        Specials::Fnuz => "fnuz",
        Specials::Finite | Specials::E8m0 => "finite",
    };
    let name = format!("e{e}m{m}_{policy}_b{}", f.bias);
    let description = format!(
        "custom float: {e} exponent bits, {m} mantissa bits, bias {}, {policy}",
        f.bias
    );
    Some(Ok(NamedFormat {
        name,
        aliases: vec![],
        description,
        format: Format::Float(f),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_format_is_valid_and_found_by_its_names() {
        for f in catalog() {
            if let Format::Float(x) = &f.format {
                x.validate().unwrap_or_else(|e| panic!("{}: {e}", f.name));
            }
            assert_eq!(lookup(&f.name).unwrap().name, f.name);
            for a in &f.aliases {
                assert_eq!(lookup(a).unwrap().name, f.name, "alias {a}");
            }
        }
    }

    #[test]
    fn parametric_names() {
        assert_eq!(lookup("e4m3").unwrap().name, "fp8_e4m3");
        assert_eq!(lookup("E2M1").unwrap().name, "fp4_e2m1");
        assert_eq!(lookup("e3m3").unwrap().name, "e3m3_finite_b3");
        assert_eq!(lookup("e4m3_ieee_b7").unwrap().name, "e4m3_ieee_b7");
        let f = lookup("fix8_4").unwrap().format.constants();
        assert_eq!((f.min, f.max, f.eps), (-8.0, 7.9375, Some(0.0625)));
        let f = lookup("smint4").unwrap().format.constants();
        assert_eq!((f.min, f.max), (-7.0, 7.0));
        assert_eq!(lookup("int12").unwrap().format.constants().max, 2047.0);
    }

    #[test]
    fn bad_names_say_what_is_allowed() {
        let e = lookup("fp5").unwrap_err().to_string();
        assert!(
            e.contains("unknown format 'fp5'") && e.contains("fp8_e4m3") && e.contains("intN"),
            "{e}"
        );
        assert!(matches!(lookup("int17"), Err(FormatError::Invalid { .. })));
        assert!(matches!(lookup("int0"), Err(FormatError::Invalid { .. })));
        assert!(matches!(lookup("fix4_6"), Err(FormatError::Invalid { .. })));
        assert!(matches!(lookup("e12m3"), Err(FormatError::Invalid { .. })));
        assert!(matches!(
            lookup("e4m0_fn"),
            Err(FormatError::Invalid { .. })
        ));
        assert!(matches!(
            lookup("e4m3_xyz"),
            Err(FormatError::Invalid { .. })
        ));
    }
}
