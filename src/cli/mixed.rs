//! `sensitivity` and `search`: per-layer error under each candidate, and the best plan under a budget.

use super::{json_num, print_json, with_progress};
use anyhow::Context;
use quantscope::model::Model;
use quantscope::nn::text::read_text;
use quantscope::nn::transformer::score::Comparison;
use quantscope::nn::transformer::{is_transformer, tied_embedding, TIED_LABEL};
use quantscope::plan::choose::{Budget, Constraints, LayerChoice, Mixed};
use quantscope::plan::lm::{prepare, LmEvalSet};
use quantscope::plan::runtime::{candidates_for, check, dominant_dtype, is_embedding, Runtime};
use quantscope::plan::score::{judge, planned_weights};
use quantscope::plan::search::Solution;
use quantscope::plan::sensitivity::{
    compute, compute_saved, db, default_layers, Cache, EndToEnd, EvalSet, Measure, Request,
    Sensitivity,
};
use quantscope::plan::{Choice, Plan};
use quantscope::quant::Spec;
use serde_json::{json, Value};
use std::path::PathBuf;

/// What both commands need to measure sensitivity.
#[derive(clap::Args, Debug)]
pub struct MeasureArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model folder.
    pub model: PathBuf,
    /// Comma-separated candidate specs, e.g. int8,int4:g128,nvfp4,mxfp4,fp8_e4m3,kmeans4.
    #[arg(long)]
    pub candidates: String,
    /// Only tensors whose name matches this regular expression (default: every float weight with two or
    /// more dimensions).
    #[arg(long)]
    pub layers: Option<String>,
    /// Calibration data for a model that runs (a CSV, optionally gzipped, laid out like the model's own
    /// data: features then label). Default: the model's own data file without its held-out rows.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A calibration pack (tools/capture_activations.py) for the output-space measure (X·Wᵀ vs X·Ŵᵀ).
    /// Models that run use their own calibration rows without it.
    #[arg(long)]
    pub pack: Option<PathBuf>,
    /// At most this many calibration rows (evenly spaced).
    #[arg(long, default_value_t = 512)]
    pub calib_rows: usize,
    /// Skip the end-to-end measure even when the model runs.
    #[arg(long)]
    pub no_end_to_end: bool,
    /// Run the end-to-end measure for the first candidate of each layer only, and carry its KL to the
    /// layer's other candidates in proportion to their output (or weight) error: the probed_kl measure,
    /// for a pass per layer instead of one per cell.
    #[arg(long, conflicts_with = "no_end_to_end")]
    pub probe: bool,
    /// Keep measured cells in this file: a re-run with more candidates measures only the new ones.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// A transformer's calibration text: plain text, or JSONL with a `text` field (default: the bundled
    /// English text). Calibration windows come from its first half, never its second (evaluation).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// A transformer: tokens per calibration window.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    /// A transformer: calibration windows for the end-to-end measure and the activations.
    #[arg(long, default_value_t = 4)]
    pub calib_windows: usize,
}

#[derive(clap::Args, Debug)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub m: MeasureArgs,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub m: MeasureArgs,
    /// Average stored bits per weight over the searched layers (scales and codebooks included).
    #[arg(
        long,
        conflicts_with = "budget_bytes",
        required_unless_present = "budget_bytes"
    )]
    pub budget_bits: Option<f64>,
    /// Total stored bytes of the searched layers.
    #[arg(long)]
    pub budget_bytes: Option<u64>,
    /// Pin the layers matching REGEX to SPEC, e.g. --pin 'embeddings\..*=int8' (repeatable; counts in
    /// the budget).
    #[arg(long, value_name = "REGEX=SPEC")]
    pub pin: Vec<String>,
    /// Keep the layers matching REGEX as they are (repeatable; not counted in the budget).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// What to minimise: weight_sqnr, output_sqnr or end_to_end (default: the best available).
    #[arg(long)]
    pub measure: Option<String>,
    /// Write the plan here (a temporary file renamed at the end).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The runtime the plan is for: vllm (the layers it fuses, q/k/v and gate/up, share one spec; only
    /// schemes it loads; embeddings kept), llama.cpp, or none.
    #[arg(long, default_value = "none")]
    pub target: String,
    /// Print every point of the size/error trade-off curve.
    #[arg(long)]
    pub front: bool,
    /// A transformer: tokens per evaluation window (from the text's second half, never calibration's).
    #[arg(long, default_value_t = 256)]
    pub eval_ctx: usize,
    /// A transformer: evaluation windows the plans are judged on.
    #[arg(long, default_value_t = 8)]
    pub eval_windows: usize,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn candidates(text: &str) -> anyhow::Result<Vec<Spec>> {
    quantscope::plan::parse_candidates(text).map_err(|e| anyhow::anyhow!("--candidates: {e}"))
}

fn full_match(re: &str, what: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| anyhow::anyhow!("{what} '{re}' is not a valid regular expression: {e}"))
}

struct Measured<'m> {
    model: &'m Model,
    sens: Sensitivity,
    /// A transformer whose LM head is its embedding tensor: that tensor's name.
    tied_head: Option<String>,
    /// A transformer decoder's calibration windows and float pass (the end-to-end measure).
    lm: Option<LmEvalSet<'m>>,
}

