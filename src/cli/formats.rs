//! `quantscope formats`: the format catalog, or one format's layout, constants and values.

use super::{json_num, json_opt, print_json};
use quantscope::formats::{
    catalog, fmt_num, fmt_short, lookup, parse_value, power_of_two, Constants, NamedFormat,
    Overflow,
};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct FormatsArgs {
    /// A format name (see the table), e.g. fp8_e4m3, nf4, int4, e3m2_ieee, fix8_4.
    pub name: Option<String>,
    /// Encode this value (a decimal, inf, nan, or 0x… as f32 bits) instead of listing the values.
    #[arg(long, allow_hyphen_values = true)]
    pub encode: Option<String>,
    /// Overflow becomes Inf/NaN (IEEE) instead of clamping to ±max.
    #[arg(long)]
    pub no_saturate: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: FormatsArgs) -> anyhow::Result<()> {
    match (&a.name, &a.encode) {
        (None, None) => table(a.json),
        (None, Some(_)) => anyhow::bail!(
            "--encode needs a format name, e.g. `quantscope formats fp8_e4m3 --encode 0.3`"
        ),
        (Some(name), None) => one(&lookup(name)?, a.json),
        (Some(name), Some(x)) => {
            let overflow = if a.no_saturate {
                Overflow::NoSaturate
            } else {
                Overflow::Saturate
            };
            encode(
                &lookup(name)?,
                &parse_value(x).map_err(anyhow::Error::msg)?,
                overflow,
                a.json,
            )
        }
    }
}

fn constants_json(c: &Constants) -> serde_json::Value {
    json!({
        "bits": c.bits, "kind": c.kind, "max": json_num(c.max), "min": json_num(c.min),
        "min_normal": json_opt(c.min_normal), "min_subnormal": json_opt(c.min_subnormal),
        "min_positive": json_opt(c.min_positive), "eps": json_opt(c.eps),
        "dynamic_range_db": json_opt(c.dynamic_range_db), "binades": json_opt(c.binades),
        "finite_codes": c.finite_codes, "has_inf": c.has_inf, "has_nan": c.has_nan,
        "has_neg_zero": c.has_neg_zero, "has_subnormals": c.has_subnormals,
    })
}

fn opt(x: Option<f64>) -> String {
    x.map(fmt_short).unwrap_or_else(|| "-".into())
}

fn table(as_json: bool) -> anyhow::Result<()> {
    let cat = catalog();
    if as_json {
        let list: Vec<_> = cat
            .iter()
            .map(|f| {
                let mut v = constants_json(&f.format.constants());
                v["name"] = json!(f.name);
                v["layout"] = json!(f.format.layout());
                v["aliases"] = json!(f.aliases);
                v["description"] = json!(f.description);
                v
            })
            .collect();
        return print_json(&json!({ "formats": list }));
    }
    println!(
        "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>3} {:>3}  description",
        "name",
        "bits",
        "layout",
        "max",
        "min normal",
        "min subn.",
        "eps",
        "range dB",
        "finite",
        "inf",
        "nan"
    );
    for f in &cat {
        let c = f.format.constants();
        println!(
            "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>3} {:>3}  {}",
            f.name,
            c.bits,
            f.format.layout(),
            fmt_short(c.max),
            opt(c.min_normal),
            opt(c.min_subnormal),
            opt(c.eps),
            c.dynamic_range_db
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "-".into()),
            if c.bits >= 32 {
                format!("2^{}", c.bits)
            } else {
                c.finite_codes.to_string()
            },
            yes(c.has_inf),
            yes(c.has_nan),
            f.description
        );
    }
    println!("\nAlso: intN, uintN, smintN (N = 1..16), fixN_F / ufixN_F (F fractional bits), eXmY[_ieee|_fn|_fnuz|_finite][_bB].");
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn with_pow2(x: f64) -> String {
    match power_of_two(x) {
        Some(k) => format!("{} (2^{k})", fmt_num(x)),
        None => fmt_num(x),
    }
}

