//! Progress on stderr for long work: a live bar with throughput and ETA on a terminal, and a line
//! every [`LOG_EVERY`] otherwise (a log file, CI), so a long run shows it is alive without flooding.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a progress line is written when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A bar over `total` bytes of tensor data: position, throughput (GB/s) and ETA.
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    new_bar(
        total,
        what,
        "{prefix} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta} {wide_msg}",
        "{prefix}: {percent}% {decimal_bytes}/{decimal_total_bytes} at {decimal_bytes_per_sec}, {elapsed} elapsed, eta {eta} {msg}",
    )
}

/// A bar over `total` steps (cells, windows, tensors).
pub fn step_bar(total: u64, what: &str) -> ProgressBar {
    new_bar(
        total,
        what,
        "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {wide_msg}",
        "{prefix}: {pos}/{len} ({percent}%), {elapsed} elapsed, eta {eta} {msg}",
    )
}

fn new_bar(total: u64, what: &str, live: &str, log: &str) -> ProgressBar {
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::default()), 1)
        },
    );
    bar.set_style(
        ProgressStyle::with_template(if terminal { live } else { log })
            .expect("template")
            .with_key("eta", mean_eta)
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The time left at the mean rate since the start: indicatif's own estimate follows the recent
/// rate, which decays toward zero between slow steps (a few whole-model passes) and then shows years.
fn mean_eta(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let (pos, len) = (state.pos(), state.len().unwrap_or(0));
    if pos == 0 || len < pos {
        let _ = write!(w, "?");
        return;
    }
    let left = state.elapsed().mul_f64((len - pos) as f64 / pos as f64);
    let _ = write!(w, "{:#}", indicatif::HumanDuration(left));
}

/// Run `work` on a thread while a [`step_bar`] shows its `Progress`.
pub fn with_progress<T: Send>(
    what: &str,
    work: impl FnOnce(&quantscope::jobs::Progress) -> T + Send,
) -> T {
    let progress = quantscope::jobs::Progress::default();
    let bar = step_bar(1, what);
    let out = std::thread::scope(|s| {
        let job = s.spawn(|| work(&progress));
        while !job.is_finished() {
            let (done, total) = progress.counts();
            bar.set_length(total.max(1));
            bar.set_position(done);
            std::thread::sleep(Duration::from_millis(100));
        }
        job.join().expect("the work thread does not panic")
    });
    bar.finish_and_clear();
    out
}

/// A draw target that writes the bar's text as a plain line on stderr at most once per
/// [`LOG_EVERY`], and ignores cursor movement.
#[derive(Debug)]
struct LogLines {
    last: Mutex<Instant>,
}

impl Default for LogLines {
    fn default() -> Self {
        // the first line waits a full period: short work prints nothing
        LogLines {
            last: Mutex::new(Instant::now()),
        }
    }
}

impl LogLines {
    fn line(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().expect("not poisoned");
        if last.elapsed() < LOG_EVERY {
            return Ok(());
        }
        *last = Instant::now();
        eprintln!("{s}");
        Ok(())
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        160
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
