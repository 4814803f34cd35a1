//! How a long kernel steps aside for more urgent work, without knowing who schedules it.
//!
//! The kernels call [`point`] between pieces of work (a row, a chunk of 64 Ki values). What it does is
//! decided by whoever owns the thread: a scheduler installs a [`Hook`] on each thread of its pool
//! (`jobs` does so for the window's background pool) and the kernels running there call it. On any
//! other thread (the command line, tests, benchmarks) there is no hook and [`point`] does nothing.

use std::cell::Cell;

/// What the owner of a thread asks of the kernels that run on it.
#[derive(Clone, Copy)]
pub struct Hook {
    /// Called at every [`point`]; may block while more urgent work runs.
    pub pause: fn(),
    /// Work on this thread can wait: it leaves the last pooled output buffer to work that cannot
    /// (see `kernels::buffers`).
    pub background: bool,
}

thread_local! {
    static HOOK: Cell<Option<Hook>> = const { Cell::new(None) };
}

/// Install `hook` on the calling thread (a pool's start handler calls this on each of its threads).
pub fn install(hook: Hook) {
    HOOK.with(|h| h.set(Some(hook)));
}

/// The calling thread's hook, if its owner installed one.
#[inline]
pub fn hook() -> Option<Hook> {
    HOOK.with(Cell::get)
}

/// A place where a long kernel may step aside: calls the thread's [`Hook::pause`], if any.
#[inline]
pub fn point() {
    if let Some(h) = hook() {
        (h.pause)()
    }
}

/// Whether the calling thread's owner marked its work as able to wait ([`Hook::background`]).
pub fn on_background_thread() -> bool {
    hook().is_some_and(|h| h.background)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn points_call_the_hook_of_their_own_thread_only() {
        fn count() {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
        point();
        assert!(!on_background_thread());
        std::thread::spawn(|| {
            install(Hook {
                pause: count,
                background: true,
            });
            point();
            point();
            assert!(on_background_thread());
        })
        .join()
        .unwrap();
        point();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    }
}
