//! The workbench's report scheduler: what the view needs (every layer's report under the plan, the
//! selected layer's candidates and clip lines, the chosen group's histogram, a sample model's held-out
//! accuracy), the jobs that ask the engine for it, and the caches they fill. The selected layer under
//! its current spec has a job of its own on the foreground pool; the rest runs on the background
//! pool. No egui here: a job wakes whoever asked through a closure, so it is tested without a window.

use super::lru::ByteLru;
use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::plan::editor::editable;
use crate::plan::score::{has_held_out, held_out_accuracy, HeldOutAccuracy};
use crate::plan::{Choice, Plan};
use crate::quant::report::{
    clip_lines_key, clip_lines_until, layer_report_with, original_histogram, ClipBasis, ClipLines,
    LayerReport,
};
use crate::quant::Spec;
use crate::stats::Histogram;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

/// Bins of a report's histograms, as the workbench draws them.
pub const BINS: usize = 96;
/// Bins of one group's histogram.
const GROUP_BINS: usize = 64;
/// How much memory the cached reports and clip lines may hold beyond what the view needs now.
pub const DEFAULT_BUDGET: usize = 512 << 20;

/// (tensor, spec)
pub type Key = (usize, Spec);
/// An item of a job's list: a report (tensor, spec), or with `true` clip lines (tensor, clip key).
type Item = (Key, bool);
/// (tensor, spec, group)
type GroupKey = (usize, Spec, usize);
/// Called by a job with each result and when it ends (the window asks for a repaint).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What the view shows now.
pub struct Wants<'a> {
    pub plan: &'a Plan,
    /// The plan as JSON: the held-out accuracy is of this plan.
    pub plan_sig: &'a str,
    /// Tensor index of the selected layer.
    pub selected: Option<usize>,
    /// The group of the selected layer whose own histogram is drawn.
    pub group: usize,
    /// Spec texts compared on the selected layer (those that do not parse are skipped).
    pub candidates: &'a [String],
}

/// The resolved spec of tensor `t` under `plan` (None: kept as it is).
pub fn spec_of(plan: &Plan, model: &Model, t: usize) -> Option<Spec> {
    let info = &model.tensors[t];
    match plan.resolve(&info.name, info.quantizable()).0 {
        Choice::Quantize(s) => Some(s),
        Choice::Keep => None,
    }
}

/// One tensor's values and original histogram, kept between jobs (one tensor at a time, the last one
/// a job read), so a spec toggle neither reads nor histograms the tensor again.
struct TensorCache {
    model: String,
    t: usize,
    x: Arc<Vec<f32>>,
    original: Option<Histogram>,
    /// what its clip lines need from the values, for any format
    clip_basis: Arc<ClipBasis>,
}

type SharedTensor = Arc<std::sync::Mutex<Option<TensorCache>>>;

enum Msg {
    Report(Key, Arc<LayerReport>),
    Clip(Key, Arc<ClipLines>),
    Failed(Key, String),
}

enum Cached {
    Report(Arc<LayerReport>),
    Clip(Arc<ClipLines>),
}

/// The jobs and caches behind the workbench. Reports and clip lines live in an LRU cache by bytes:
/// what the view needs now always stays, and what it needed longest ago goes first once the cache is
/// over its budget.
pub struct Reports {
    /// The model last followed (weak: a new model is never taken for it at a reused address).
    model: Weak<Model>,
    /// The model the caches belong to (its fingerprint).
    model_id: String,
    /// The model's editable tensors, in the order the view lists them.
    listed: Vec<usize>,
    cache: ByteLru<Item, Cached>,
    failures: HashMap<Key, String>,
    /// The background job, what it was asked to compute (in order) and how many items it has sent:
    /// a plan change restarts it only when it does not cover what is needed first.
    job: Option<Job<Msg>>,
    job_wants: Vec<Item>,
    job_done: usize,
    /// The selected layer's report under its current spec and its clip lines: what a spec toggle
    /// changes and the person is waiting for, never queued behind the background list.
    front_job: Option<Job<Msg>>,
    front_wants: (Option<Key>, Option<Key>),
    group_job: Option<Job<(GroupKey, Histogram)>>,
    group_hist: Option<(GroupKey, Histogram)>,
    acc_job: Option<Job<(String, HeldOutAccuracy)>>,
    /// (plan signature, accuracy) for runnable sample models.
    accuracy: Option<(String, HeldOutAccuracy)>,
    tensor_cache: SharedTensor,
}

