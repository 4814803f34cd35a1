//! Background work with progress and cancellation, shared by the window and the command line.
//!
//! A job runs on its own thread and sends messages back over a channel; the receiver polls without
//! blocking (the window does so once per frame). Dropping or cancelling a job asks the worker to stop
//! at its next check; a stale job's messages are simply never read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;

/// Shared between a job and whoever watches it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// (done, total).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    pub fn set_done(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    /// Done / total in [0, 1] (0 while the total is unknown).
    pub fn fraction(&self) -> f32 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            0.0
        } else {
            (self.done.load(Ordering::Relaxed) as f64 / total as f64).min(1.0) as f32
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// The worker's side: send messages, report progress, check for cancellation.
pub struct Worker<M> {
    tx: Sender<M>,
    pub progress: Arc<Progress>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl<M> Worker<M> {
    /// Send a message; false when nobody listens any more (the job was dropped), so the worker can stop.
    pub fn send(&self, m: M) -> bool {
        let ok = self.tx.send(m).is_ok();
        (self.wake)();
        ok
    }

    pub fn cancelled(&self) -> bool {
        self.progress.is_cancelled()
    }
}

/// The watcher's side.
pub struct Job<M> {
    rx: Receiver<M>,
    pub progress: Arc<Progress>,
    finished: bool,
}

impl<M: Send + 'static> Job<M> {
    /// Run `work` on a new thread. `wake` is called after every message and when `work` returns (the
    /// window passes a repaint request, so results appear, and the window sees the job end, without
    /// waiting for the next input event or polling).
    pub fn spawn(
        wake: Arc<dyn Fn() + Send + Sync>,
        work: impl FnOnce(&Worker<M>) + Send + 'static,
    ) -> Job<M> {
        let (tx, rx) = mpsc::channel();
        let progress = Arc::new(Progress::default());
        let worker = Worker {
            tx,
            progress: progress.clone(),
            wake,
        };
        std::thread::Builder::new()
            .name("quantscope-job".into())
            .spawn(move || {
                work(&worker);
                // disconnect first, so that the woken window sees the job finished
                let wake = worker.wake.clone();
                drop(worker);
                wake();
            })
            .expect("spawn a worker thread");
        Job {
            rx,
            progress,
            finished: false,
        }
    }

    /// Every message that has arrived, without waiting.
    pub fn poll(&mut self) -> Vec<M> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(m) => out.push(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.finished = true;
                    break;
                }
            }
        }
        out
    }

    /// True once the worker has ended and every message was read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn cancel(&self) {
        self.progress.cancel();
    }
}

impl<M> Drop for Job<M> {
    fn drop(&mut self) {
        self.progress.cancel();
    }
}

/// The thread pool for background work started from the window: one core fewer than the machine has
/// (from three cores up), so the UI thread always finds a free core while a large layer is being
/// quantized. Its threads run at a lower priority (nice +10 on Linux), so that the work the person
/// is waiting for ([`foreground_pool`]) and the UI thread get the cores first. The command line uses
/// rayon's global pool (every core).
pub fn background_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(window_threads())
            .thread_name(|i| format!("quantscope-bg-{i}"))
            .start_handler(|_| {
                crate::kernels::pause::install(crate::kernels::pause::Hook {
                    pause: pause_point,
                    background: true,
                });
                lower_priority()
            })
            .build()
            .expect("a thread pool")
    })
}

/// How many foreground jobs are running (see [`Foreground`]).
static FOREGROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Held while a foreground job runs: background threads wait at their next [`pause_point`] until
/// none is left. Lower priority alone does not keep them off the cores when there are few.
pub struct Foreground(());

