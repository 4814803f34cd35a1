//! The quantization spec string (docs/DESIGN.md §2): one string names everything about how one tensor is
//! quantized. `Spec::parse` reads it with a message that names the wrong part and lists what is
//! allowed; `Display` writes the resolved form with every default made explicit.

pub use crate::calib::Clip;
use std::fmt;
use std::str::FromStr;

/// Element formats that are scaled into range and cast (OCP element formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemFloat {
    Fp8E4m3,
    Fp8E5m2,
    Fp6E3m2,
    Fp6E2m3,
    Fp4E2m1,
}

impl ElemFloat {
    pub fn name(self) -> &'static str {
        match self {
            ElemFloat::Fp8E4m3 => "fp8_e4m3",
            ElemFloat::Fp8E5m2 => "fp8_e5m2",
            ElemFloat::Fp6E3m2 => "fp6_e3m2",
            ElemFloat::Fp6E2m3 => "fp6_e2m3",
            ElemFloat::Fp4E2m1 => "fp4_e2m1",
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            ElemFloat::Fp8E4m3 | ElemFloat::Fp8E5m2 => 8,
            ElemFloat::Fp6E3m2 | ElemFloat::Fp6E2m3 => 6,
            ElemFloat::Fp4E2m1 => 4,
        }
    }

    /// Largest normal exponent of the element (OCP MX v1.0 `emax_elem`).
    pub fn emax(self) -> i32 {
        match self {
            ElemFloat::Fp8E4m3 => 8,
            ElemFloat::Fp8E5m2 => 15,
            ElemFloat::Fp6E3m2 => 4,
            ElemFloat::Fp6E2m3 => 2,
            ElemFloat::Fp4E2m1 => 2,
        }
    }
}

/// OCP MX v1.0 block formats: 32 elements share one E8M0 scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MxElem {
    Float(ElemFloat),
    /// MXINT8: two's-complement int8 with an implicit scale of 2^-6.
    Int8,
}

/// The lecture's shared-microexponent formats (Rouhani et al. 2023): a shared E8M0 exponent per 16
/// elements, a 1-bit micro-exponent per pair, and sign-magnitude elements with M mantissa bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MicroExp {
    /// S1M2: 3-bit elements, 4 bits per element in all.
    Mx4,
    /// S1M4
    Mx6,
    /// S1M7
    Mx9,
}