/// An example of a layer name, for messages about patterns that match nothing.
fn example_names(model: &Model, layers: &[usize], pattern: Option<&str>) -> String {
    let all: Vec<&str> = layers
        .iter()
        .map(|&i| model.tensors[i].name.as_str())
        .collect();
    let loose = pattern.map(|p| format!(".*{p}.*"));
    let tied = tied_embedding(model);
    let hint = match (&loose, pattern) {
        (Some(l), _)
            if regex::Regex::new(&format!("^(?:{l})$"))
                .is_ok_and(|re| all.iter().any(|n| re.is_match(n))) =>
        {
            format!("try '{l}'")
        }
        (_, Some(p)) if p.contains("lm_head") && tied.is_some() => format!(
            "this model's LM head is its tied embedding '{}'",
            tied.map_or("", |i| model.tensors[i].name.as_str())
        ),
        _ => format!(
            "try '.*{}.*'",
            all.first()
                .and_then(|n| n.split('.').rev().nth(1))
                .unwrap_or("proj")
        ),
    };
    format!(
        "patterns match the whole name, e.g. '{}' ({hint})",
        all[..all.len().min(3)].join("', '")
    )
}

/// The layers `sensitivity` and `search` measure: every quantizable weight that `--layers` matches and
/// `skip` keeps; none is an error.
fn measured_layers(
    a: &MeasureArgs,
    model: &Model,
    skip: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<usize>> {
    let filter = super::layer_filter(a.layers.as_deref())?;
    let layers: Vec<usize> = default_layers(model)
        .into_iter()
        .filter(|&i| {
            filter
                .as_ref()
                .is_none_or(|r| r.is_match(&model.tensors[i].name))
                && !skip(&model.tensors[i].name)
        })
        .collect();
    if layers.is_empty() {
        anyhow::bail!(
            "no layer to measure{} (float tensors with two or more dimensions){}",
            if filter.is_some() {
                " matches --layers"
            } else {
                ""
            },
            if filter.is_some() {
                format!(
                    "; {}",
                    example_names(model, &default_layers(model), a.layers.as_deref())
                )
            } else {
                String::new()
            }
        );
    }
    Ok(layers)
}

/// Open the model, choose the layers, measure (through the cache), with a progress bar on stderr.
fn measure<'m>(
    a: &MeasureArgs,
    model: &'m Model,
    extra: &[(regex::Regex, Spec)],
    skip: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Measured<'m>> {
    let cands = candidates(&a.candidates)?;
    let layers = measured_layers(a, model, skip)?;
    let eval = if a.no_end_to_end {
        if a.data.is_some() {
            anyhow::bail!("--data is for the end-to-end measure, which --no-end-to-end turns off");
        }
        None
    } else {
        EvalSet::for_model(model, a.data.as_deref(), a.calib_rows)?
    };
    let mut extra_cells = Vec::new();
    for (row, &ti) in layers.iter().enumerate() {
        for (re, spec) in extra {
            if re.is_match(&model.tensors[ti].name) {
                extra_cells.push((row, *spec));
            }
        }
    }
    // a transformer: calibration windows of text, its activations and the float pass's kept states
    let tied_head = tied_embedding(model).map(|i| model.tensors[i].name.clone());
    // a cache file of another model is refused before the calibration pass
    let cached = match &a.cache {
        Some(p) => Cache::read_matching(p, model, None)?,
        None => None,
    };
    // when the file holds every cell this run needs, the calibration pass captures no activations
    let covered = |data: &str| {
        cached.as_ref().is_some_and(|c| {
            c.data == data
                && layers.iter().enumerate().all(|(row, &ti)| {
                    let name = &model.tensors[ti].name;
                    let extra = extra_cells
                        .iter()
                        .filter(|(r, _)| *r == row)
                        .map(|(_, s)| s);
                    // every weight a transformer runs has an output measure (linear or lookup): a
                    // cell cached without one is measured again, on activations
                    cands.iter().chain(extra).all(|s| {
                        c.get(name, &s.to_string()).is_some_and(|cell| {
                            let e2e = a.no_end_to_end
                                || (a.probe && s != &cands[0])
                                || cell.end_to_end.is_some();
                            cell.error.is_some() || (e2e && cell.output_nsr.is_some())
                        })
                    })
                })
        })
    };
    let (lm, lm_acts) = if eval.is_none() {
        let text = a.text.as_deref().map(read_text).transpose()?;
        with_progress("calibration pass", |p| {
            prepare(
                model,
                text.as_ref(),
                a.ctx,
                a.calib_windows,
                !a.no_end_to_end,
                &covered,
                p,
            )
        })
        .map_err(anyhow::Error::msg)?
    } else {
        (None, None)
    };
    let lm_acts = lm_acts.filter(|_| a.pack.is_none());
    let acts = match &a.pack {
        Some(p) => {
            let cal = quantscope::activations::pack::read(p)?;
            quantscope::activations::check_matches(&cal, model).map_err(anyhow::Error::msg)?;
            Some(cal)
        }
        None if eval.is_some() => Some(quantscope::activations::capture(model, a.calib_rows, 32)?),
        None => lm_acts,
    };
    let req = Request {
        layers: layers.clone(),
        candidates: cands,
        extra: extra_cells,
        eval: eval.as_ref(),
        lm: lm.as_ref(),
        activations: acts.as_ref(),
        probe: a.probe.then_some(0),
    };
    let cache = req.fresh_cache(model);
    let sens = with_progress("sensitivity", |p| match &a.cache {
        Some(file) => compute_saved(model, &req, &cache, file, p, &mut |_, _| {}),
        None => compute(model, &req, &cache, p, &mut |_, _| {}),
    })?;
    drop(req);
    Ok(Measured {
        model,
        sens,
        tied_head,
        lm,
    })
}

