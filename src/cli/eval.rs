use super::print_json;
use quantscope::model::Model;
use quantscope::nn::{dataset_bytes, evaluate, held_out, Network};
use quantscope::plan::{Choice, Plan};
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
    let quant = match &plan {
        Some(p) => Some(evaluate(&Network::from_model(&model, Some(p))?, &data)?),
        None => None,
    };
    if a.json {
        return print_json(&json!({
            "model": model.source, "examples": data.y.len(),
            "float": {"accuracy": float.0, "loss": float.1},
            "quantized": quant.map(|q| json!({"accuracy": q.0, "loss": q.1})),
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
            "quantized  accuracy {:.4}  loss {:.4}  ({:+.2} points)",
            q.0,
            q.1,
            100.0 * (q.0 - float.0)
        );
    }
    Ok(())
}