impl Foreground {
    pub fn enter() -> Foreground {
        FOREGROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Foreground(())
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        FOREGROUND.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether the calling thread belongs to [`background_pool`].
pub fn on_background_thread() -> bool {
    crate::kernels::pause::on_background_thread()
}

/// The pause hook of [`background_pool`]'s threads (the engine's long loops reach it through
/// [`crate::kernels::pause::point`]), also called by the window's jobs between items: on a thread of
/// [`background_pool`], waits while a foreground job runs (a [`ForegroundPool`] or a [`Foreground`]
/// is alive), so that a long background item (a k-means fit) steps aside within a millisecond or so.
/// Elsewhere it returns at once. It traces nothing: it runs once per row of the quantizer loops.
#[inline]
pub fn pause_point() {
    if FOREGROUND.load(std::sync::atomic::Ordering::Relaxed) > 0 && on_background_thread() {
        while FOREGROUND.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Whether `QUANTSCOPE_TRACE` is set: the window's jobs then log what they compute and when.
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("QUANTSCOPE_TRACE").is_some())
}

/// Logs `what` to stderr with the time since the first trace and the thread's name, if [`tracing`].
pub fn trace(what: impl std::fmt::Display) {
    if !tracing() {
        return;
    }
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    let th = std::thread::current();
    eprintln!(
        "{:>9.1} ms [{}] {what}",
        t.as_secs_f64() * 1e3,
        th.name().unwrap_or("?")
    );
}

/// The pool for what the window shows right now in answer to an edit (the selected layer under its
/// new spec): normal priority, and never queued behind other work, not even behind the item a stale
/// job of the same kind is still finishing. A job gets the shared pool, whose threads are warm (their
/// stacks, allocator arenas and thread-local buffers are in use already), unless a stale job still
/// holds it; then a pool of its own. Background threads pause while it is alive ([`Foreground`]).
pub fn foreground_pool() -> ForegroundPool {
    static SHARED: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let ordering = std::sync::atomic::Ordering::SeqCst;
    let _front = Foreground::enter();
    let pool = if TAKEN
        .compare_exchange(false, true, ordering, ordering)
        .is_ok()
    {
        let pool = SHARED.get_or_init(|| new_foreground_pool("quantscope-fg"));
        PoolRef::Shared(pool, &TAKEN)
    } else {
        PoolRef::Own(new_foreground_pool("quantscope-fg2"))
    };
    ForegroundPool { pool, _front }
}

fn new_foreground_pool(name: &'static str) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(window_threads())
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .expect("a thread pool")
}

/// A foreground job's pool (see [`foreground_pool`]); when it drops, the shared one is free again
/// and background threads go on.
pub struct ForegroundPool {
    pool: PoolRef,
    _front: Foreground,
}

enum PoolRef {
    Shared(
        &'static rayon::ThreadPool,
        &'static std::sync::atomic::AtomicBool,
    ),
    Own(rayon::ThreadPool),
}

impl ForegroundPool {
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            PoolRef::Shared(p, _) => p.install(f),
            PoolRef::Own(p) => p.install(f),
        }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        if let PoolRef::Shared(_, taken) = self {
            taken.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Threads of a window pool: one core fewer than the machine has, from three cores up (on two cores
/// or fewer, halving the compute costs more than the UI gains).
fn window_threads() -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    if n <= 2 {
        n
    } else {
        n - 1
    }
}

/// Lower the calling thread's priority. On Linux `setpriority` with a thread id applies to that
/// thread alone; elsewhere, and if the call fails, nothing changes but the scheduling.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_background_pools_threads_count_as_background() {
        assert!(!on_background_thread());
        assert!(background_pool().install(on_background_thread));
    }

    #[test]
    fn background_threads_pause_while_a_foreground_job_runs() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = Foreground::enter();
        // elsewhere than on the background pool, a pause point does not wait
        pause_point();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let t = std::thread::spawn(move || {
            background_pool().install(|| {
                pause_point();
                d.store(true, Ordering::SeqCst);
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "went on beside the foreground job"
        );
        drop(front);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn a_second_foreground_job_gets_a_pool_of_its_own() {
        let name = || std::thread::current().name().unwrap_or("").to_string();
        let a = foreground_pool();
        let b = foreground_pool();
        // while `a` holds the shared pool, `b` runs on its own threads (tests may hold it too: only
        // the two names are compared)
        let (na, nb) = (a.install(name), b.install(name));
        // while either is alive, background threads pause
        assert!(FOREGROUND.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        assert!(na.starts_with("quantscope-fg") && nb.starts_with("quantscope-fg2-"));
        drop(b);
        if na.starts_with("quantscope-fg-") {
            drop(a);
            // free again: the next job takes the shared pool
            assert!(foreground_pool()
                .install(name)
                .starts_with("quantscope-fg-"));
        }
    }

    #[test]
    fn messages_progress_and_cancellation() {
        let mut job = Job::spawn(Arc::new(|| {}), |w: &Worker<u32>| {
            w.progress.set_total(3);
            for i in 0..3 {
                w.send(i);
                w.progress.add(1);
            }
        });
        let mut got = Vec::new();
        while !job.is_finished() {
            got.extend(job.poll());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(job.progress.fraction(), 1.0);

        // woken after each message and once more at the end, when the job reads as finished (a
        // window repaints on the wake and needs no polling)
        let (woke_tx, woke_rx) = mpsc::channel();
        let woke_tx = std::sync::Mutex::new(woke_tx);
        let wake = Arc::new(move || {
            woke_tx.lock().unwrap().send(()).unwrap();
        });
        let mut job = Job::spawn(wake, |w: &Worker<u32>| {
            w.send(7);
        });
        let timeout = std::time::Duration::from_secs(5);
        woke_rx.recv_timeout(timeout).unwrap();
        woke_rx.recv_timeout(timeout).unwrap();
        assert_eq!(job.poll(), vec![7]);
        assert!(job.is_finished());

        // a cancelled worker sees the flag and stops early
        let (stop_tx, stop_rx) = mpsc::channel();
        let job = Job::spawn(Arc::new(|| {}), move |w: &Worker<()>| {
            let mut n = 0u64;
            while !w.cancelled() {
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            stop_tx.send(n).unwrap();
        });
        job.cancel();
        assert!(stop_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .is_ok());
    }
}