/// A transformer decoder's float pass on its calibration windows, without activations: what whole
/// plans are compared on when the cells were measured without it. `None` for a model that is not one.
fn calibration_pass<'m>(
    a: &MeasureArgs,
    model: &'m Model,
) -> anyhow::Result<Option<LmEvalSet<'m>>> {
    let text = a.text.as_deref().map(read_text).transpose()?;
    let (lm, _) = with_progress("calibration pass", |p| {
        prepare(
            model,
            text.as_ref(),
            a.ctx,
            a.calib_windows,
            true,
            &|_| true,
            p,
        )
    })
    .map_err(anyhow::Error::msg)?;
    Ok(lm)
}

fn e2e_json(e: &EndToEnd) -> Value {
    json!({"accuracy": e.accuracy, "loss": e.loss, "kl": e.kl, "agreement": e.agreement})
}

fn sens_json(s: &Sensitivity) -> Value {
    let layers: Vec<Value> = s
        .layers
        .iter()
        .zip(&s.cells)
        .map(|(l, row)| {
            json!({
                "name": l.name, "shape": l.shape, "numel": l.numel,
                "cells": row.iter().map(|c| json!({
                    "spec": c.spec, "bits": c.bits, "bits_per_weight": c.bits_per_weight,
                    "weight_sqnr_db": json_num(c.weight_sqnr_db()), "weight_mse": json_num(c.weight_mse),
                    "output_sqnr_db": c.output_nsr.map(|v| json_num(db(v))),
                    "imatrix_sqnr_db": c.importance_nsr.map(|v| json_num(db(v))),
                    "end_to_end": c.end_to_end.as_ref().map(e2e_json),
                    "probed_kl": c.probed_kl.map(json_num),
                    "error": c.error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "model": s.model,
        "candidates": s.candidates,
        "measures": s.available().iter().map(|m| m.name()).collect::<Vec<_>>(),
        "calibration": s.data,
        "baseline": s.baseline.map(|b| json!({"accuracy": b.accuracy, "loss": b.loss, "examples": b.examples})),
        "layers": layers,
        "agreement": {
            "weight_sqnr_vs_end_to_end": s.agreement(Measure::WeightSqnr, Measure::EndToEnd),
            "imatrix_vs_end_to_end": s.agreement(Measure::Imatrix, Measure::EndToEnd),
            "output_sqnr_vs_end_to_end": s.agreement(Measure::OutputSqnr, Measure::EndToEnd),
            "probed_kl_vs_end_to_end": s.agreement(Measure::ProbedKl, Measure::EndToEnd),
            "weight_sqnr_vs_output_sqnr": s.agreement(Measure::WeightSqnr, Measure::OutputSqnr),
            "within_candidate_vs_end_to_end": s.candidates.iter().enumerate().map(|(c, spec)| json!({
                "spec": spec,
                "weight_sqnr": s.agreement_within(Measure::WeightSqnr, Measure::EndToEnd, c),
                "imatrix": s.agreement_within(Measure::Imatrix, Measure::EndToEnd, c),
                "output_sqnr": s.agreement_within(Measure::OutputSqnr, Measure::EndToEnd, c),
                "probed_kl": s.agreement_within(Measure::ProbedKl, Measure::EndToEnd, c),
            })).collect::<Vec<_>>(),
        },
    })
}

/// Each measure's rank agreement with the end-to-end KL: over all cells, and within each candidate
/// (which layers hurt most under that spec).
fn agreement_lines(s: &Sensitivity) -> Vec<String> {
    [
        Measure::WeightSqnr,
        Measure::Imatrix,
        Measure::OutputSqnr,
        Measure::ProbedKl,
    ]
    .into_iter()
    .filter_map(|m| {
        let all = s.agreement(m, Measure::EndToEnd)?;
        let within: Vec<String> = (0..s.candidates.len())
            .filter_map(|c| {
                s.agreement_within(m, Measure::EndToEnd, c)
                    .map(|r| format!("{} {r:.2}", short(&s.candidates[c])))
            })
            .collect();
        Some(format!(
            "  {:<45} {all:.3}   within a candidate: {}",
            m.label(),
            within.join(", ")
        ))
    })
    .collect()
}

/// A layer's name as shown: a tied LM head says so.
fn shown_name(name: &str, tied_head: Option<&str>) -> String {
    if tied_head == Some(name) {
        format!("{name} {TIED_LABEL}")
    } else {
        name.to_string()
    }
}

/// One row per layer, one column per candidate, each cell as `text` shows it, under `title`.
fn table(
    s: &Sensitivity,
    tied: Option<&str>,
    w: usize,
    title: &str,
    text: impl Fn(&quantscope::plan::sensitivity::Cell) -> String,
) {
    print!("{title:<w$}");
    for c in &s.candidates {
        print!(" {:>14}", short(c));
    }
    println!();
    for (l, row) in s.layers.iter().zip(&s.cells) {
        print!("{:<w$}", shown_name(&l.name, tied));
        for c in row.iter().take(s.candidates.len()) {
            print!(" {:>14}", text(c));
        }
        println!();
    }
}

/// Which layer each measure calls the most sensitive at the smallest candidate: where they disagree.
fn most_sensitive(s: &Sensitivity, m: Measure) -> Option<(String, String)> {
    let mut best: Option<(f64, usize, usize)> = None;
    for (r, row) in s.cells.iter().enumerate() {
        let c = (0..s.candidates.len())
            .filter(|&c| row[c].cost(m).is_some())
            .min_by_key(|&c| row[c].bits)?;
        let v = row[c].cost(m)?;
        if best.is_none_or(|b| v > b.0) {
            best = Some((v, r, c));
        }
    }
    best.map(|(_, r, c)| (s.layers[r].name.clone(), s.cells[r][c].spec.clone()))
}

pub fn run_sensitivity(a: SensitivityArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.m.model)?;
    let m = measure(&a.m, &model, &[], &|_| false)?;
    let s = &m.sens;
    let tied = m.tied_head.as_deref();
    if a.json {
        let mut v = sens_json(s);
        v["lm_head_is_embedding"] = json!(tied);
        return print_json(&v);
    }
    println!(
        "{} layers x {} candidates; measures: {}",
        s.layers.len(),
        s.candidates.len(),
        s.available()
            .iter()
            .map(|m| m.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let (Some(b), Some(d)) = (&s.baseline, &s.data) {
        println!(
            "calibration: {d}; float accuracy {:.4}, loss {:.4}",
            b.accuracy, b.loss
        );
    }
    let e2e = s.available().contains(&Measure::EndToEnd);
    let w = s
        .layers
        .iter()
        .map(|l| shown_name(&l.name, tied).chars().count())
        .max()
        .unwrap_or(10)
        .max(10);
    table(s, tied, w, "weight SQNR dB", |c| {
        let v = c.weight_sqnr_db();
        match &c.error {
            Some(_) => "error".into(),
            None if v.is_infinite() => "exact".into(),
            None => format!("{v:.2}"),
        }
    });
    if e2e {
        println!();
        table(s, tied, w, "KL (acc %)", |c| match &c.end_to_end {
            Some(e) => format!("{:.4} ({:.1})", e.kl, 100.0 * e.accuracy),
            None => "error".into(),
        });
        let lines = agreement_lines(s);
        if !lines.is_empty() {
            println!("\nrank agreement with the end-to-end KL (Spearman): over all cells, and within each candidate (which layers hurt most):");
            for l in lines {
                println!("{l}");
            }
        }
        if let (Some(a), Some(b)) = (
            most_sensitive(s, Measure::WeightSqnr),
            most_sensitive(s, Measure::EndToEnd),
        ) {
            println!(
                "most sensitive at the smallest candidate: by weight SQNR {} ({}), end to end {} ({}){}",
                a.0,
                short(&a.1),
                b.0,
                short(&b.1),
                if a.0 != b.0 { " - the measures disagree" } else { "" }
            );
        }
    } else if s.available().contains(&Measure::ProbedKl) {
        println!();
        table(s, tied, w, "probed KL", |c| {
            match (c.probed_kl, &c.end_to_end) {
                (Some(k), Some(_)) => format!("{k:.4} (run)"),
                (Some(k), None) => format!("{k:.4}"),
                _ => "error".into(),
            }
        });
        println!(
            "(run: measured end to end, the layer's probe; the others carried from it by their {})",
            if s.available().contains(&Measure::OutputSqnr) {
                "output SQNR"
            } else {
                "weight SQNR"
            }
        );
    }
    println!(
        "\nbits per weight: {}",
        s.candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (bits, n): (u64, u64) = s
                    .cells
                    .iter()
                    .zip(&s.layers)
                    .fold((0, 0), |(b, n), (row, l)| (b + row[i].bits, n + l.numel));
                format!("{} {:.3}", short(c), bits as f64 / n.max(1) as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn short(s: &str) -> String {
    quantscope::plan::short_spec(s)
}

fn eval_json(e: &EndToEnd) -> Value {
    e2e_json(e)
}

pub fn run_search(a: SearchArgs) -> anyhow::Result<()> {
    let mut pins: Vec<(regex::Regex, Spec)> = Vec::new();
    for p in &a.pin {
        let (re, spec) = p
            .rsplit_once('=')
            .filter(|(r, s)| !r.is_empty() && !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--pin '{p}': write REGEX=SPEC, e.g. 'lm_head\\.weight=int8'")
            })?;
        let spec = Spec::parse(spec).with_context(|| format!("--pin '{p}'"))?;
        pins.push((full_match(re, "--pin")?, spec));
    }
    let excludes: Vec<regex::Regex> = a
        .exclude
        .iter()
        .map(|r| full_match(r, "--exclude"))
        .collect::<anyhow::Result<_>>()?;
    if let Some(b) = a.budget_bits {
        if !(b.is_finite() && b > 0.0) {
            anyhow::bail!("--budget-bits must be a positive number of bits per weight");
        }
    }
    let target = Runtime::parse(&a.target).map_err(|e| anyhow::anyhow!("--target: {e}"))?;
    let model = Model::open(&a.m.model)?;
    // refuse, before measuring, what the runtime could not load; hold the rest as it will
    let mut a = a;
    let dtype = dominant_dtype(&model, &default_layers(&model));
    let pinned: Vec<Spec> = pins.iter().map(|p| p.1).collect();
    let (moved, changed) = candidates_for(target, &candidates(&a.m.candidates)?, dtype)
        .and_then(|c| Ok((c, candidates_for(target, &pinned, dtype)?.0)))
        .map(|((c, changed), pinned)| {
            for (p, s) in pins.iter_mut().zip(pinned) {
                p.1 = s;
            }
            (c, changed)
        })
        .map_err(|e| anyhow::anyhow!("--target {}: {e}", target.name()))?;
    if !changed.is_empty() && !a.json {
        println!(
            "--target vllm: scales stored in the weights' dtype, as compressed-tensors keeps them ({})",
            changed.join(", ")
        );
    }
    a.m.candidates = moved
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let skip_embeddings = |name: &str| target == Runtime::Vllm && is_embedding(name);
    let kept: Vec<&str> = default_layers(&model)
        .into_iter()
        .map(|i| model.tensors[i].name.as_str())
        .filter(|n| skip_embeddings(n))
        .collect();
    if !kept.is_empty() && !a.json {
        println!(
            "--target vllm keeps {} as it is: vLLM does not quantize embedding tables",
            kept.join(", ")
        );
    }
    let unwrap = |re: &regex::Regex| {
        re.as_str()
            .trim_start_matches("^(?:")
            .trim_end_matches(")$")
            .to_string()
    };
    // patterns that match nothing are refused before anything is measured
    let names = measured_layers(&a.m, &model, &skip_embeddings)?;
    let matches = |re: &regex::Regex| names.iter().any(|&i| re.is_match(&model.tensors[i].name));
    for (re, _) in &pins {
        if !matches(re) {
            anyhow::bail!(
                "--pin '{}' matches no searched layer; {}",
                unwrap(re),
                example_names(&model, &names, Some(&unwrap(re)))
            );
        }
    }
    for re in &excludes {
        if !matches(re) {
            anyhow::bail!(
                "--exclude '{}' matches no searched layer; {}",
                unwrap(re),
                example_names(&model, &names, Some(&unwrap(re)))
            );
        }
    }
    let chosen_measure = a
        .measure
        .as_deref()
        .map(Measure::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut m = measure(&a.m, &model, &pins, &skip_embeddings)?;
    if target == Runtime::LlamaCpp {
        let types = m.sens.size_for_llama_cpp();
        if !a.json {
            println!(
                "--target llama.cpp: sizes are those of the GGML types llama-quantize stores ({})",
                types
                    .iter()
                    .map(|(s, ts)| format!(
                        "{s} -> {}",
                        ts.iter().copied().collect::<Vec<_>>().join("/")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let m = m;
    let s = &m.sens;
    let mut c = Constraints::for_runtime(s, target);
    if !c.untied_only.is_empty() && !a.json {
        println!(
            "--target vllm: {} only for layers vLLM does not fuse (one global scale per fused layer)",
            c.untied_only
                .iter()
                .map(|t| short(t))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (r, l) in s.layers.iter().enumerate() {
        if excludes.iter().any(|re| re.is_match(&l.name)) {
            c.excluded.insert(r);
            continue;
        }
        // the last matching pin wins, as plan rules do
        if let Some((_, spec)) = pins.iter().rev().find(|(re, _)| re.is_match(&l.name)) {
            let cell = s
                .find(r, &spec.to_string())
                .expect("pinned specs were measured");
            c.pinned.insert(r, cell);
        }
    }
    let measure = chosen_measure.unwrap_or_else(|| s.best_measure());
    let mixed = Mixed::new(s, measure, &c)?;
    let budget = match (a.budget_bits, a.budget_bytes) {
        (Some(b), _) => Budget::BitsPerWeight(b),
        (None, Some(n)) => Budget::Bytes(n),
        _ => unreachable!("clap requires one"),
    };
    let bits = mixed.budget_bits(budget);
    let (lo, hi) = mixed.bpw_range();
    let Some(sol) = mixed.solve(budget) else {
        anyhow::bail!(
            "nothing fits the budget: the smallest plan needs {lo:.3} bits per weight ({} bytes) over the searched layers",
            (lo * mixed.numel as f64 / 8.0).ceil() as u64
        );
    };
    let greedy = mixed.greedy(budget);
    let lower = mixed.lower_bound(budget);
    let choices = mixed.explain(s, &sol);
    let (mut plan, summary) = mixed.plan(s, &sol, budget);
    plan.target = target;
    let front = mixed.front();
    // how far greedy lands from the best plan along the whole curve
    let gaps: Vec<(f64, f64, Option<f64>)> = front
        .iter()
        .map(|&(b, c)| {
            let g = mixed.greedy_path.cost_at(b);
            (b as f64 / mixed.numel.max(1) as f64, c, g)
        })
        .collect();
    let worse: Vec<f64> = gaps
        .iter()
        .filter_map(|(_, d, g)| {
            g.map(|g| {
                if *d > 0.0 {
                    g / d - 1.0
                } else if g > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let n_worse = worse.iter().filter(|&&r| r > 1e-9).count();
    let max_gap = worse.iter().copied().fold(0f64, f64::max);
    // each candidate on every searched layer (pins kept), to judge the plan against
    let uniform_plans = mixed.uniform_plans(s);
    let greedy_plan = greedy.as_ref().map(|g| mixed.plan(s, g, budget).0);
    // a transformer: summed per-layer KL is a model of the whole; the whole plans (searched, greedy and
    // each uniform candidate that fits) run on the calibration windows, and the lowest KL is kept. The
    // evaluation windows never choose.
    let budget_bpw = bits as f64 / mixed.numel as f64;
    let mut whole: Vec<(String, f64, EndToEnd)> = Vec::new();
    let mut kept: (String, Plan, quantscope::plan::SummaryFile) =
        ("searched plan".into(), plan.clone(), summary.clone());
    // without the end-to-end measure no cell ran the model, and per-layer errors do not add up to the
    // model's (they ranked a 4.5-bit plan of SmolLM2 below uniform NVFP4): the whole plans still run
    let unmeasured = match (&m.lm, a.m.no_end_to_end && is_transformer(m.model)) {
        (None, true) => calibration_pass(&a.m, m.model)?,
        _ => None,
    };
    if let Some(lm) = m.lm.as_ref().or(unmeasured.as_ref()) {
        let mut cands: Vec<(String, f64, Plan)> = vec![(
            "searched plan".into(),
            mixed.bits_per_weight(&sol),
            plan.clone(),
        )];
        if let (Some(g), Some(gp)) = (&greedy, &greedy_plan) {
            if g.choice != sol.choice {
                cands.push(("greedy plan".into(), mixed.bits_per_weight(g), gp.clone()));
            }
        }
        for (spec, bpw, p) in &uniform_plans {
            // a plan kept must load where it is meant to run
            let choices: Vec<(String, Choice)> = p
                .overrides
                .iter()
                .map(|(t, (c, _))| (t.clone(), c.clone()))
                .collect();
            if *bpw <= budget_bpw + 1e-9 && check(&choices, target).is_empty() {
                cands.push((format!("uniform {}", short(spec)), *bpw, p.clone()));
            }
        }
        let results = with_progress("whole plans", |p| {
            p.set_total(cands.len() as u64);
            cands
                .iter()
                .map(|(_, _, plan)| {
                    let r = lm.run_weights(&planned_weights(m.model, plan, false));
                    p.add(1);
                    r
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let best = (0..cands.len())
            .min_by(|&i, &j| results[i].kl.total_cmp(&results[j].kl))
            .expect("the searched plan is a candidate");
        if best != 0 {
            let (name, bpw, p) = &cands[best];
            kept = (
                name.clone(),
                p.clone(),
                quantscope::plan::SummaryFile {
                    bits_per_weight: *bpw,
                    bytes: (*bpw * mixed.numel as f64 / 8.0).ceil() as u64,
                },
            );
        }
        whole = cands
            .into_iter()
            .zip(results)
            .map(|((n, b, _), r)| (n, b, r))
            .collect();
    }
    if let Some(out) = &a.out {
        kept.1.save(out, m.model, Some(kept.2.clone()))?;
    }
    // a transformer: the plans on evaluation windows of the text
    let text_eval = if (s.baseline.is_some() || unmeasured.is_some()) && is_transformer(m.model) {
        Some(judge_on_text(
            &a,
            m.model,
            &plan,
            mixed.bits_per_weight(&sol),
            greedy_plan
                .as_ref()
                .zip(greedy.as_ref())
                .map(|(p, g)| (p, mixed.bits_per_weight(g))),
            &uniform_plans,
            bits as f64 / mixed.numel as f64,
        )?)
    } else {
        None
    };
    // judge on the held-out split when the model runs
    let held = match (
        s.baseline.is_some() && text_eval.is_none(),
        EvalSet::held_out(m.model),
    ) {
        (true, Ok(h)) => {
            let run = |p: &Plan| h.run(m.model, p);
            let uniform: Vec<(String, f64, EndToEnd)> = uniform_plans
                .iter()
                .filter_map(|(spec, bpw, p)| Some((spec.clone(), *bpw, run(p).ok()?)))
                .collect();
            Some((
                h.baseline,
                run(&plan)?,
                greedy_plan.map(|p| run(&p)).transpose()?,
                uniform,
                h.source.clone(),
            ))
        }
        _ => None,
    };
    if a.json {
        let layer_json = |l: &LayerChoice| {
            json!({"name": l.name, "spec": l.spec, "bits": l.bits, "bits_per_weight": l.bits_per_weight,
                   "cost": json_num(l.cost), "pinned": l.pinned, "excluded": l.excluded, "why": l.why})
        };
        let sol_json = |x: &Solution| {
            json!({"bits": x.bits, "bits_per_weight": mixed.bits_per_weight(x), "cost": json_num(x.cost),
                   "specs": x.choice.iter().enumerate().map(|(i, &j)| mixed.problem.items[i].options[j].label.clone()).collect::<Vec<_>>()})
        };
        return print_json(&json!({
            "model": m.model.source,
            "measure": measure.name(),
            "budget": {"bits": bits, "bits_per_weight": bits as f64 / mixed.numel as f64, "searched_weights": mixed.numel,
                       "feasible_bits_per_weight": [lo, hi]},
            "solver": {"unit_bits": mixed.dp.as_ref().map(|d| d.unit), "exact": mixed.exact(), "lower_bound": lower.map(json_num)},
            "plan": sol_json(&sol),
            "greedy": greedy.as_ref().map(sol_json),
            "greedy_gap": greedy.as_ref().map(|g| if sol.cost > 0.0 { json_num(g.cost / sol.cost - 1.0) } else { json!(0.0) }),
            "layers": choices.iter().map(layer_json).collect::<Vec<_>>(),
            "front": gaps.iter().map(|(b, d, g)| json!({"bits_per_weight": b, "cost": json_num(*d), "greedy_cost": g.map(json_num)})).collect::<Vec<_>>(),
            "front_greedy_worse": n_worse,
            "front_greedy_max_gap": json_num(max_gap),
            "evaluation": text_eval.as_ref().map(|t| t.json()),
            "whole_plans_on_calibration": whole.iter().map(|(n, b, e)| json!({"name": n, "bits_per_weight": b, "result": eval_json(e)})).collect::<Vec<_>>(),
            "kept": kept.0,
            "held_out": held.as_ref().map(|(b, p, g, u, src)| json!({
                "data": src,
                "float": {"accuracy": b.accuracy, "loss": b.loss},
                "plan": eval_json(p),
                "greedy": g.as_ref().map(eval_json),
                "uniform": u.iter().map(|(spec, bpw, e)| json!({"spec": spec, "bits_per_weight": bpw, "result": eval_json(e)})).collect::<Vec<_>>(),
            })),
            "out": a.out,
        }));
    }
    println!(
        "{} searched layers, {} weights; measure: {}",
        mixed.problem.items.len(),
        mixed.numel,
        measure.label()
    );
    println!(
        "budget {bits} bits = {:.3} bits per weight (plans range from {lo:.3} to {hi:.3})",
        bits as f64 / mixed.numel as f64
    );
    let w = choices.iter().map(|l| l.name.len()).max().unwrap_or(10);
    for l in &choices {
        println!(
            "{:<w$}  {:<22} {:>6.3}  {}",
            l.name,
            short(&l.spec),
            l.bits_per_weight,
            l.why
        );
    }
    println!(
        "\nsearched: {:.3} bits per weight, total cost {:.6}{}",
        mixed.bits_per_weight(&sol),
        sol.cost,
        match (&mixed.dp, lower) {
            (Some(d), _) if d.exact =>
                format!(" (optimal: sizes in units of {} bits, no rounding)", d.unit),
            (dp, lower) => {
                let how = match dp {
                    Some(d) => format!(
                        "the DP rounds sizes up to units of {} bits; the better of its plan and greedy's, \
                         improved layer by layer",
                        d.unit
                    ),
                    None => format!(
                        "{} layers are too many for the DP's table; greedy's plan, improved layer by layer",
                        mixed.problem.items.len()
                    ),
                };
                match lower {
                    Some(lb) if lb >= sol.cost * (1.0 - 1e-12) => {
                        format!(" ({how}; the lower bound gives the same cost: optimal)")
                    }
                    Some(lb) => format!(
                        " ({how}; proven: no plan within the budget is below {lb:.6}, {:.4} % under this one)",
                        100.0 * (1.0 - lb / sol.cost.max(f64::MIN_POSITIVE))
                    ),
                    None => format!(" ({how})"),
                }
            }
        }
    );
    match &greedy {
        Some(g) => println!(
            "greedy:     {:.3} bits per weight, total cost {:.6} ({})",
            mixed.bits_per_weight(g),
            g.cost,
            if g.cost <= sol.cost * (1.0 + 1e-9) {
                "the same cost as the searched plan".to_string()
            } else {
                format!(
                    "{:+.2} % above the searched plan",
                    100.0 * (g.cost / sol.cost - 1.0)
                )
            }
        ),
        None => println!("greedy:     found no plan within the budget"),
    }
    let best = if mixed.exact() {
        "optimum"
    } else {
        "best plan found"
    };
    println!(
        "trade-off curve: {} Pareto points; greedy misses the {best} at {n_worse} of them (worst {:+.2} %)",
        front.len(),
        100.0 * max_gap
    );
    if a.front {
        println!(
            "{:>10} {:>14} {:>14}",
            "bits/w",
            if mixed.exact() {
                "optimal cost"
            } else {
                "best cost"
            },
            "greedy cost"
        );
        for (b, d, g) in &gaps {
            println!(
                "{b:>10.3} {d:>14.6} {:>14}",
                g.map(|g| format!("{g:.6}")).unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Some((b, p, g, u, src)) = &held {
        println!("\non the {src}:");
        println!(
            "{:<28} {:>7} {:>9} {:>8} {:>9} {:>10}",
            "", "bits/w", "accuracy", "loss", "KL", "agreement"
        );
        println!(
            "{:<28} {:>7} {:>9.4} {:>8.4} {:>9} {:>10}",
            "float", "", b.accuracy, b.loss, "", ""
        );
        let line = |name: &str, bpw: f64, e: &EndToEnd| {
            println!(
                "{name:<28} {bpw:>7.3} {:>9.4} {:>8.4} {:>9.5} {:>10.4}",
                e.accuracy, e.loss, e.kl, e.agreement
            )
        };
        line("searched plan (DP)", mixed.bits_per_weight(&sol), p);
        if let (Some(ge), Some(gs)) = (g, &greedy) {
            line("greedy plan", mixed.bits_per_weight(gs), ge);
        }
        for (spec, bpw, e) in u {
            line(&format!("uniform {}", short(spec)), *bpw, e);
        }
    }
    if !whole.is_empty() {
        println!("\nwhole plans on the calibration windows (what chooses the plan kept):");
        println!(
            "{:<28} {:>7} {:>9} {:>10} {:>10}",
            "", "bits/w", "mean KL", "same top-1", "next-token"
        );
        for (n, b, e) in &whole {
            println!(
                "{n:<28} {b:>7.3} {:>9.4} {:>8.1} % {:>8.1} %{}",
                e.kl,
                100.0 * e.agreement,
                100.0 * e.accuracy,
                if *n == kept.0 { "  <- kept" } else { "" }
            );
        }
        if kept.0 != "searched plan" {
            println!(
                "the per-layer sum ranked the searched plan first, but as a whole the {} does better \
                 on the calibration windows: it is the plan kept",
                kept.0
            );
        }
    }
    if let Some(t) = &text_eval {
        t.print();
    }
    if let Some(out) = &a.out {
        println!("\nwrote the plan to {}", out.display());
    }
    Ok(())
}

/// Plans judged on a transformer's evaluation windows.
struct TextEval {
    describe: String,
    budget_bpw: f64,
    float_perplexity: f64,
    /// (name, bits per weight, comparison with float)
    rows: Vec<(String, f64, Comparison)>,
}

impl TextEval {
    fn json(&self) -> Value {
        json!({
            "text": self.describe,
            "budget_bits_per_weight": self.budget_bpw,
            "float_perplexity": self.float_perplexity,
            "plans": self.rows.iter().map(|(n, b, c)| json!({
                "name": n, "bits_per_weight": b, "fits_budget": *b <= self.budget_bpw + 1e-9,
                "perplexity": c.perplexity(), "mean_kl": c.mean_kl(), "same_top": c.top_agreement(),
            })).collect::<Vec<_>>(),
        })
    }

    fn print(&self) {
        println!("\njudged on {}", self.describe);
        println!(
            "{:<28} {:>7} {:>11} {:>9} {:>11}",
            "", "bits/w", "perplexity", "mean KL", "same top-1"
        );
        println!(
            "{:<28} {:>7} {:>11.3} {:>9} {:>11}",
            "float", "", self.float_perplexity, "0", "100 %"
        );
        for (name, bpw, c) in &self.rows {
            println!(
                "{name:<28} {bpw:>7.3} {:>11.3} {:>9.4} {:>9.1} %{}",
                c.perplexity(),
                c.mean_kl(),
                100.0 * c.top_agreement(),
                if *bpw > self.budget_bpw + 1e-9 {
                    "  (over the budget)"
                } else {
                    ""
                }
            );
        }
    }
}

fn judge_on_text(
    a: &SearchArgs,
    model: &Model,
    plan: &Plan,
    plan_bpw: f64,
    greedy: Option<(&Plan, f64)>,
    uniform: &[(String, f64, Plan)],
    budget_bpw: f64,
) -> anyhow::Result<TextEval> {
    let text = a.m.text.as_deref().map(read_text).transpose()?;
    let mut named: Vec<(String, f64, Plan)> =
        vec![("searched plan".into(), plan_bpw, plan.clone())];
    if let Some((g, b)) = greedy {
        named.push(("greedy plan".into(), b, g.clone()));
    }
    for (spec, bpw, p) in uniform {
        named.push((format!("uniform {}", short(spec)), *bpw, p.clone()));
    }
    let j = with_progress("judging", |p| {
        judge(model, &named, text.as_ref(), a.eval_ctx, a.eval_windows, p)
    })?;
    Ok(TextEval {
        describe: j.describe,
        budget_bpw,
        float_perplexity: j.float_perplexity,
        rows: j.rows,
    })
}