fn one(f: &NamedFormat, as_json: bool) -> anyhow::Result<()> {
    let fmt = &f.format;
    let c = fmt.constants();
    let values = if fmt.bits() <= 8 { fmt.values() } else { None };
    if as_json {
        let mut v = constants_json(&c);
        v["name"] = json!(f.name);
        v["description"] = json!(f.description);
        v["layout"] = json!(fmt.layout());
        v["fields"] = json!(fmt.fields());
        v["bias"] = json!(fmt.bias());
        if let Some(values) = &values {
            v["values"] = values
                .iter()
                .map(|&(code, x)| {
                    json!({"code": code, "bits": fmt.bit_string(code), "value": json_num(x), "class": fmt.classify(code).as_str()})
                })
                .collect();
        }
        return print_json(&v);
    }
    println!("{} — {}", f.name, f.description);
    let bias = fmt
        .bias()
        .map(|b| format!(", bias {b}"))
        .unwrap_or_default();
    println!("bits       {} ({}){bias}", c.bits, fmt.layout());
    println!("max        {}", with_pow2(c.max));
    println!("min        {}", fmt_num(c.min));
    println!(
        "min normal {}",
        c.min_normal.map(with_pow2).unwrap_or_else(|| "-".into())
    );
    println!(
        "min subn.  {}",
        c.min_subnormal.map(with_pow2).unwrap_or_else(|| "-".into())
    );
    println!(
        "eps        {}",
        c.eps.map(with_pow2).unwrap_or_else(|| "-".into())
    );
    if let (Some(db), Some(b)) = (c.dynamic_range_db, c.binades) {
        println!("range      {db:.2} dB ({b:.2} binades) from the smallest positive value to max");
    }
    println!(
        "codes      {} finite; inf: {}, nan: {}, -0: {}, subnormals: {}",
        c.finite_codes,
        yes(c.has_inf),
        yes(c.has_nan),
        yes(c.has_neg_zero),
        yes(c.has_subnormals)
    );
    match values {
        Some(values) => {
            println!("\n{:>6}  {:<12} {:>14}  class", "code", "bits", "value");
            let hex_width = (fmt.bits() as usize).div_ceil(4);
            for (code, x) in values {
                println!(
                    "{:>6}  {:<12} {:>14}  {}",
                    format!("0x{code:0hex_width$x}"),
                    fmt.bit_string(code),
                    fmt_num(x),
                    fmt.classify(code).as_str()
                );
            }
        }
        None => println!(
            "\n({} bits: too many values to list; use --encode to try one)",
            c.bits
        ),
    }
    Ok(())
}

fn encode(f: &NamedFormat, x: &f64, overflow: Overflow, as_json: bool) -> anyhow::Result<()> {
    let fmt = &f.format;
    let x = *x;
    let e = fmt.encode(x, overflow);
    let err = e.value - x;
    let rel = if x != 0.0 && x.is_finite() {
        Some(err.abs() / x.abs())
    } else {
        None
    };
    let flipped = e.code ^ e.truncated;
    let neighbours = if fmt.bits() <= 16 {
        fmt.neighbours(x)
    } else {
        None
    };
    if as_json {
        return print_json(&json!({
            "format": f.name, "input": json_num(x), "code": e.code, "bits": fmt.bit_string(e.code),
            "value": json_num(e.value), "class": fmt.classify(e.code).as_str(),
            "error": json_num(err), "rel_error": json_opt(rel), "rounding": e.rounding,
            "truncated_code": e.truncated, "truncated_value": json_num(fmt.decode(e.truncated)),
            "flipped_bits": fmt.bit_string(flipped),
            "neighbours": neighbours.map(|(a, b)| json!([a, b])),
            "saturate": overflow == Overflow::Saturate,
        }));
    }
    let hex_width = (fmt.bits() as usize).div_ceil(4);
    println!("{} ← {}", f.name, fmt_num(x));
    println!(
        "bits      {}   (code 0x{:0hex_width$x}, {})",
        fmt.bit_string(e.code),
        e.code,
        fmt.layout()
    );
    println!(
        "value     {}  [{}]",
        fmt_num(e.value),
        fmt.classify(e.code).as_str()
    );
    match rel {
        Some(r) if err.is_finite() => {
            println!("error     {:+.4e} ({:.4} % of the input)", err, 100.0 * r)
        }
        _ => println!("error     {}", fmt_num(err)),
    }
    println!("rounding  {}", e.rounding.describe());
    println!(
        "truncated {} = {}; rounding flipped {}",
        fmt.bit_string(e.truncated),
        fmt_num(fmt.decode(e.truncated)),
        if flipped == 0 {
            "no bits".to_string()
        } else {
            format!("the 1s of {}", fmt.bit_string(flipped))
        }
    );
    if let Some((lo, hi)) = neighbours {
        if lo != hi {
            println!("between   {} and {}", fmt_num(lo), fmt_num(hi));
        }
    }
    Ok(())
}
