//! Text for language models: the model's own tokenizer (Hugging Face's `tokenizers` reading
//! `tokenizer.json`), text files (plain, or JSONL with a `text` field), the default English text that
//! ships in the binary, and its split into calibration and evaluation windows that never overlap.

use super::NnError;
use std::io::Read;
use std::path::Path;

/// A model's tokenizer, and the special tokens it puts around a text (a BOS, BERT's [CLS] … [SEP]).
pub struct TextTokenizer {
    /// Without padding (a text is run as it is), with the file's truncation.
    tok: tokenizers::Tokenizer,
    /// The same tokenizer without truncation or padding, for long texts.
    plain: tokenizers::Tokenizer,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

fn tok_err(path: &Path) -> impl Fn(tokenizers::Error) -> NnError + '_ {
    move |e| NnError::Data(format!("{}: {e}", path.display()))
}

impl TextTokenizer {
    /// Read `tokenizer.json` from a model folder.
    pub fn from_dir(dir: &Path) -> Result<TextTokenizer, NnError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(NnError::Data(format!(
                "{} is missing: a language model needs its tokenizer",
                path.display()
            )));
        }
        let mut tok = tokenizers::Tokenizer::from_file(&path).map_err(tok_err(&path))?;
        tok.with_padding(None);
        let mut plain = tok.clone();
        plain
            .with_truncation(None)
            .map_err(tok_err(&path))?
            .with_padding(None);
        let probe = "a";
        let with = tok.encode(probe, true).map_err(tok_err(&path))?;
        let without = tok.encode(probe, false).map_err(tok_err(&path))?;
        let (w, wo) = (with.get_ids(), without.get_ids());
        let at = (0..=w.len().saturating_sub(wo.len()))
            .find(|&i| w[i..].starts_with(wo))
            .unwrap_or(0);
        Ok(TextTokenizer {
            prefix: w[..at].to_vec(),
            suffix: w[(at + wo.len()).min(w.len())..].to_vec(),
            tok,
            plain,
        })
    }

    /// Token ids of `text` as the tokenizer gives them (special tokens added, the file's truncation, no
    /// padding: the Python package's `Tokenizer.from_file(f)`, `.no_padding()`, `.encode(text)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, NnError> {
        Ok(self
            .tok
            .encode(text, true)
            .map_err(|e| NnError::Data(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of a long text, without special tokens, truncation or padding.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, NnError> {
        Ok(self
            .plain
            .encode(text, false)
            .map_err(|e| NnError::Data(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tok.decode(ids, false).unwrap_or_default()
    }

    /// The special tokens put before a text (a BOS).
    pub fn prefix(&self) -> &[u32] {
        &self.prefix
    }

    /// The special tokens put after a text (BERT's [SEP]).
    pub fn suffix(&self) -> &[u32] {
        &self.suffix
    }
}

/// Where a text came from, for every output that uses it.
#[derive(Debug, Clone)]
pub struct Text {
    pub source: String,
    pub body: String,
}

/// The default text compiled into the binary (source and licence: `assets/text/README.md`).
const DEFAULT_GZ: &[u8] = include_bytes!("../../assets/text/default_en.txt.gz");

/// The default English text.
pub fn default_text() -> Text {
    let mut body = String::new();
    flate2::read::GzDecoder::new(DEFAULT_GZ)
        .read_to_string(&mut body)
        .expect("the bundled text is valid gzip UTF-8");
    Text {
        source: "the bundled English text (assets/text/README.md)".into(),
        body,
    }
}

/// Read a text file: plain text, or JSONL (a `.jsonl` name, or a first line that is a JSON object)
/// whose lines' `text` fields are joined by blank lines.
pub fn read_text(path: &Path) -> Result<Text, NnError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| NnError::Data(format!("{}: {e}", path.display())))?;
    let first = raw.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let jsonl = path.extension().is_some_and(|e| e == "jsonl")
        || serde_json::from_str::<serde_json::Value>(first).is_ok_and(|v| v.is_object());
    let body = if jsonl {
        let mut parts = Vec::new();
        for (i, line) in raw
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| NnError::Data(format!("{} line {}: {e}", path.display(), i + 1)))?;
            match v.get("text").and_then(|t| t.as_str()) {
                Some(t) => parts.push(t.to_string()),
                None => {
                    return Err(NnError::Data(format!(
                        "{} line {}: no string field 'text'",
                        path.display(),
                        i + 1
                    )))
                }
            }
        }
        parts.join("\n\n")
    } else {
        raw
    };
    if body.trim().is_empty() {
        return Err(NnError::Data(format!("{} holds no text", path.display())));
    }
    Ok(Text {
        source: path.display().to_string(),
        body,
    })
}

/// Token windows for calibration and evaluation, and a sentence saying where they came from.
#[derive(Debug, Clone)]
pub struct Split {
    pub calibration: Vec<Vec<u32>>,
    pub evaluation: Vec<Vec<u32>>,
    pub describe: String,
}

/// Cut a text's tokens into windows of `ctx` tokens (the tokenizer's prefix and suffix around text),
/// the first half of the windows for calibration and the second half for evaluation, so the two never
/// share a token; take up to `calib` and `eval` windows from the start of each half.
pub fn split(
    tok: &TextTokenizer,
    text: &Text,
    ctx: usize,
    calib: usize,
    eval: usize,
) -> Result<Split, NnError> {
    let ids = tok.encode_plain(&text.body)?;
    let (prefix, suffix) = (tok.prefix(), tok.suffix());
    if ctx <= prefix.len() + suffix.len() + 1 {
        return Err(NnError::Data(format!(
            "windows of {ctx} tokens are too short"
        )));
    }
    let step = ctx - prefix.len() - suffix.len();
    let n = ids.len() / step;
    if n < 2 {
        return Err(NnError::Data(format!(
            "{} has {} tokens: too few for one calibration and one evaluation window of {ctx}",
            text.source,
            ids.len()
        )));
    }
    let window = |w: usize| -> Vec<u32> {
        prefix
            .iter()
            .chain(&ids[w * step..(w + 1) * step])
            .chain(suffix)
            .copied()
            .collect()
    };
    let half = n / 2;
    let c = calib.min(half);
    let e = eval.min(n - half);
    let span = |from: usize, k: usize| {
        if k == 0 {
            "none".to_string()
        } else {
            format!("text tokens {}–{}", from * step, (from + k) * step - 1)
        }
    };
    Ok(Split {
        calibration: (0..c).map(window).collect(),
        evaluation: (half..half + e).map(window).collect(),
        describe: format!(
            "{}: {} tokens in {n} windows of {ctx}; calibration {c} windows ({}), evaluation {e} \
             windows ({}); they do not overlap",
            text.source,
            ids.len(),
            span(0, c),
            span(half, e)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_joins_the_text_fields_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n").unwrap();
        assert_eq!(read_text(&p).unwrap().body, "one\n\ntwo");
        std::fs::write(&p, "{\"text\": \"one\"}\n{\"body\": 1}\n").unwrap();
        let e = read_text(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("'text'"), "{e}");
    }

    #[test]
    fn the_default_text_is_there() {
        assert!(default_text().body.len() > 100_000);
    }
}
