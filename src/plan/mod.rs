//! Per-layer quantization plans (docs/DESIGN.md §5): a default spec, ordered rules (the last match wins) and
//! per-tensor overrides (which beat rules), saved as versioned JSON that always lists the resolved spec
//! of every tensor it names, so no one has to guess which rule won.

//!
//! Submodules: [`sensitivity`] (each layer's error under each candidate spec), [`search`] (the budgeted
//! multiple-choice knapsack: exact DP, greedy, Pareto front), [`choose`] (from sensitivity to a plan
//! with a reason per layer), [`export`] (other tools' config formats), [`apply`] (writing the
//! quantized model), [`editor`] (edits with undo), [`size`] (a model's size under a plan) and [`score`]
//! (a plan judged on held-out data).

pub mod apply;
pub mod choose;
pub mod compressed;
pub mod editor;
pub mod export;
pub mod lm;
pub mod runtime;
pub mod score;
pub mod search;
pub mod sensitivity;
pub mod size;

use crate::model::Model;
use crate::quant::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("plan: {0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("cancelled")]
    Cancelled,
}

impl From<crate::quant::QuantError> for PlanError {
    fn from(e: crate::quant::QuantError) -> PlanError {
        PlanError::Invalid(e.to_string())
    }
}

/// [`Spec::short`] of a spec's text; text that is not a spec (`none`) is returned as it is.
pub fn short_spec(spec: &str) -> String {
    Spec::parse(spec).map_or_else(|_| spec.to_string(), |s| s.short())
}

/// A comma-separated list of candidate specs for sensitivity and search (`int8,int4:g128`): each
/// parsed, duplicates dropped, plain casts refused (they are not quantizers).
pub fn parse_candidates(text: &str) -> Result<Vec<Spec>, String> {
    let mut out: Vec<Spec> = Vec::new();
    for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = Spec::parse(p).map_err(|e| e.to_string())?;
        if s.family.is_cast() {
            return Err(format!("'{p}' is a plain cast, not a quantizer"));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err("list at least one candidate spec".into());
    }
    Ok(out)
}

/// What a tensor gets: a spec, or nothing (kept as it is).
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Quantize(Spec),
    Keep,
}

impl Choice {
    pub fn parse(text: &str) -> Result<Choice, String> {
        let t = text.trim();
        if t.is_empty() || t == "none" || t == "keep" {
            return Ok(Choice::Keep);
        }
        Spec::parse(t)
            .map(Choice::Quantize)
            .map_err(|e| e.to_string())
    }

    pub fn text(&self) -> String {
        match self {
            Choice::Quantize(s) => s.to_string(),
            Choice::Keep => "none".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// As written: `re:REGEX` or an exact tensor name.
    pub pattern: String,
    matcher: Matcher,
    pub choice: Choice,
}

#[derive(Debug, Clone)]
enum Matcher {
    Regex(regex::Regex),
    Exact(String),
}

impl Rule {
    pub fn new(pattern: &str, choice: Choice) -> Result<Rule, String> {
        let matcher = match pattern.strip_prefix("re:") {
            Some(re) => Matcher::Regex(
                regex::Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| format!("rule '{pattern}': {e}"))?,
            ),
            None => Matcher::Exact(pattern.to_string()),
        };
        Ok(Rule {
            pattern: pattern.to_string(),
            matcher,
            choice,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Regex(r) => r.is_match(name),
            Matcher::Exact(s) => s == name,
        }
    }
}

/// A plan in memory.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Applies to every quantizable tensor (float, two or more dimensions) that no rule or override names.
    pub default: Choice,
    pub rules: Vec<Rule>,
    /// Exact tensor names; beat rules. `why` is the reason shown to people.
    pub overrides: BTreeMap<String, (Choice, String)>,
    pub budget_bits: Option<f64>,
    /// The runtime the plan is made for: its fused layers share one spec (`runtime`).
    pub target: runtime::Runtime,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            default: Choice::Quantize(Spec::parse("int8").expect("valid")),
            rules: Vec::new(),
            overrides: BTreeMap::new(),
            budget_bits: None,
            target: runtime::Runtime::None,
        }
    }
}