impl MicroExp {
    pub fn mantissa_bits(self) -> u32 {
        match self {
            MicroExp::Mx4 => 2,
            MicroExp::Mx6 => 4,
            MicroExp::Mx9 => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MicroExp::Mx4 => "smx4",
            MicroExp::Mx6 => "smx6",
            MicroExp::Mx9 => "smx9",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Signed symmetric, restricted range ±(2^(N−1) − 1), zero point 0.
    Int(u32),
    /// Asymmetric, codes 0..2^N − 1 with an integer zero point.
    Uint(u32),
    Float(ElemFloat),
    Nf4,
    Mx(MxElem),
    Nvfp4,
    MicroExp(MicroExp),
    Kmeans(u32),
    Binary,
    Ternary,
    Bf16,
    Fp16,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    Tensor,
    Channel,
    Group(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoundMode {
    Nearest,
    Stochastic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleType {
    Fp32,
    Fp16,
    Bf16,
    E8m0,
}

impl ScaleType {
    pub fn bits(self) -> u32 {
        match self {
            ScaleType::Fp32 => 32,
            ScaleType::Fp16 | ScaleType::Bf16 => 16,
            ScaleType::E8m0 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScaleType::Fp32 => "fp32",
            ScaleType::Fp16 => "fp16",
            ScaleType::Bf16 => "bf16",
            ScaleType::E8m0 => "e8m0",
        }
    }
}

/// A fully resolved spec: every default filled in.
/// How one tensor is quantized: a value (`Eq + Hash`, so caches key on it); its text form is the
/// grammar of docs/DESIGN.md §2 ([`Spec::parse`], `Display` for the resolved form, [`Spec::short`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spec {
    pub family: Family,
    pub granularity: Granularity,
    /// VS-Quant two-level scales: a 4-bit unsigned integer scale per group × an fp scale per channel
    /// (symmetric intN only).
    pub vsq: bool,
    pub clip: Clip,
    pub round: RoundMode,
    /// `round=adaround`: the grid of nearest rounding, with each weight's rounding direction learned
    /// from its layer's calibration inputs (quant::adaround); needs activations.
    pub adaround: bool,
    pub scale: ScaleType,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad spec '{spec}': {why}")]
pub struct SpecError {
    pub spec: String,
    pub why: String,
}

const FORMATS_HELP: &str = "int2..int8, uint2..uint8, fp8_e4m3, fp8_e5m2, fp6_e3m2, fp6_e2m3, fp4_e2m1, nf4, \
mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8, nvfp4, smx4, smx6, smx9, kmeans1..kmeans8, \
binary, ternary, bf16, fp16, none";
const OPTIONS_HELP: &str =
    "tensor, channel, gK (e.g. g128), vsq, clip=minmax|pP|mse|kl (e.g. clip=p99.9), \
round=nearest|stochastic|adaround, scale=fp32|fp16|bf16|e8m0, seed=S";

impl Family {
    /// Formats whose block structure and scale type are fixed by their definition.
    pub fn fixed_blocks(self) -> Option<usize> {
        match self {
            Family::Mx(_) => Some(32),
            Family::Nvfp4 => Some(16),
            Family::MicroExp(_) => Some(16),
            _ => None,
        }
    }

    /// The bit count of the families that take one (`int4`, `uint3`, `kmeans2`).
    pub fn bits(self) -> Option<u32> {
        match self {
            Family::Int(n) | Family::Uint(n) | Family::Kmeans(n) => Some(n),
            _ => None,
        }
    }

    /// The same family with `n` bits, where it takes a bit count.
    pub fn with_bits(self, n: u32) -> Family {
        match self {
            Family::Int(_) => Family::Int(n),
            Family::Uint(_) => Family::Uint(n),
            Family::Kmeans(_) => Family::Kmeans(n),
            other => other,
        }
    }

    /// Its name without the bit count (`int`, `kmeans`; `mxfp4` as it is).
    pub fn kind(self) -> String {
        match self.bits() {
            Some(_) => self
                .name()
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .into(),
            None => self.name(),
        }
    }

    /// Plain casts and `none`: no scale, no options.
    pub fn is_cast(self) -> bool {
        matches!(self, Family::Bf16 | Family::Fp16 | Family::None)
    }

    /// Its name in a spec (`int4`, `mxfp4`, `nvfp4`).
    pub fn name(self) -> String {
        match self {
            Family::Int(n) => format!("int{n}"),
            Family::Uint(n) => format!("uint{n}"),
            Family::Float(f) => f.name().into(),
            Family::Nf4 => "nf4".into(),
            Family::Mx(MxElem::Float(f)) => match f {
                ElemFloat::Fp4E2m1 => "mxfp4".into(),
                other => format!("mx{}", other.name()),
            },
            Family::Mx(MxElem::Int8) => "mxint8".into(),
            Family::Nvfp4 => "nvfp4".into(),
            Family::MicroExp(m) => m.name().into(),
            Family::Kmeans(n) => format!("kmeans{n}"),
            Family::Binary => "binary".into(),
            Family::Ternary => "ternary".into(),
            Family::Bf16 => "bf16".into(),
            Family::Fp16 => "fp16".into(),
            Family::None => "none".into(),
        }
    }
}

fn parse_family(s: &str) -> Option<Family> {
    let num = |p: &str| -> Option<u32> { s.strip_prefix(p).and_then(|r| r.parse().ok()) };
    Some(match s {
        "fp8_e4m3" => Family::Float(ElemFloat::Fp8E4m3),
        "fp8_e5m2" => Family::Float(ElemFloat::Fp8E5m2),
        "fp6_e3m2" => Family::Float(ElemFloat::Fp6E3m2),
        "fp6_e2m3" => Family::Float(ElemFloat::Fp6E2m3),
        "fp4_e2m1" => Family::Float(ElemFloat::Fp4E2m1),
        "nf4" => Family::Nf4,
        "mxfp8_e4m3" => Family::Mx(MxElem::Float(ElemFloat::Fp8E4m3)),
        "mxfp8_e5m2" => Family::Mx(MxElem::Float(ElemFloat::Fp8E5m2)),
        "mxfp6_e3m2" => Family::Mx(MxElem::Float(ElemFloat::Fp6E3m2)),
        "mxfp6_e2m3" => Family::Mx(MxElem::Float(ElemFloat::Fp6E2m3)),
        "mxfp4" => Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)),
        "mxint8" => Family::Mx(MxElem::Int8),
        "nvfp4" => Family::Nvfp4,
        "smx4" => Family::MicroExp(MicroExp::Mx4),
        "smx6" => Family::MicroExp(MicroExp::Mx6),
        "smx9" => Family::MicroExp(MicroExp::Mx9),
        "binary" => Family::Binary,
        "ternary" => Family::Ternary,
        "bf16" => Family::Bf16,
        "fp16" => Family::Fp16,
        "none" => Family::None,
        _ => {
            if let Some(n) = num("uint") {
                Family::Uint(n)
            } else if let Some(n) = num("int") {
                Family::Int(n)
            } else if let Some(n) = num("kmeans") {
                Family::Kmeans(n)
            } else {
                return None;
            }
        }
    })
}

impl Spec {
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let err = |why: String| SpecError {
            spec: text.to_string(),
            why,
        };
        let lower = text.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let head = parts.next().unwrap_or("");
        let family = parse_family(head)
            .ok_or_else(|| err(format!("unknown format '{head}'; formats: {FORMATS_HELP}")))?;
        match family {
            Family::Int(n) | Family::Uint(n) if !(2..=8).contains(&n) => {
                return Err(err(format!("'{head}': integer formats have 2 to 8 bits")))
            }
            Family::Kmeans(n) if !(1..=8).contains(&n) => {
                return Err(err(format!(
                    "'{head}': k-means codebooks have 1 to 8 bits (2 to 256 centroids)"
                )))
            }
            _ => {}
        }
        let mut granularity = None;
        let mut vsq = false;
        let mut clip = None;
        let mut round = None;
        let mut adaround = false;
        let mut scale = None;
        let mut seed = None;
        for p in parts {
            let dup = |what: &str| err(format!("'{p}': {what} is given twice"));
            match p {
                "tensor" | "channel" => {
                    if granularity.is_some() {
                        return Err(dup("the granularity"));
                    }
                    granularity = Some(if p == "tensor" {
                        Granularity::Tensor
                    } else {
                        Granularity::Channel
                    });
                }
                "vsq" => vsq = true,
                _ if p.starts_with('g')
                    && p.len() > 1
                    && p[1..].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    if granularity.is_some() {
                        return Err(dup("the granularity"));
                    }
                    let k: usize = p[1..]
                        .parse()
                        .map_err(|_| err(format!("'{p}': group size too large")))?;
                    if k == 0 {
                        return Err(err("'g0': a group has at least one element".into()));
                    }
                    granularity = Some(Granularity::Group(k));
                }
                _ => {
                    let (key, value) = p.split_once('=').ok_or_else(|| {
                        err(format!("unknown option '{p}'; options: {OPTIONS_HELP}"))
                    })?;
                    match key {
                        "clip" => {
                            if clip.is_some() {
                                return Err(dup("clip"));
                            }
                            clip = Some(match value {
                                "minmax" => Clip::MinMax,
                                "mse" => Clip::Mse,
                                "kl" => Clip::Kl,
                                v if v.starts_with('p') => {
                                    let pct: f64 = v[1..]
                                        .parse()
                                        .map_err(|_| err(format!("'{p}': the percentile must be a number, e.g. clip=p99.9")))?;
                                    if !(pct > 0.0 && pct <= 100.0) {
                                        return Err(err(format!(
                                            "'{p}': the percentile must be in (0, 100]"
                                        )));
                                    }
                                    Clip::Percentile(pct)
                                }
                                _ => {
                                    return Err(err(format!(
                                        "'{p}': clip is minmax, pP (e.g. p99.9), mse or kl"
                                    )))
                                }
                            })
                        }
                        "round" => {
                            if round.is_some() {
                                return Err(dup("round"));
                            }
                            round = Some(match value {
                                "nearest" => RoundMode::Nearest,
                                "stochastic" => RoundMode::Stochastic,
                                "adaround" => {
                                    adaround = true;
                                    RoundMode::Nearest
                                }
                                _ => {
                                    return Err(err(format!(
                                        "'{p}': round is nearest, stochastic or adaround"
                                    )))
                                }
                            })
                        }
                        "scale" => {
                            if scale.is_some() {
                                return Err(dup("scale"));
                            }
                            scale = Some(match value {
                                "fp32" => ScaleType::Fp32,
                                "fp16" => ScaleType::Fp16,
                                "bf16" => ScaleType::Bf16,
                                "e8m0" => ScaleType::E8m0,
                                _ => {
                                    return Err(err(format!(
                                        "'{p}': scale is fp32, fp16, bf16 or e8m0"
                                    )))
                                }
                            })
                        }
                        "seed" => {
                            seed =
                                Some(value.parse().map_err(|_| {
                                    err(format!("'{p}': the seed is a whole number"))
                                })?)
                        }
                        _ => {
                            return Err(err(format!(
                                "unknown option '{p}'; options: {OPTIONS_HELP}"
                            )))
                        }
                    }
                }
            }
        }

        // what each family accepts
        let name = family.name();
        if family.is_cast()
            && (granularity.is_some()
                || vsq
                || clip.is_some()
                || round.is_some()
                || scale.is_some())
        {
            return Err(err(format!(
                "'{name}' is a plain cast and takes no options"
            )));
        }
        if let Some(block) = family.fixed_blocks() {
            if let Some(g) = granularity {
                if g != Granularity::Group(block) {
                    return Err(err(format!(
                        "'{name}' has fixed blocks of {block}; granularity cannot be changed"
                    )));
                }
            }
            if scale.is_some() {
                return Err(err(format!("'{name}' fixes its scale type")));
            }
            if clip.is_some_and(|c| c != Clip::MinMax) {
                return Err(err(format!(
                    "'{name}' chooses its scales by its own rule; clip does not apply"
                )));
            }
        }
        if matches!(family, Family::Kmeans(_)) {
            if granularity.is_some_and(|g| g != Granularity::Tensor) {
                return Err(err(
                    "kmeans fits one codebook per tensor; granularity is 'tensor' only".into(),
                ));
            }
            if clip.is_some_and(|c| c != Clip::MinMax)
                || scale.is_some()
                || round == Some(RoundMode::Stochastic)
            {
                return Err(err("kmeans takes no clip, scale or rounding options (seed= sets its initialisation)".into()));
            }
        }
        if matches!(family, Family::Binary | Family::Ternary)
            && (clip.is_some_and(|c| c != Clip::MinMax) || round == Some(RoundMode::Stochastic))
        {
            return Err(err(format!(
                "'{name}' has its own threshold rule; clip and rounding do not apply"
            )));
        }
        if adaround && (!matches!(family, Family::Int(_) | Family::Uint(_)) || vsq) {
            return Err(err(
                "round=adaround learns the rounding of intN and uintN grids (without vsq)".into(),
            ));
        }
        if family == Family::Nf4 && clip.is_some_and(|c| c != Clip::MinMax) {
            return Err(err(
                "nf4 scales each block by its absmax; clip does not apply".into(),
            ));
        }
        let granularity = granularity.unwrap_or(match family {
            Family::Nf4 => Granularity::Group(64),
            Family::Kmeans(_) => Granularity::Tensor,
            f => f
                .fixed_blocks()
                .map(Granularity::Group)
                .unwrap_or(Granularity::Channel),
        });
        if vsq {
            if !matches!(family, Family::Int(_)) {
                return Err(err("vsq applies to the symmetric intN formats".into()));
            }
            if !matches!(granularity, Granularity::Group(_)) {
                return Err(err("vsq needs a group size: gK (e.g. int4:g16:vsq)".into()));
            }
        }
        let scale = scale.unwrap_or(match (family, granularity) {
            (Family::Mx(_) | Family::MicroExp(_), _) => ScaleType::E8m0,
            (Family::Nvfp4, _) => ScaleType::Fp32, // block scales are E4M3 by definition; see quant::blocks
            (_, Granularity::Group(_)) => ScaleType::Fp16,
            _ => ScaleType::Fp32,
        });
        Ok(Spec {
            family,
            granularity,
            vsq,
            clip: clip.unwrap_or(Clip::MinMax),
            round: round.unwrap_or(RoundMode::Nearest),
            adaround,
            scale,
            seed: seed.unwrap_or(0),
        }
        .without_unused_seed())
    }

    /// The same spec with the seed at 0 where nothing random uses it (neither stochastic rounding
    /// nor k-means), as its text omits it: two specs are equal exactly when their texts are.
    pub fn without_unused_seed(self) -> Spec {
        let random =
            self.round == RoundMode::Stochastic || matches!(self.family, Family::Kmeans(_));
        Spec {
            seed: if random { self.seed } else { 0 },
            ..self
        }
    }
}

impl Spec {
    /// The resolved form without the options that are defaults (`clip=minmax`, `round=nearest`, the
    /// default scale type and granularity, the seed): `int4:g128`, `int8`. For tables, reasons and
    /// labels; files keep the resolved form.
    pub fn short(&self) -> String {
        let full = self.to_string();
        let mut parts: Vec<&str> = full.split(':').collect();
        // drop each option whose absence parses to the same spec
        let mut k = 1;
        while k < parts.len() {
            let mut without = parts.clone();
            without.remove(k);
            if Spec::parse(&without.join(":")).is_ok_and(|s| s == *self) {
                parts = without;
            } else {
                k += 1;
            }
        }
        parts.join(":")
    }
}

impl FromStr for Spec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Spec::parse(s)
    }
}

