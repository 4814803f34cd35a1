//! "Score on text": the Quantize tab's plan judged by the model's own output on the evaluation
//! windows of a text (`plan::score::score`), in a background job with progress and Cancel. The result
//! stays on screen, marked stale once the plan changes. Only transformers can be scored this way.

use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::nn::text::read_text;
use crate::nn::transformer::{is_transformer, Transformer};
use crate::nn::NnError;
use crate::plan::score::{score, windows, Score};
use crate::plan::Plan;
use egui::{RichText, Ui};
use std::sync::Arc;

/// A finished score and what it was for.
#[derive(Debug, Clone)]
pub struct Scored {
    pub score: Score,
    /// The plan it scored (its fingerprint tells whether the plan changed since).
    pub plan: Plan,
    pub fingerprint: u64,
    /// Where the evaluation windows came from, in words.
    pub text: String,
    pub seconds: f64,
}

enum Msg {
    Done(Box<Result<Scored, String>>),
}

/// The state of the "Score on text" strip.
pub struct ScoreOnText {
    /// A plain-text or JSONL file (empty: the bundled text).
    pub text_path: String,
    /// Evaluation windows and tokens per window.
    pub windows: usize,
    pub ctx: usize,
    pub result: Option<Scored>,
    /// The last error or cancellation, in words.
    pub status: String,
    /// Whether the open model can be scored, or why not.
    pub runnable: Result<(), String>,
    job: Option<Job<Msg>>,
    model_ptr: usize,
}

impl Default for ScoreOnText {
    fn default() -> Self {
        ScoreOnText {
            text_path: String::new(),
            windows: 16,
            ctx: 256,
            result: None,
            status: String::new(),
            runnable: Err("Open a model first".into()),
            job: None,
            model_ptr: 0,
        }
    }
}

/// Whether `model` can be scored on text: `Err` says why not.
pub fn scorable(model: &Model) -> Result<(), String> {
    if !is_transformer(model) {
        return Err(
            "Score on text runs transformers (a Hugging Face folder with config.json and \
             tokenizer.json: Llama family, Gemma 3, BERT); this model is not one"
                .into(),
        );
    }
    Transformer::from_model(model)
        .map(|_| ())
        .map_err(|e| format!("This transformer cannot run here: {e}"))
}

impl ScoreOnText {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Progress of the running score in [0, 1].
    pub fn progress(&self) -> f32 {
        self.job.as_ref().map_or(1.0, |j| j.progress.fraction())
    }