impl Default for Reports {
    fn default() -> Self {
        Reports::new(DEFAULT_BUDGET)
    }
}

impl Reports {
    /// A scheduler whose caches keep at most `budget` bytes beyond what the view needs now.
    pub fn new(budget: usize) -> Self {
        Reports {
            model: Weak::new(),
            model_id: String::new(),
            listed: Vec::new(),
            cache: ByteLru::new(budget),
            failures: HashMap::new(),
            job: None,
            job_wants: Vec::new(),
            job_done: 0,
            front_job: None,
            front_wants: (None, None),
            group_job: None,
            group_hist: None,
            acc_job: None,
            accuracy: None,
            tensor_cache: SharedTensor::default(),
        }
    }

    /// Follow `model`; true when it is another model than before (nothing cached applies then).
    pub fn set_model(&mut self, model: &Arc<Model>) -> bool {
        if std::ptr::eq(self.model.as_ptr(), Arc::as_ptr(model)) {
            return false;
        }
        self.model = Arc::downgrade(model);
        let id = model.header_fingerprint();
        if id == self.model_id {
            return false;
        }
        self.model_id = id;
        self.listed = editable(model);
        self.cache.clear();
        self.failures.clear();
        self.job = None;
        self.front_job = None;
        self.group_job = None;
        self.group_hist = None;
        self.acc_job = None;
        self.accuracy = None;
        if let Ok(mut c) = self.tensor_cache.lock() {
            *c = None;
        }
        // the reusable output buffers were sized for the last model's tensors
        crate::quant::buffers::release();
        true
    }

    /// The fingerprint of the model the caches belong to.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model's editable tensors in list order.
    pub fn listed(&self) -> &[usize] {
        &self.listed
    }

    pub fn report(&self, t: usize, spec: &Spec) -> Option<&Arc<LayerReport>> {
        match self.cache.get(&((t, *spec), false)) {
            Some(Cached::Report(r)) => Some(r),
            _ => None,
        }
    }

    /// The clip lines drawn for tensor `t` under `spec`, once computed.
    pub fn clip_lines(&self, t: usize, spec: &Spec) -> Option<&Arc<ClipLines>> {
        match self.cache.get(&((t, clip_lines_key(spec)), true)) {
            Some(Cached::Clip(c)) => Some(c),
            _ => None,
        }
    }

    /// Why tensor `t`'s report under `spec` could not be made.
    pub fn failure(&self, t: usize, spec: &Spec) -> Option<&str> {
        self.failures.get(&(t, *spec)).map(String::as_str)
    }

    /// Group `g`'s own histogram of tensor `t` under `spec`, once computed.
    pub fn group_histogram(&self, t: usize, spec: &Spec, g: usize) -> Option<&Histogram> {
        self.group_hist
            .as_ref()
            .filter(|(k, _)| *k == (t, *spec, g))
            .map(|(_, h)| h)
    }

    /// The last held-out accuracy computed, with the signature of its plan.
    pub fn accuracy(&self) -> Option<&(String, HeldOutAccuracy)> {
        self.accuracy.as_ref()
    }

    /// Whether the selected layer's report or clip lines under its current spec are being computed.
    pub fn front_busy(&self) -> bool {
        self.front_job.is_some()
    }

    /// Cached reports and clip lines.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// About the memory the cached reports and clip lines hold.
    pub fn heap_bytes(&self) -> usize {
        self.cache.bytes()
    }

    fn keep(&mut self, m: Msg) {
        match m {
            Msg::Report(k, r) => {
                let bytes = r.heap_bytes();
                self.cache.insert((k, false), Cached::Report(r), bytes);
            }
            Msg::Clip(k, c) => {
                let bytes = c.heap_bytes();
                self.cache.insert((k, true), Cached::Clip(c), bytes);
            }
            Msg::Failed(k, e) => {
                self.failures.insert(k, e);
            }
        }
    }

