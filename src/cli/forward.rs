//! `quantscope forward`: one forward pass of a transformer on a text or on token ids, written to a
//! safetensors file (the ids and the logits, or an encoder's hidden states and pooled embedding), so
//! other tools (`tools/oracle_lm.py`) can compare it with theirs.

use quantscope::model::{write_safetensors, Model, TensorEntry};
use quantscope::nn::text::TextTokenizer;
use quantscope::nn::transformer::{mean_pool, model_dir, ModelWeights, Quiet, Transformer};
use safetensors::Dtype;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    /// A Hugging Face model folder (config.json, safetensors, tokenizer.json).
    pub model: PathBuf,
    /// The text to run (tokenized by the model's tokenizer.json, special tokens added).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    pub text: Option<String>,
    /// Token ids to run, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// Where to write: `ids` (I64) and `logits` (F32 [tokens, vocab]); for an encoder `hidden`
    /// (F32 [tokens, hidden]) and `embedding` (F32 [hidden], mean over tokens).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ForwardArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    let net = Transformer::from_model(&model)?;
    let ids = match (&a.ids, &a.text) {
        (Some(ids), _) => ids.clone(),
        (None, Some(t)) => TextTokenizer::from_dir(&model_dir(&model))?.encode(t)?,
        (None, None) => anyhow::bail!("give --text or --ids"),
    };
    let weights = ModelWeights::new(&model, false);
    let seqs = vec![ids];
    let y = net.forward(&weights, &seqs, &mut Quiet)?;
    let (rows, cols) = y.dim();
    // an encoder's sentence embedding, pooled before the matrix is flattened
    let pooled = (!net.config.is_decoder()).then(|| mean_pool(&y, &[rows]).remove(0));
    let y = y.into_raw_vec_and_offset().0;
    let id_bytes: Vec<u8> = seqs[0]
        .iter()
        .flat_map(|&i| (i as i64).to_le_bytes())
        .collect();
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut entries = vec![TensorEntry {
        name: "ids".into(),
        dtype: Dtype::I64,
        shape: vec![rows],
    }];
    let mut data = vec![id_bytes];
    if let Some(pooled) = pooled {
        entries.push(TensorEntry {
            name: "hidden".into(),
            dtype: Dtype::F32,
            shape: vec![rows, cols],
        });
        data.push(f32s(&y));
        entries.push(TensorEntry {
            name: "embedding".into(),
            dtype: Dtype::F32,
            shape: vec![cols],
        });
        data.push(f32s(&pooled));
    } else {
        entries.push(TensorEntry {
            name: "logits".into(),
            dtype: Dtype::F32,
            shape: vec![rows, cols],
        });
        data.push(f32s(&y));
    }
    write_safetensors(&a.out, None, &entries, |i| Ok(std::mem::take(&mut data[i])))?;
    println!(
        "{} tokens through {} ({} blocks) → {}",
        rows,
        net.config.model_type,
        net.blocks.len(),
        a.out.display()
    );
    Ok(())
}
