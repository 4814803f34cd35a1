//! Frame times and update latency of the workbench while a spec is toggled, on MiniLM's largest layer
//! and on a 4096 × 4096 layer. Timings, not pass/fail: run with
//! `cargo test --release --test frame_times -- --ignored --nocapture`. Knobs (environment):
//! QUANTSCOPE_MINILM (the MiniLM folder); QUANTSCOPE_FRAME_MS=16 paces the frames like a 60 Hz window;
//! QUANTSCOPE_LOOK_MS, how long the layer is looked at before the first toggle (default 1 s);
//! QUANTSCOPE_GAP_MS, a pause between toggles (default none); QUANTSCOPE_LAYER=sine gives the
//! 4096 × 4096 layer sine values instead of normal ones; QUANTSCOPE_TRACE=1 logs the window's jobs.
#![cfg(feature = "gui")]

use quantscope::gui::{Source, View};
use quantscope::quant::Spec;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::synthetic;

/// A duration in milliseconds from the environment variable `name`, or `default` ms.
fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The pause between frames: `QUANTSCOPE_FRAME_MS` (default 1 ms: a UI thread that never rests,
/// harsher than any real window; 16 ms is a 60 Hz window repainting continuously, as a vsync'd window
/// does while the mouse moves). The latency is then seen at the next frame, as on screen.
fn pace() {
    static FRAME: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    std::thread::sleep(*FRAME.get_or_init(|| env_ms("QUANTSCOPE_FRAME_MS", 1)));
}

fn measure(path: PathBuf, tensor: &str) {
    let mut h = common::gui::open(Source::Path(path), (1280.0, 900.0));
    h.state_mut().view = View::Workbench;
    h.step();
    let t = {
        let m = h.state().browser.model.clone().unwrap();
        let t = m.find(tensor).expect("tensor");
        h.state_mut().workbench.select(&m, t);
        t
    };
    // as a person would: look at the layer (its report and clip lines in) before toggling
    let start = Instant::now();
    loop {
        h.step();
        let wb = &h.state().workbench;
        if !wb.reports.is_empty() && !wb.front_busy() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no first report");
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "{tensor}: first report and clip lines after {:.1?}",
        start.elapsed()
    );
    // reading the layer before the first toggle (QUANTSCOPE_LOOK_MS, default 1 s), frames coming
    let (look, gap) = (
        env_ms("QUANTSCOPE_LOOK_MS", 1000),
        env_ms("QUANTSCOPE_GAP_MS", 0),
    );
    let start = Instant::now();
    while start.elapsed() < look {
        h.step();
        pace();
    }
    // candidates of the comparison table (maybe computed in the background already), then specs
    // nobody asked for yet, then back to a cached one
    for spec in [
        "int8",
        "int4:g128",
        "nvfp4",
        "uint4:g64",
        "fp8_e5m2",
        "int3:channel",
        "int4:channel:clip=mse",
        "int8",
    ] {
        let name = h.state().browser.model.as_ref().unwrap().tensors[t]
            .name
            .clone();
        // a person's pause between toggles (QUANTSCOPE_GAP_MS, default none: each toggle follows the
        // last one's clip lines at once), frames coming
        let pause = Instant::now();
        while pause.elapsed() < gap {
            h.step();
            pace();
        }
        h.state_mut().workbench.set_layer(&name, spec).unwrap();
        let s = Spec::parse(spec).unwrap();
        let start = Instant::now();
        let mut frames = Vec::new();
        loop {
            let f = Instant::now();
            h.step();
            frames.push(f.elapsed());
            if h.state().workbench.report(t, &s).is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("no report after 60 s");
            }
            pace();
        }
        let latency = start.elapsed();
        quantscope::jobs::trace(format_args!("plots updated for {spec}"));
        // then the clip lines (drawn on the same plot), while frames keep coming
        while h.state().workbench.clip_lines(t, &s).is_none()
            && start.elapsed() < Duration::from_secs(60)
        {
            let f = Instant::now();
            h.step();
            frames.push(f.elapsed());
            pace();
        }
        let clip_latency = start.elapsed();
        frames.sort();
        println!(
            "{tensor} → {spec}: plots updated after {latency:.1?}, clip lines after {clip_latency:.1?}; {} frames, median {:.2?}, max {:.2?}",
            frames.len(),
            frames[frames.len() / 2],
            frames[frames.len() - 1]
        );
    }
}

#[test]
#[ignore]
fn frame_times_4096x4096() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let n = 4096 * 4096;
    // the benchmark's layer (benches/quant.rs: a normal body, std 0.02, and an outlier in 100,003, like
    // an LLM projection), or with QUANTSCOPE_LAYER=sine the sine the earlier figures used: its values
    // crowd at ±max (an arcsine distribution), which makes percentiles and sorting slower
    let sine = std::env::var("QUANTSCOPE_LAYER").is_ok_and(|v| v == "sine");
    let values = if sine {
        (0..n).map(|i| ((i as f32) * 0.618).sin() * 0.02).collect()
    } else {
        synthetic::llm_layer(n)
    };
    synthetic::write_f32(&path, &[("layer.weight", vec![4096, 4096], values)]);
    measure(path, "layer.weight");
}

#[test]
#[ignore]
fn frame_times_minilm() {
    let Ok(p) = std::env::var("QUANTSCOPE_MINILM") else {
        eprintln!("set QUANTSCOPE_MINILM to the MiniLM folder");
        return;
    };
    measure(PathBuf::from(p), "embeddings.word_embeddings.weight");
}