    /// Everything the view needs, the selected layer first: its report, the candidates' reports and
    /// clip lines (so that choosing one shows both at once), the clip lines one bit either side, then
    /// the other layers' reports. Marks all of it (and the selected spec's clip lines, the front job's)
    /// as needed now in the cache; returns what is neither cached nor failed.
    fn wanted(&mut self, model: &Model, w: &Wants) -> Vec<Item> {
        let mut all: Vec<Item> = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |k: Key, clip: bool, all: &mut Vec<Item>| {
            if seen.insert((k, clip)) {
                all.push((k, clip));
            }
        };
        if let Some(t) = w.selected {
            let own = spec_of(w.plan, model, t);
            if let Some(s) = &own {
                push((t, *s), false, &mut all);
            }
            let own_lines = own.as_ref().map(clip_lines_key);
            for s in w.candidates.iter().filter_map(|c| Spec::parse(c).ok()) {
                push((t, s), false, &mut all);
                let key = clip_lines_key(&s);
                if own_lines.as_ref() != Some(&key) {
                    push((t, key), true, &mut all);
                }
            }
            // the clip lines one bit either side of the selected integer format: the likeliest next
            // edit (a clip method of its own shares the format's lines)
            if let Some(s) = &own {
                for n in bits_either_side(s) {
                    push((t, clip_lines_key(&n)), true, &mut all);
                }
            }
            if let Some(k) = own_lines {
                self.cache.touch(&((t, k), true));
            }
        }
        for &t in &self.listed {
            if let Some(s) = spec_of(w.plan, model, t) {
                push((t, s), false, &mut all);
            }
        }
        all.retain(|i| !self.cache.touch(i) && !self.failures.contains_key(&i.0));
        all
    }

    /// Keep the jobs working on what the view needs now; called every frame. Returns whether a job
    /// is still at work (the caller then looks again within a second, in case a wake was missed).
    pub fn schedule(&mut self, model: &Arc<Model>, w: &Wants, wake: &Wake) -> bool {
        let mut messages = Vec::new();
        if let Some(job) = &mut self.front_job {
            messages.extend(job.poll());
            if job.is_finished() {
                self.front_job = None;
            }
        }
        if let Some(job) = &mut self.job {
            let m = job.poll();
            self.job_done += m.len();
            messages.extend(m);
            if job.is_finished() {
                self.job = None;
            }
        }
        for m in messages {
            self.keep(m);
        }
        if let Some(job) = &mut self.group_job {
            if let Some(h) = job.poll().pop() {
                self.group_hist = Some(h);
            }
            if job.is_finished() {
                self.group_job = None;
            }
        }
        self.schedule_accuracy(model, w, wake);
        self.cache.next_round();
        let mut wanted = self.wanted(model, w);
        self.schedule_group(model, w, wake);
        let own = w
            .selected
            .and_then(|t| spec_of(w.plan, model, t).map(|s| (t, s)));
        let clip_needed = own
            .map(|(t, s)| (t, clip_lines_key(&s)))
            .filter(|k| !self.cache.contains_key(&(*k, true)));
        // the selected layer under its current spec goes to the front job
        let front_key = own.filter(|k| wanted.first().is_some_and(|w| w.0 == *k && !w.1));
        if front_key.is_some() {
            wanted.remove(0);
        }
        let front = (front_key, clip_needed);
        // the running front job covers what is needed if it computes the same report (or has sent
        // its report already and none is needed) and the same clip lines: once the report is in, the
        // job goes on to the clip lines, and restarting it there would compute them twice at once
        let sent = |k: &Key| self.cache.contains_key(&(*k, false)) || self.failures.contains_key(k);
        let covers = match &front.0 {
            Some(k) => self.front_wants.0.as_ref() == Some(k),
            None => self.front_wants.0.as_ref().is_none_or(sent),
        } && front
            .1
            .as_ref()
            .is_none_or(|c| self.front_wants.1.as_ref() == Some(c));
        if (front.0.is_some() || front.1.is_some()) && (self.front_job.is_none() || !covers) {
            self.front_wants = front;
            let model = model.clone();
            let cache = (self.model_id.clone(), self.tensor_cache.clone());
            let (key, clip) = front;
            self.front_job = Some(Job::spawn(wake.clone(), move |w: &Worker<Msg>| {
                let items = key.map(|k| (k, false)).into_iter();
                let items = items.chain(clip.map(|c| (c, true))).collect();
                crate::jobs::foreground_pool().install(|| compute(&model, &cache, items, w))
            }));
        }
        if wanted.is_empty() {
            return self.front_job.is_some();
        }
        // restart only when the running job does not cover what is needed first (the selection or the
        // plan moved on); it computes its list in order, so it serves the front of `wanted` only if
        // that is the item it is on now
        let covers_front = wanted
            .first()
            .is_none_or(|k| self.job_wants.get(self.job_done) == Some(k));
        if self.job.is_none() || !covers_front {
            self.job_wants = wanted.clone();
            self.job_done = 0;
            let model = model.clone();
            let cache = (self.model_id.clone(), self.tensor_cache.clone());
            self.job = Some(Job::spawn(wake.clone(), move |w: &Worker<Msg>| {
                crate::jobs::background_pool().install(|| compute(&model, &cache, wanted, w))
            }));
        }
        true
    }

