use super::print_json;
use quantscope::activations::capture;
use quantscope::activations::ranges::{act_quantizers, Method};
use quantscope::model::Model;
use quantscope::nn::{dataset_bytes, evaluate, evaluate_with, held_out, Network, Weights};
use quantscope::plan::{Choice, Plan};
use quantscope::quant::Spec;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A runnable sample model (its metadata describes the network and its held-out split).
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
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    let data = held_out(&model, &dataset_bytes(&model)?)?;
    let float = evaluate(&Network::from_model(&model, None)?, &data)?;
    let plan = match (&a.plan, &a.spec) {
        (Some(p), _) => Some(Plan::load(p, &model)?),
        (None, Some(s)) => Some(Plan {
            default: Choice::parse(s).map_err(anyhow::Error::msg)?,
            ..Default::default()
        }),
        _ => None,
    };
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