    /// Whether the shown result is for another plan than `plan`.
    pub fn stale(&self, plan: &Plan) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.fingerprint != plan.fingerprint())
    }

    pub fn cancel(&mut self) {
        if let Some(j) = self.job.take() {
            j.cancel();
            self.status = "Scoring cancelled.".into();
        }
    }

    /// Follow the open model (a new one clears the result) and read what the job sent; every frame.
    pub fn poll(&mut self, model: Option<&Arc<Model>>) {
        let ptr = model.map_or(0, |m| Arc::as_ptr(m) as usize);
        if ptr != self.model_ptr {
            self.model_ptr = ptr;
            self.job = None;
            self.result = None;
            self.status.clear();
            self.runnable = match model {
                Some(m) => scorable(m),
                None => Err("Open a model first".into()),
            };
        }
        let Some(job) = &mut self.job else { return };
        for m in job.poll() {
            let Msg::Done(r) = m;
            match *r {
                Ok(s) => {
                    self.result = Some(s);
                    self.status.clear();
                }
                Err(e) => self.status = e,
            }
        }
        if job.is_finished() {
            self.job = None;
        }
    }

    /// Score `plan` on `model` in the background.
    pub fn start(&mut self, model: Arc<Model>, plan: Plan, ctx: &egui::Context) {
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        let text = Some(self.text_path.trim().to_string()).filter(|t| !t.is_empty());
        let (n, tokens) = (self.windows.max(1), self.ctx);
        self.status.clear();
        // the person waits for this: the foreground pool, while background work (the workbench's
        // reports of other layers) steps aside; on the background pool it queued behind all of them
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::foreground_pool().install(|| {
                let r = score_on_text(&model, plan, text.as_deref(), tokens, n, w);
                w.send(Msg::Done(Box::new(r)));
            })
        }));
    }

    /// The strip: the button, its settings, progress and Cancel, and the result.
    pub fn ui(&mut self, ui: &mut Ui, model: Option<&Arc<Model>>, plan: &Plan) {
        self.poll(model);
        ui.horizontal_wrapped(|ui| {
            let ok = self.runnable.is_ok();
            let why = self.runnable.clone().err().unwrap_or_default();
            let b = ui
                .add_enabled(ok && !self.busy(), egui::Button::new("Score on text"))
                .on_hover_text(
                    "Run the model with float weights and with this plan's on the evaluation \
                     windows of a text and compare their outputs",
                )
                .on_disabled_hover_text(if ok { "Scoring…".to_string() } else { why });
            if b.clicked() {
                if let Some(m) = model {
                    self.start(m.clone(), plan.clone(), ui.ctx());
                }
            }
            ui.add_enabled_ui(ok, |ui| {
                let l = ui.label("windows");
                ui.add(egui::DragValue::new(&mut self.windows).range(1..=256))
                    .labelled_by(l.id)
                    .on_hover_text("How many evaluation windows (from the text's second half)");
                let l = ui.label("× tokens");
                ui.add(egui::DragValue::new(&mut self.ctx).range(8..=4096))
                    .labelled_by(l.id)
                    .on_hover_text("Tokens per window (at most the model's positions)");
                let l = ui.label("text");
                ui.add(
                    egui::TextEdit::singleline(&mut self.text_path)
                        .hint_text("the bundled English text")
                        .desired_width(170.0),
                )
                .labelled_by(l.id)
                .on_hover_text("A plain-text or JSONL (a 'text' field per line) file");
            });
            if self.busy() {
                // progress moves without messages: look again soon
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(250));
                let (done, total) = self.job.as_ref().map_or((0, 0), |j| j.progress.counts());
                let text = if total > 0 {
                    format!("scoring: {done} of {total}")
                } else {
                    "scoring: reading the text…".into()
                };
                ui.add(
                    egui::ProgressBar::new(self.progress())
                        .desired_width(180.0)
                        .text(text),
                );
                if ui.button("Cancel").on_hover_text("Stop scoring").clicked() {
                    self.cancel();
                }
            }
            ui.separator();
            if !self.status.is_empty() {
                let color = if self.status.ends_with("cancelled.") {
                    ui.visuals().weak_text_color()
                } else {
                    ui.visuals().error_fg_color
                };
                ui.colored_label(color, &self.status);
            }
            // while a new score runs, the progress bar stands where the last result was
            let shown = self.result.as_ref().filter(|_| !self.busy());
            if let Some(r) = shown {
                let stale = self.stale(plan);
                if stale {
                    ui.label(
                        RichText::new("stale: the plan changed")
                            .color(ui.visuals().warn_fg_color),
                    )
                    .on_hover_text("The numbers are for the plan as it was: press Score on text to score it as it is now");
                }
                let mut text = RichText::new(summary(&r.score));
                text = if stale { text.weak() } else { text.strong() };
                ui.label(text).on_hover_text(format!(
                    "{} windows of the evaluation text, float weights against the plan's.\n{}\nPlan: default {}; scored in {:.1} s",
                    windows_of(&r.score),
                    r.text,
                    r.plan.default.text(),
                    r.seconds
                ));
            } else if self.result.is_none()
                && self.status.is_empty()
                && !self.busy()
                && self.runnable.is_ok()
            {
                ui.label(RichText::new("not scored yet").weak());
            }
        });
    }
}

fn windows_of(s: &Score) -> usize {
    match s {
        Score::NextToken { windows, .. } | Score::Embedding { windows, .. } => *windows,
    }
}

/// The score in one line, as the strip shows it.
pub fn summary(s: &Score) -> String {
    match s {
        Score::NextToken { comparison: c, .. } => format!(
            "perplexity: float {:.3}, plan {:.3} ({:+.1} %) · mean KL {:.4} · same top-1 {:.1} %",
            c.perplexity_reference(),
            c.perplexity(),
            100.0 * (c.perplexity() / c.perplexity_reference() - 1.0),
            c.mean_kl(),
            100.0 * c.top_agreement()
        ),
        Score::Embedding {
            mean_cosine,
            min_cosine,
            ..
        } => format!("embedding cosine to float: mean {mean_cosine:.5}, lowest {min_cosine:.5}"),
    }
}

/// Score `plan` on the evaluation windows of `text` (the bundled text when `None`).
fn score_on_text(
    model: &Model,
    plan: Plan,
    text: Option<&str>,
    ctx: usize,
    n: usize,
    w: &Worker<Msg>,
) -> Result<Scored, String> {
    let start = std::time::Instant::now();
    let run = || -> Result<(Score, String), NnError> {
        let net = Transformer::from_model(model)?;
        let text = text
            .map(|p| read_text(std::path::Path::new(p)))
            .transpose()?;
        let split = windows(model, &net, text.as_ref(), ctx, 0, n)?;
        let s = score(model, &net, Some(&plan), &split.evaluation, &w.progress)?;
        Ok((s, split.describe))
    };
    match run() {
        Ok((score, text)) => Ok(Scored {
            score,
            fingerprint: plan.fingerprint(),
            plan,
            text,
            seconds: start.elapsed().as_secs_f64(),
        }),
        Err(NnError::Cancelled) => Err("Scoring cancelled.".into()),
        Err(e) => Err(e.to_string()),
    }
}