    /// The chosen group's own histogram, once the selected layer's report (with more than one group)
    /// is in.
    fn schedule_group(&mut self, model: &Arc<Model>, w: &Wants, wake: &Wake) {
        let Some(t) = w.selected else { return };
        let Some(spec) = spec_of(w.plan, model, t) else {
            return;
        };
        let Some(r) = self.report(t, &spec).filter(|r| r.groups > 1).cloned() else {
            return;
        };
        let g = w.group.min(r.groups - 1);
        let key = (t, spec, g);
        if self.group_histogram(t, &spec, g).is_some() || self.group_job.is_some() {
            return;
        }
        let model = model.clone();
        self.group_job = Some(Job::spawn(wake.clone(), move |w| {
            let info = &model.tensors[t];
            if let Ok(x) = model.read_f32(info) {
                let values = r.group_values(&x, info.channels().1, g);
                w.send((key, crate::stats::histogram(values, GROUP_BINS, None)));
            }
        }));
    }

    /// For a runnable sample model, its held-out accuracy under the plan (a small background job).
    fn schedule_accuracy(&mut self, model: &Arc<Model>, w: &Wants, wake: &Wake) {
        if !has_held_out(model) {
            return;
        }
        if let Some(job) = &mut self.acc_job {
            if let Some(a) = job.poll().pop() {
                self.accuracy = Some(a);
            }
            if job.is_finished() {
                self.acc_job = None;
            }
        }
        let current = self.accuracy.as_ref().is_some_and(|a| a.0 == w.plan_sig);
        if current || self.acc_job.is_some() {
            return;
        }
        let (model, plan, sig) = (model.clone(), w.plan.clone(), w.plan_sig.to_string());
        self.acc_job = Some(Job::spawn(wake.clone(), move |w| {
            if let Ok(a) = held_out_accuracy(&model, &plan) {
                w.send((sig, a));
            }
        }));
    }
}

/// `s` with one bit fewer and one more (int and uint, 2–8 bits), for prefetching.
fn bits_either_side(s: &Spec) -> Vec<Spec> {
    use crate::quant::Family;
    let (bits, family): (u32, fn(u32) -> Family) = match s.family {
        Family::Int(b) => (b, Family::Int),
        Family::Uint(b) => (b, Family::Uint),
        _ => return Vec::new(),
    };
    [bits.saturating_sub(1), bits + 1]
        .into_iter()
        .filter(|n| (2..=8).contains(n))
        .map(|n| Spec {
            family: family(n),
            ..*s
        })
        .collect()
}

