//! `quantscope eval`: a runnable model end to end on held-out data (accuracy, or perplexity and KL for a
//! transformer), float or with its weights and inputs quantized by a spec or a plan.

use super::{print_json, with_progress};
use quantscope::activations::capture;
use quantscope::activations::ranges::{act_quantizers, Method};
use quantscope::model::Model;
use quantscope::nn::transformer::{is_transformer, Transformer};
use quantscope::nn::{dataset_bytes, evaluate, evaluate_with, held_out, Network, Weights};
use quantscope::plan::score::{score, Score};
use quantscope::plan::{Choice, Plan};
use quantscope::quant::Spec;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A runnable sample model (its metadata describes the network and its held-out split), or a
    /// transformer's Hugging Face folder (Llama family, Gemma 3, BERT).
    pub model: PathBuf,
    /// Quantize the weights with this plan file first.
    #[arg(long, conflicts_with = "spec")]
    pub plan: Option<PathBuf>,
    /// Quantize every weight with this spec first (e.g. int4:g16).
    #[arg(long)]
    pub spec: Option<String>,
    /// Quantize the input of every layer too, with this format (e.g. uint8 for W8A8), over a range
    /// calibrated on training rows.
    #[arg(long)]
    pub act: Option<String>,
    /// How the activation ranges are chosen: minmax, pP (e.g. p99.99), mse, kl, ema.
    #[arg(long, default_value = "minmax")]
    pub act_method: String,
    /// Calibration examples for the activation ranges.
    #[arg(long, default_value_t = 512)]
    pub calib_examples: usize,
    #[command(flatten)]
    pub text: super::TextArgs,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn plan_of(a: &EvalArgs, model: &Model) -> anyhow::Result<Option<Plan>> {
    Ok(match (&a.plan, &a.spec) {
        (Some(p), _) => Some(Plan::load(p, model)?),
        (None, Some(s)) => Some(Plan {
            default: Choice::parse(s).map_err(anyhow::Error::msg)?,
            ..Default::default()
        }),
        _ => None,
    })
}

/// A transformer: float and the plan on the evaluation windows of a text.
fn run_transformer(a: &EvalArgs, model: &Model, net: &Transformer) -> anyhow::Result<()> {
    if a.act.is_some() {
        anyhow::bail!("--act (activation quantization) runs on the sample models only, for now");
    }
    let split = a.text.split(model, net, 0, a.text.windows)?;
    let plan = plan_of(a, model)?;
    let what = a
        .spec
        .clone()
        .or(a.plan.as_ref().map(|p| format!("plan {}", p.display())))
        .unwrap_or("float".into());
    let s = with_progress("evaluating", |p| {
        score(model, net, plan.as_ref(), &split.evaluation, p)
    })?;
    let tied = net.head_is_embedding().then(|| net.embed.clone());
    if a.json {
        return print_json(&json!({
            "model": model.source, "model_type": net.config.model_type, "text": split.describe,
            "lm_head_is_embedding": tied, "quantized": what, "score": s,
        }));
    }
    println!(
        "{} ({}, {} blocks)",
        model.source.display(),
        net.config.model_type,
        net.blocks.len()
    );
    if let Some(e) = tied {
        println!(
            "the LM head is the embedding tensor {e} (tied): a plan for it is a plan for both"
        );
    }
    println!("text: {}", split.describe);
    match s {
        Score::NextToken {
            windows,
            comparison: c,
        } => {
            println!("{} positions in {windows} evaluation windows", c.positions);
            println!(
                "{:<28} {:>11} {:>10} {:>12}",
                "", "perplexity", "mean KL", "same top-1"
            );
            println!(
                "{:<28} {:>11.3} {:>10} {:>12}",
                "float",
                c.perplexity_reference(),
                "0",
                "100 %"
            );
            if plan.is_some() {
                println!(
                    "{:<28} {:>11.3} {:>10.4} {:>10.1} %",
                    what,
                    c.perplexity(),
                    c.mean_kl(),
                    100.0 * c.top_agreement()
                );
            }
        }
        Score::Embedding {
            windows,
            mean_cosine,
            min_cosine,
        } => {
            println!("{windows} evaluation windows: sentence embeddings (mean over tokens)");
            if plan.is_some() {
                println!("{what}: cosine to float, mean {mean_cosine:.6}, lowest {min_cosine:.6}");
            }
        }
    }
    Ok(())
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    if is_transformer(&model) {
        let net = Transformer::from_model(&model)?;
        return run_transformer(&a, &model, &net);
    }
    let data = held_out(&model, &dataset_bytes(&model)?)?;
    let float = evaluate(&Network::from_model(&model, None)?, &data)?;
    let plan = plan_of(&a, &model)?;
    let method = Method::parse(&a.act_method).map_err(anyhow::Error::msg)?;
    // calibration activations: for activation ranges and for round=adaround
    let cal = if plan.is_some() || a.act.is_some() {
        Some(capture(&model, a.calib_examples, 32)?)
    } else {
        None
    };
    let act = match (&a.act, &cal) {
        (Some(s), Some(cal)) => {
            let spec = Spec::parse(s)?;
            Some((s.clone(), act_quantizers(cal, &spec, method)?))
        }
        _ => None,
    };
    let quant = if plan.is_some() || act.is_some() {
        let weights = plan.as_ref().map(|p| p.with_calibration(cal.as_ref()));
        let net = Network::from_model(&model, weights.as_ref().map(|w| w as &dyn Weights))?;
        Some(evaluate_with(&net, &data, act.as_ref().map(|(_, q)| q))?)
    } else {
        None
    };
    let what = format!(
        "weights {}, activations {}",
        a.spec
            .clone()
            .or(a.plan.as_ref().map(|p| format!("plan {}", p.display())))
            .unwrap_or("float".into()),
        act.as_ref()
            .map(|(s, _)| format!("{s} ({} range)", method.name()))
            .unwrap_or("float".into())
    );
    if a.json {
        return print_json(&json!({
            "model": model.source, "examples": data.y.len(),
            "float": {"accuracy": float.0, "loss": float.1},
            "quantized": quant.map(|q| json!({"accuracy": q.0, "loss": q.1, "what": what})),
        }));
    }
    println!(
        "{} on {} held-out examples",
        model.source.display(),
        data.y.len()
    );
    println!("float      accuracy {:.4}  loss {:.4}", float.0, float.1);
    if let Some(q) = quant {
        println!(
            "quantized  accuracy {:.4}  loss {:.4}  ({:+.2} points)  [{what}]",
            q.0,
            q.1,
            100.0 * (q.0 - float.0)
        );
    }
    Ok(())
}