/// The JSON form.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanFile {
    quantscope_plan: u32,
    #[serde(default)]
    model: ModelRef,
    default: String,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    layers: BTreeMap<String, LayerFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    budget: Option<BudgetFile>,
    /// `vllm` or `llama.cpp`: the runtime whose rules the plan follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<SummaryFile>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelRef {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub sha256_header: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleFile {
    #[serde(rename = "match")]
    pattern: String,
    spec: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerFile {
    spec: String,
    #[serde(default)]
    why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BudgetFile {
    bits_per_weight: f64,
}

/// A plan file's contents as listed, read without the model.
#[derive(Debug, Clone)]
pub struct Listing {
    pub model: ModelRef,
    /// (tensor, resolved choice, reason), sorted by name.
    pub layers: Vec<(String, Choice, String)>,
    pub budget_bits: Option<f64>,
    pub target: runtime::Runtime,
    pub summary: Option<SummaryFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryFile {
    pub bits_per_weight: f64,
    pub bytes: u64,
}

fn read_target(t: &Option<String>) -> Result<runtime::Runtime, PlanError> {
    t.as_deref()
        .map_or(Ok(runtime::Runtime::None), runtime::Runtime::parse)
        .map_err(|e| PlanError::Invalid(format!("target: {e}")))
}

impl Plan {
    /// The choice for one tensor: an override, else the last matching rule, else the default for
    /// quantizable tensors, else keep. Returns the choice and where it came from.
    pub fn resolve(&self, name: &str, quantizable: bool) -> (Choice, String) {
        if let Some((c, why)) = self.overrides.get(name) {
            return (
                c.clone(),
                if why.is_empty() {
                    "set for this tensor".into()
                } else {
                    why.clone()
                },
            );
        }
        if let Some(r) = self.rules.iter().rev().find(|r| r.matches(name)) {
            return (r.choice.clone(), format!("rule {}", r.pattern));
        }
        if quantizable {
            (self.default.clone(), "default".into())
        } else {
            (
                Choice::Keep,
                "not quantized by default (fewer than 2 dimensions or not float)".into(),
            )
        }
    }

    /// A hash of everything that can be edited (default, rules, overrides, budget): cheap, so a caller can
    /// tell whether the plan changed without resolving every tensor.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.default.text().hash(&mut h);
        for r in &self.rules {
            (&r.pattern, r.choice.text()).hash(&mut h);
        }
        for (name, (c, why)) in &self.overrides {
            (name, c.text(), why).hash(&mut h);
        }
        self.budget_bits.map(f64::to_bits).hash(&mut h);
        self.target.name().hash(&mut h);
        h.finish()
    }

    /// Every tensor of `model` the plan names or quantizes, with its resolved choice and reason, in file
    /// order: what the plan file's `layers` lists.
    pub fn listing(&self, model: &Model) -> Vec<(String, Choice, String)> {
        model
            .tensors
            .iter()
            .filter_map(|t| {
                let (choice, why) = self.resolve(&t.name, t.quantizable());
                let explicit = self.overrides.contains_key(&t.name)
                    || self.rules.iter().any(|r| r.matches(&t.name));
                (matches!(choice, Choice::Quantize(_)) || explicit)
                    .then(|| (t.name.clone(), choice, why))
            })
            .collect()
    }

    /// Serialize for `model`: every tensor the plan quantizes is listed with its resolved spec.
    pub fn to_json(&self, model: &Model, summary: Option<SummaryFile>) -> String {
        let layers: BTreeMap<String, LayerFile> = self
            .listing(model)
            .into_iter()
            .map(|(name, choice, why)| {
                (
                    name,
                    LayerFile {
                        spec: choice.text(),
                        why,
                    },
                )
            })
            .collect();
        let file = PlanFile {
            quantscope_plan: PLAN_VERSION,
            model: ModelRef {
                source: model.source.display().to_string(),
                sha256_header: model.header_fingerprint(),
            },
            default: self.default.text(),
            rules: self
                .rules
                .iter()
                .map(|r| RuleFile {
                    pattern: r.pattern.clone(),
                    spec: r.choice.text(),
                })
                .collect(),
            layers,
            budget: self.budget_bits.map(|b| BudgetFile { bits_per_weight: b }),
            target: (self.target != runtime::Runtime::None).then(|| self.target.name().to_string()),
            summary,
        };
        serde_json::to_string_pretty(&file).expect("plans serialize")
    }

    /// Read a plan and check it against `model`: unknown tensor names, invalid specs, and a plan made for
    /// another model (different header fingerprint) are errors that name them.
    pub fn from_json(text: &str, model: &Model) -> Result<Plan, PlanError> {
        let f: PlanFile = serde_json::from_str(text)
            .map_err(|e| PlanError::Invalid(format!("not a plan file: {e}")))?;
        if f.quantscope_plan != PLAN_VERSION {
            return Err(PlanError::Invalid(format!(
                "version {} is not supported (this build reads version {PLAN_VERSION})",
                f.quantscope_plan
            )));
        }
        if !f.model.sha256_header.is_empty() && f.model.sha256_header != model.header_fingerprint()
        {
            return Err(PlanError::Invalid(format!(
                "it was made for another model ({}): its tensors, shapes or dtypes differ from {}",
                if f.model.source.is_empty() {
                    "unnamed"
                } else {
                    &f.model.source
                },
                model.source.display()
            )));
        }
        let default =
            Choice::parse(&f.default).map_err(|e| PlanError::Invalid(format!("default: {e}")))?;
        let rules = f
            .rules
            .iter()
            .map(|r| {
                let c = Choice::parse(&r.spec).map_err(|e| format!("rule {}: {e}", r.pattern))?;
                Rule::new(&r.pattern, c)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(PlanError::Invalid)?;
        let mut overrides = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut bad = Vec::new();
        for (name, l) in f.layers {
            if model.find(&name).is_none() {
                unknown.push(name);
                continue;
            }
            match Choice::parse(&l.spec) {
                Ok(c) => {
                    overrides.insert(name, (c, l.why));
                }
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<_> = unknown.iter().take(5).cloned().collect();
            return Err(PlanError::Invalid(format!(
                "{} tensor name(s) are not in the model: {}{}",
                unknown.len(),
                shown.join(", "),
                if unknown.len() > 5 { ", …" } else { "" }
            )));
        }
        if !bad.is_empty() {
            return Err(PlanError::Invalid(format!(
                "invalid specs: {}",
                bad.join("; ")
            )));
        }
        // the file's layer entries hold every resolved spec; keep only those that differ from what the
        // rules and default give, so an edited default still applies to the rest
        let mut plan = Plan {
            default,
            rules,
            overrides: BTreeMap::new(),
            budget_bits: f.budget.map(|b| b.bits_per_weight),
            target: read_target(&f.target)?,
        };
        for (name, (c, why)) in overrides {
            let t = &model.tensors[model.find(&name).expect("checked")];
            let (resolved, _) = plan.resolve(&name, t.quantizable());
            if resolved != c {
                plan.overrides.insert(name, (c, why));
            }
        }
        Ok(plan)
    }

    /// Read a plan file without its model: the resolved spec of every tensor it lists (specs are checked;
    /// names cannot be without the model).
    pub fn read_listing(text: &str) -> Result<Listing, PlanError> {
        let f: PlanFile = serde_json::from_str(text)
            .map_err(|e| PlanError::Invalid(format!("not a plan file: {e}")))?;
        if f.quantscope_plan != PLAN_VERSION {
            return Err(PlanError::Invalid(format!(
                "version {} is not supported (this build reads version {PLAN_VERSION})",
                f.quantscope_plan
            )));
        }
        let mut layers = Vec::new();
        let mut bad = Vec::new();
        for (name, l) in f.layers {
            match Choice::parse(&l.spec) {
                Ok(c) => layers.push((name, c, l.why)),
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
        if !bad.is_empty() {
            return Err(PlanError::Invalid(format!(
                "invalid specs: {}",
                bad.join("; ")
            )));
        }
        Ok(Listing {
            target: read_target(&f.target)?,
            model: f.model,
            layers,
            budget_bits: f.budget.map(|b| b.bits_per_weight),
            summary: f.summary,
        })
    }

    pub fn load(path: &Path, model: &Model) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlanError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Plan::from_json(&text, model).map_err(|e| PlanError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Write to `path` through a temporary file renamed at the end.
    pub fn save(
        &self,
        path: &Path,
        model: &Model,
        summary: Option<SummaryFile>,
    ) -> Result<(), PlanError> {
        let err = |e: std::io::Error| PlanError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        crate::model::write_atomic(path, self.to_json(model, summary)).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn model() -> Model {
        Model::from_bytes("sample", Arc::from(crate_sample())).unwrap()
    }

    fn crate_sample() -> &'static [u8] {
        crate::nn::SAMPLE_MLP
    }

    #[test]
    fn quantized_weights_cost_accuracy_in_order() {
        let m = crate::nn::sample_mlp();
        let data = crate::nn::held_out(&m, &crate::nn::dataset_bytes(&m).unwrap()).unwrap();
        let acc = |spec: &str| {
            let plan = Plan {
                default: Choice::parse(spec).unwrap(),
                ..Default::default()
            };
            crate::nn::evaluate(
                &crate::nn::Network::from_model(&m, Some(&plan)).unwrap(),
                &data,
            )
            .unwrap()
            .0
        };
        let (f, i8_, b) = (acc("none"), acc("int8"), acc("binary"));
        assert!(
            (f - i8_).abs() <= 0.01,
            "int8 keeps the accuracy: {f} vs {i8_}"
        );
        assert!(b < f - 0.05, "binary weights cost accuracy: {b} vs {f}");
    }

    #[test]
    fn epoch_zero_is_the_post_training_quantization() {
        // (here, not in nn::train: it joins training, plans and activations)
        // before any step, QAT int3 with uint8 activations is exactly `eval --spec int3 --act uint8`
        let m = crate::nn::sample_mlp();
        use crate::nn::train::{train, Mode, TrainConfig, CALIB_EXAMPLES};
        let cfg = TrainConfig {
            epochs: 0,
            max_rows: Some(400),
            act: Some(Spec::parse("uint8").unwrap()),
            ..TrainConfig::new(Mode::parse("int3").unwrap())
        };
        let t = train(&m, &cfg, &mut |_| true).unwrap();
        let plan = Plan {
            default: Choice::parse("int3").unwrap(),
            ..Default::default()
        };
        let cal = crate::activations::capture(&m, CALIB_EXAMPLES, 32).unwrap();
        let act = crate::activations::ranges::act_quantizers(
            &cal,
            &Spec::parse("uint8").unwrap(),
            crate::activations::ranges::Method::MinMax,
        )
        .unwrap();
        let net = crate::nn::Network::from_model(&m, Some(&plan)).unwrap();
        let test = crate::nn::held_out(&m, &crate::nn::dataset_bytes(&m).unwrap()).unwrap();
        let want = crate::nn::evaluate_with(&net, &test, Some(&act)).unwrap();
        assert_eq!(t.before().held_out_accuracy, want.0);
        assert!((t.before().held_out_loss - want.1).abs() < 1e-9);
        assert_eq!(t.history.len(), 1);
        assert!(!t.stopped);
    }

    #[test]
    fn short_specs_drop_defaults_only() {
        let full = |s: &str| Spec::parse(s).unwrap().to_string();
        assert_eq!(short_spec(&full("int8")), "int8");
        assert_eq!(short_spec(&full("int4:g128")), "int4:g128");
        assert_eq!(
            short_spec(&full("uint4:g64:clip=mse")),
            "uint4:g64:clip=mse"
        );
        assert_eq!(short_spec(&full("nvfp4")), "nvfp4");
        assert_eq!(short_spec(&full("int8:tensor")), "int8:tensor");
        assert_eq!(short_spec(&full("nf4:g32")), "nf4:g32");
        assert_eq!(short_spec("none"), "none");
        for s in [
            "int4:g16:vsq",
            "kmeans3",
            "fp8_e4m3:tensor",
            "int4:round=stochastic:seed=3",
            "int8:scale=bf16:g32",
        ] {
            assert_eq!(full(&short_spec(&full(s))), full(s), "{s}");
        }
    }

    #[test]
    fn rules_overrides_and_default() {
        let mut p = Plan::default();
        p.rules
            .push(Rule::new("re:fc[23]\\.weight", Choice::parse("int4:g16").unwrap()).unwrap());
        p.rules
            .push(Rule::new("re:fc3\\.weight", Choice::parse("int8:tensor").unwrap()).unwrap());
        p.overrides
            .insert("fc2.weight".into(), (Choice::Keep, "sensitive".into()));
        assert_eq!(
            p.resolve("fc1.weight", true).0.text(),
            Spec::parse("int8").unwrap().to_string()
        );
        assert_eq!(
            p.resolve("fc3.weight", true).0.text(),
            Spec::parse("int8:tensor").unwrap().to_string(),
            "last rule wins"
        );
        assert_eq!(
            p.resolve("fc2.weight", true),
            (Choice::Keep, "sensitive".into()),
            "overrides beat rules"
        );
        assert_eq!(p.resolve("fc1.bias", false).0, Choice::Keep);
    }

    #[test]
    fn the_fingerprint_follows_edits() {
        let mut p = Plan::default();
        let a = p.fingerprint();
        assert_eq!(a, Plan::default().fingerprint());
        p.overrides
            .insert("fc1.weight".into(), (Choice::Keep, String::new()));
        let b = p.fingerprint();
        assert_ne!(a, b);
        p.default = Choice::parse("int4").unwrap();
        assert_ne!(b, p.fingerprint());
    }

    #[test]
    fn json_round_trip_and_validation() {
        let m = model();
        let mut p = Plan {
            default: Choice::parse("int4:g16").unwrap(),
            ..Default::default()
        };
        p.overrides.insert(
            "fc3.weight".into(),
            (Choice::parse("int8").unwrap(), "the classifier".into()),
        );
        let text = p.to_json(&m, None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["quantscope_plan"], 1);
        assert_eq!(
            v["layers"]["fc1.weight"]["spec"],
            Spec::parse("int4:g16").unwrap().to_string()
        );
        assert_eq!(v["layers"]["fc3.weight"]["why"], "the classifier");
        let back = Plan::from_json(&text, &m).unwrap();
        for t in &m.tensors {
            assert_eq!(
                back.resolve(&t.name, t.quantizable()).0,
                p.resolve(&t.name, t.quantizable()).0,
                "{}",
                t.name
            );
        }
        // errors name what is wrong
        let bad_name = text.replace("fc3.weight", "fc9.weight");
        assert!(Plan::from_json(&bad_name, &m)
            .unwrap_err()
            .to_string()
            .contains("fc9.weight"));
        let bad_spec = text.replace("\"spec\": \"int8:channel", "\"spec\": \"int9:channel");
        assert!(Plan::from_json(&bad_spec, &m)
            .unwrap_err()
            .to_string()
            .contains("2 to 8 bits"));
        let other = text.replace(&m.header_fingerprint(), "0000");
        assert!(Plan::from_json(&other, &m)
            .unwrap_err()
            .to_string()
            .contains("another model"));
        assert!(Plan::from_json("{}", &m).is_err());
    }
}