/// A job's work: the reports and clip lines of its items, in order. Reads each tensor once for all
/// its items, and keeps the first one it read (with its original histogram and clip basis) for the
/// next job: a spec toggle on the same layer starts quantizing at once.
fn compute(
    model: &Model,
    (model_id, cache): &(String, SharedTensor),
    items: Vec<Item>,
    w: &Worker<Msg>,
) {
    w.progress.set_total(items.len() as u64);
    let cached = |t: usize| -> Option<Arc<Vec<f32>>> {
        let c = cache.lock().ok()?;
        c.as_ref()
            .filter(|c| c.t == t && &c.model == model_id)
            .map(|c| c.x.clone())
    };
    // the job's first tensor is the selected layer's: it goes to the shared cache; the others (the
    // rest of the model's layers) are kept only while this job works on them
    let first = items.first().map(|i| i.0 .0);
    let mut current: Option<(usize, Arc<Vec<f32>>)> = None;
    let mut data = |t: usize| -> Result<Arc<Vec<f32>>, String> {
        if let Some(x) = cached(t) {
            return Ok(x);
        }
        if let Some((ct, x)) = &current {
            if *ct == t {
                return Ok(x.clone());
            }
        }
        let x = Arc::new(
            model
                .read_f32(&model.tensors[t])
                .map_err(|e| e.to_string())?,
        );
        model.release(&model.tensors[t]);
        if Some(t) == first {
            if let Ok(mut c) = cache.lock() {
                *c = Some(TensorCache {
                    model: model_id.clone(),
                    t,
                    x: x.clone(),
                    original: None,
                    clip_basis: Arc::default(),
                });
            }
        } else {
            current = Some((t, x.clone()));
        }
        Ok(x)
    };
    // the original histogram of tensor t (cached with its values)
    let original = |t: usize, x: &[f32]| -> Histogram {
        if let Ok(c) = cache.lock() {
            if let Some(h) = c
                .as_ref()
                .filter(|c| c.t == t && &c.model == model_id)
                .and_then(|c| c.original.clone())
            {
                return h;
            }
        }
        let h = original_histogram(x, BINS);
        if let Ok(mut c) = cache.lock() {
            if let Some(c) = c.as_mut().filter(|c| c.t == t && &c.model == model_id) {
                c.original = Some(h.clone());
            }
        }
        h
    };
    // what tensor t's clip lines need from its data whatever the format (kept with its values)
    let basis = |t: usize| -> Arc<ClipBasis> {
        cache
            .lock()
            .ok()
            .and_then(|c| {
                c.as_ref()
                    .filter(|c| c.t == t && &c.model == model_id)
                    .map(|c| c.clip_basis.clone())
            })
            .unwrap_or_default()
    };
    for (key, is_clip) in items {
        // a background job (on the background pool) waits here while the foreground one runs
        crate::jobs::pause_point();
        if w.cancelled() {
            return;
        }
        let (t, spec) = (&key.0, &key.1);
        let info = &model.tensors[*t];
        let began = std::time::Instant::now();
        crate::jobs::trace(format_args!(
            "start {spec}{}",
            if is_clip { " clip lines" } else { "" }
        ));
        let result = data(*t).and_then(|x| {
            if is_clip {
                let b = basis(*t);
                match clip_lines_until(&x, &info.shape, spec, Some(&b), &|| w.cancelled()) {
                    Ok(Some(c)) => {
                        // after the front job's lines, the rest of the basis (the other
                        // symmetry, the float or int summary), behind whatever the person waits
                        // for: the next format's lines are quick (background items fill what
                        // they need themselves)
                        if !crate::jobs::on_background_thread() {
                            let x = x.clone();
                            crate::jobs::background_pool().spawn(move || {
                                // between parts: step aside for a front job; stop once the
                                // tensor's cache entry (and its basis) is gone
                                b.prepare(&x, &|| {
                                    crate::jobs::pause_point();
                                    Arc::strong_count(&b) == 1
                                });
                            });
                        }
                        Ok(Msg::Clip(key, Arc::new(c)))
                    }
                    Ok(None) => Err(String::new()), // cancelled: nothing is sent
                    Err(e) => Err(e.to_string()),
                }
            } else {
                let h = original(*t, &x);
                layer_report_with(&x, &info.shape, spec, BINS, Some(&h))
                    .map(|(r, _)| Msg::Report(key, Arc::new(r)))
                    .map_err(|e| e.to_string())
            }
        });
        if w.cancelled() {
            return;
        }
        crate::jobs::trace(format_args!("done {spec} in {:.1?}", began.elapsed()));
        let msg = result.unwrap_or_else(|e| Msg::Failed(key, e));
        if !w.send(msg) {
            return;
        }
        w.progress.add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::report::clip_lines;
    use std::time::{Duration, Instant};

    fn nothing() -> Wake {
        Arc::new(|| {})
    }

    /// Schedule (as frames would) until `done` holds; panics after a minute.
    fn until(r: &mut Reports, model: &Arc<Model>, w: &Wants, done: impl Fn(&Reports) -> bool) {
        let start = Instant::now();
        while !done(r) {
            r.schedule(model, w, &nothing());
            assert!(start.elapsed() < Duration::from_secs(60), "still waiting");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn int8_plan() -> Plan {
        Plan {
            default: Choice::parse("int8").unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn every_number_the_view_needs_is_the_engines() {
        let model = Arc::new(crate::nn::sample_mlp());
        let mut r = Reports::default();
        assert!(r.set_model(&model));
        let t = r.listed()[0];
        let plan = int8_plan();
        let candidates = ["int4:g16".to_string(), "nf4".to_string(), "int9".into()];
        let w = Wants {
            plan: &plan,
            plan_sig: "int8 everywhere",
            selected: Some(t),
            group: 3,
            candidates: &candidates,
        };
        let int8 = Spec::parse("int8").unwrap();
        let cands = [
            Spec::parse("int4:g16").unwrap(),
            Spec::parse("nf4").unwrap(),
        ];
        let listed = r.listed().to_vec();
        until(&mut r, &model, &w, |r| {
            listed.iter().all(|&t| r.report(t, &int8).is_some())
                && cands
                    .iter()
                    .all(|s| r.report(t, s).is_some() && r.clip_lines(t, s).is_some())
                && r.clip_lines(t, &int8).is_some()
                && r.group_histogram(t, &int8, 3).is_some()
                && r.accuracy().is_some()
        });
        // once everything is in, no job is left and nothing starts again
        until(&mut r, &model, &w, |r| !r.front_busy() && r.job.is_none());
        assert!(!r.schedule(&model, &w, &nothing()));
        assert!(r.job.is_none() && !r.front_busy());
        let info = &model.tensors[t];
        let x = model.read_f32(info).unwrap();
        for s in cands.iter().chain([&int8]) {
            let (want, _) = layer_report_with(&x, &info.shape, s, BINS, None).unwrap();
            assert_eq!(**r.report(t, s).unwrap(), want, "{s}");
            assert_eq!(
                **r.clip_lines(t, s).unwrap(),
                clip_lines(&x, &info.shape, s).unwrap(),
                "{s}"
            );
        }
        // the clip lines one bit either side of the selected int8 (only int7: int9 does not exist)
        let int7 = Spec::parse("int7").unwrap();
        assert!(r.clip_lines(t, &int7).is_some());
        let rep = r.report(t, &int8).unwrap();
        let want = crate::stats::histogram(rep.group_values(&x, info.channels().1, 3), 64, None);
        assert_eq!(r.group_histogram(t, &int8, 3), Some(&want));
        let (sig, acc) = r.accuracy().unwrap();
        assert_eq!(sig, "int8 everywhere");
        assert_eq!(*acc, held_out_accuracy(&model, &plan).unwrap());
        assert!(r.heap_bytes() > 0 && !r.is_empty());
    }

    #[test]
    fn a_small_budget_keeps_what_the_view_needs_and_drops_the_rest() {
        let model = Arc::new(crate::nn::sample_mlp());
        // a budget nothing fits in: only what the view needs now is kept
        let mut r = Reports::new(1);
        r.set_model(&model);
        let (a, b) = (r.listed()[0], r.listed()[1]);
        let plan = int8_plan();
        let candidates = ["int4:g16".to_string(), "nf4".to_string()];
        let (int8, int4) = (
            Spec::parse("int8").unwrap(),
            Spec::parse("int4:g16").unwrap(),
        );
        let wants = |t| Wants {
            plan: &plan,
            plan_sig: "",
            selected: Some(t),
            group: 0,
            candidates: &candidates,
        };
        let settled = |t: usize| {
            move |r: &Reports| {
                r.report(t, &int4).is_some()
                    && r.clip_lines(t, &int4).is_some()
                    && r.job.is_none()
                    && !r.front_busy()
            }
        };
        until(&mut r, &model, &wants(a), settled(a));
        let on_a = r.len();
        until(&mut r, &model, &wants(b), settled(b));
        // a's candidates went; every layer's report under the plan stayed (the size needs them)
        assert!(r.report(a, &int4).is_none() && r.clip_lines(a, &int4).is_none());
        assert!(r.listed().iter().all(|&t| r.report(t, &int8).is_some()));
        assert_eq!(r.len(), on_a);
        // and nothing is computed again only to be dropped
        for _ in 0..20 {
            assert!(!r.schedule(&model, &wants(b), &nothing()));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(r.len(), on_a);
        // with room for everything, nothing is dropped
        let mut roomy = Reports::default();
        roomy.set_model(&model);
        until(&mut roomy, &model, &wants(a), settled(a));
        until(&mut roomy, &model, &wants(b), settled(b));
        assert!(roomy.report(a, &int4).is_some() && roomy.clip_lines(a, &int4).is_some());
    }

    #[test]
    fn another_model_starts_afresh() {
        let mlp = Arc::new(crate::nn::sample_mlp());
        let mut r = Reports::default();
        assert!(r.set_model(&mlp));
        assert!(!r.set_model(&mlp));
        // the same file opened again is the same model
        assert!(!r.set_model(&Arc::new(crate::nn::sample_mlp())));
        let plan = int8_plan();
        let w = Wants {
            plan: &plan,
            plan_sig: "",
            selected: None,
            group: 0,
            candidates: &[],
        };
        until(&mut r, &mlp, &w, |r| r.len() == r.listed().len());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
        let llama = Arc::new(Model::open(&dir).unwrap());
        assert!(r.set_model(&llama));
        assert!(r.is_empty() && r.accuracy().is_none());
        assert_eq!(r.listed(), editable(&llama));
        assert_ne!(r.model_id(), mlp.header_fingerprint());
    }
}