/// Written as its resolved text (files and JSON hold the text of docs/DESIGN.md §2).
impl serde::Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Spec {
    /// The resolved spec: the family, then every option that applies to it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.family.name())?;
        if self.family.is_cast() {
            return Ok(());
        }
        let fixed = self.family.fixed_blocks().is_some();
        if !fixed {
            match self.granularity {
                Granularity::Tensor => write!(f, ":tensor")?,
                Granularity::Channel => write!(f, ":channel")?,
                Granularity::Group(k) => write!(f, ":g{k}")?,
            }
        }
        if self.vsq {
            write!(f, ":vsq")?;
        }
        let scaled = matches!(
            self.family,
            Family::Int(_) | Family::Uint(_) | Family::Float(_)
        );
        if scaled {
            match self.clip {
                Clip::MinMax => write!(f, ":clip=minmax")?,
                Clip::Percentile(p) => write!(f, ":clip=p{p}")?,
                Clip::Mse => write!(f, ":clip=mse")?,
                Clip::Kl => write!(f, ":clip=kl")?,
            }
            match self.round {
                _ if self.adaround => write!(f, ":round=adaround")?,
                RoundMode::Nearest => write!(f, ":round=nearest")?,
                RoundMode::Stochastic => write!(f, ":round=stochastic")?,
            }
            write!(f, ":scale={}", self.scale.name())?;
        }
        if matches!(self.family, Family::Nf4) {
            write!(f, ":scale={}", self.scale.name())?;
        }
        if self.round == RoundMode::Stochastic || matches!(self.family, Family::Kmeans(_)) {
            write!(f, ":seed={}", self.seed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_its_text() {
        use std::collections::HashSet;
        let texts = [
            "int8",
            "int4:g128",
            "uint4:g64:clip=mse",
            "int3:channel:clip=p99.9",
            "fp8_e4m3:tensor",
            "mxfp4",
            "nvfp4",
            "nf4:g32",
            "kmeans4:seed=3",
            "ternary",
            "bf16",
            "none",
            "int4:g16:vsq",
            "uint3:tensor:round=stochastic:seed=7",
            "int4:round=adaround",
        ];
        let mut seen = HashSet::new();
        for t in texts {
            let s = Spec::parse(t).unwrap();
            // the resolved text parses back to the same value, and so does the short one
            assert_eq!(Spec::parse(&s.to_string()).unwrap(), s, "{t}");
            assert_eq!(Spec::parse(&s.short()).unwrap(), s, "{t}");
            assert!(seen.insert(s), "{t} equals an earlier spec");
        }
        // a seed nothing uses is not part of the value (its text omits it)
        assert_eq!(
            Spec::parse("int4:seed=5").unwrap(),
            Spec::parse("int4").unwrap()
        );
        assert!(seen.contains(&Spec::parse("int8:channel:clip=minmax").unwrap()));
        assert_eq!(
            Spec::parse("int4:g128:scale=fp16").unwrap().short(),
            "int4:g128"
        );
        assert_eq!(Spec::parse("int8:tensor").unwrap().short(), "int8:tensor");
    }

    #[test]
    fn defaults_are_resolved() {
        let s = Spec::parse("int8").unwrap();
        assert_eq!(
            (s.granularity, s.clip, s.round, s.scale),
            (
                Granularity::Channel,
                Clip::MinMax,
                RoundMode::Nearest,
                ScaleType::Fp32
            )
        );
        assert_eq!(
            s.to_string(),
            "int8:channel:clip=minmax:round=nearest:scale=fp32"
        );
        assert_eq!(Spec::parse("int4:g128").unwrap().scale, ScaleType::Fp16);
        assert_eq!(
            Spec::parse("nf4").unwrap().granularity,
            Granularity::Group(64)
        );
        assert_eq!(Spec::parse("mxfp4").unwrap().to_string(), "mxfp4");
        assert_eq!(
            Spec::parse("nvfp4").unwrap().granularity,
            Granularity::Group(16)
        );
        assert_eq!(
            Spec::parse("kmeans4").unwrap().to_string(),
            "kmeans4:tensor:seed=0"
        );
        assert_eq!(Spec::parse("uint4:g64:clip=mse").unwrap().clip, Clip::Mse);
        assert_eq!(
            Spec::parse("fp8_e4m3:tensor").unwrap().granularity,
            Granularity::Tensor
        );
        assert!(Spec::parse("int4:g16:vsq").unwrap().vsq);
        assert_eq!(
            Spec::parse("int8:clip=p99.9").unwrap().clip,
            Clip::Percentile(99.9)
        );
        assert_eq!(
            Spec::parse("ternary").unwrap().granularity,
            Granularity::Channel
        );
        assert_eq!(Spec::parse("bf16").unwrap().to_string(), "bf16");
        // the resolved string parses back to the same spec
        for s in [
            "int4:g128:clip=mse",
            "uint3:tensor:round=stochastic:seed=7",
            "nf4",
            "kmeans3:seed=5",
            "smx6",
            "mxint8",
        ] {
            let a = Spec::parse(s).unwrap();
            assert_eq!(Spec::parse(&a.to_string()).unwrap(), a, "{s}");
        }
    }

    #[test]
    fn bad_specs_name_the_part_and_the_choices() {
        for (s, want) in [
            ("int9", "2 to 8 bits"),
            ("int4:g0", "at least one element"),
            ("int4:clip=p120", "(0, 100]"),
            ("int4:foo", "unknown option 'foo'"),
            ("float7", "unknown format 'float7'"),
            ("mxfp4:g64", "fixed blocks"),
            ("int4:vsq", "needs a group size"),
            ("kmeans4:channel", "one codebook per tensor"),
            ("bf16:channel", "plain cast"),
            ("int4:tensor:channel", "given twice"),
            ("int4:round=up", "nearest, stochastic or adaround"),
            ("fp8_e4m3:round=adaround", "intN and uintN"),
            ("nvfp4:scale=fp16", "fixes its scale"),
            ("fp8_e4m3:vsq", "symmetric intN"),
        ] {
            let e = Spec::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(e.starts_with(&format!("bad spec '{s}'")), "{e}");
        }
        assert!(
            Spec::parse("float7")
                .unwrap_err()
                .to_string()
                .contains("mxfp4"),
            "lists the formats"
        );
    }
}
