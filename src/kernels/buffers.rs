//! The large buffers of reading and quantizing a tensor (its f32 values, dequantized values, codes):
//! 100 MB for one 4096 × 4096 layer. A fresh buffer costs the kernel a page fault and a page of zeros per 4 KiB it touches, a
//! large share of a fast quantizer's time (README, "Speed"). So buffers are kept
//! for reuse: when a [`Quantized`](crate::quant::Quantized) is dropped its buffers come back here, and the
//! next quantizer takes them instead of fresh memory (the CLI over a model's layers, a sensitivity
//! scan, the window's cache evicting a result, a benchmark's loop). The pool is small and bounded (see
//! [`KEEP_BYTES`]); fresh memory is asked to be backed by 2 MiB huge pages (~50 faults instead of
//! ~25,000 per 100 MB).
//!
//! The allocator could not do this for us: glibc serves these sizes with `mmap` and returns them to
//! the kernel on `free` (its threshold for keeping them is capped at 32 MiB).

use std::sync::Mutex;

/// Only buffers at least this large (bytes) are pooled; small ones are cheap to allocate.
const MIN_BYTES: usize = 4 << 20;
/// The most memory the pool holds while nobody uses it.
pub const KEEP_BYTES: usize = 512 << 20;

struct Pool {
    f32s: Vec<Vec<f32>>,
    i16s: Vec<Vec<i16>>,
}

impl Pool {
    fn bytes(&self) -> usize {
        self.f32s.iter().map(|v| v.capacity() * 4).sum::<usize>()
            + self.i16s.iter().map(|v| v.capacity() * 2).sum::<usize>()
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    f32s: Vec::new(),
    i16s: Vec::new(),
});

/// A pooled vector that holds at least `n` initialised values and wastes at most half its memory.
///
/// A thread of the window's background pool takes one only if another that fits stays in the pool:
/// the last one is kept for the work the person waits for, which would otherwise pay for fresh
/// memory; the background item can pay that instead.
fn take<T>(list: &mut Vec<Vec<T>>, n: usize) -> Option<Vec<T>> {
    take_leaving(
        list,
        n,
        usize::from(crate::kernels::pause::on_background_thread()),
    )
}

/// [`take`], if more than `keep` pooled vectors fit.
fn take_leaving<T>(list: &mut Vec<Vec<T>>, n: usize, keep: usize) -> Option<Vec<T>> {
    let fits = |v: &Vec<T>| v.len() >= n && v.len() <= 2 * n;
    if list.iter().filter(|v| fits(v)).count() <= keep {
        return None;
    }
    let i = list
        .iter()
        .enumerate()
        .filter(|(_, v)| fits(v))
        .min_by_key(|(_, v)| v.len())?
        .0;
    let mut v = list.swap_remove(i);
    v.truncate(n);
    Some(v)
}

/// `n` values whose contents are unspecified (left from an earlier result, or zero): for a caller that
/// writes every element.
pub(crate) fn f32_overwritten(n: usize) -> Vec<f32> {
    if n * 4 >= MIN_BYTES {
        if let Some(v) = take(&mut lock().f32s, n) {
            return v;
        }
    }
    fresh(n)
}

pub(crate) fn i16_overwritten(n: usize) -> Vec<i16> {
    if n * 2 >= MIN_BYTES {
        if let Some(v) = take(&mut lock().i16s, n) {
            return v;
        }
    }
    fresh(n)
}

/// `n` zeros.
pub(crate) fn f32_zeroed(n: usize) -> Vec<f32> {
    let mut v = f32_overwritten(n);
    zero(&mut v);
    v
}

pub(crate) fn i16_zeroed(n: usize) -> Vec<i16> {
    let mut v = i16_overwritten(n);
    zero(&mut v);
    v
}

fn zero<T: Default + Copy + Send + PartialEq + Sync>(v: &mut [T]) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 18).for_each(|c| c.fill(T::default()));
}

/// Give a buffer back (dropped results call this); kept if large and the pool has room.
pub fn give_f32(v: Vec<f32>) {
    if v.capacity() * 4 >= MIN_BYTES && v.len() * 2 >= v.capacity() {
        let mut p = lock();
        if p.bytes() + v.capacity() * 4 <= KEEP_BYTES {
            p.f32s.push(v);
        }
    }
}

pub(crate) fn give_i16(v: Vec<i16>) {
    if v.capacity() * 2 >= MIN_BYTES && v.len() * 2 >= v.capacity() {
        let mut p = lock();
        if p.bytes() + v.capacity() * 2 <= KEEP_BYTES {
            p.i16s.push(v);
        }
    }
}

/// Free every pooled buffer (e.g. before a memory-hungry step).
pub fn release() {
    let mut p = lock();
    p.f32s.clear();
    p.i16s.clear();
}

/// Bytes the pool holds now.
pub fn pooled_bytes() -> usize {
    lock().bytes()
}

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // the pool holds plain vectors: a panic elsewhere cannot leave it inconsistent
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A zeroed buffer of fresh memory, backed by huge pages where the kernel agrees.
fn fresh<T: Default + Clone>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 4 * HUGE {
        return;
    }
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: madvise only changes how the kernel backs pages of this live allocation (the range
        // lies inside it); MADV_HUGEPAGE never changes the contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_addr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_or_sized_and_the_pool_is_bounded() {
        let n = 3 << 20; // 12 MiB of f32
        let mut a = f32_zeroed(n);
        assert!(a.iter().all(|&v| v == 0.0));
        a.fill(7.0);
        let ptr = a.as_ptr();
        give_f32(a);
        // a slightly smaller request reuses it, contents as left
        let b = f32_overwritten(n - 5);
        assert_eq!((b.as_ptr(), b.len()), (ptr, n - 5));
        assert_eq!(b[0], 7.0);
        give_f32(b);
        // zeroed really zeroes a reused buffer
        let c = f32_zeroed(n - 5);
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&v| v == 0.0));
        give_f32(c);
        // a much smaller request does not take a buffer twice its size
        let d = f32_overwritten(n / 4);
        assert_ne!(d.as_ptr(), ptr);
        assert!(pooled_bytes() <= KEEP_BYTES);
        for _ in 0..100 {
            give_i16(vec![1i16; 4 << 20]);
        }
        assert!(pooled_bytes() <= KEEP_BYTES);
        release();
        assert_eq!(pooled_bytes(), 0);
        assert_eq!(i16_zeroed(3), vec![0, 0, 0]);
    }

    #[test]
    fn the_background_leaves_the_last_fitting_buffer() {
        let mut list = vec![vec![0u8; 10], vec![1u8; 100]];
        // only the 10-byte one fits 8: the background leaves it, the foreground takes it
        assert_eq!(take_leaving(&mut list, 8, 1), None);
        assert_eq!(list.len(), 2);
        assert_eq!(take_leaving(&mut list, 8, 0).map(|v| v.len()), Some(8));
        list.push(vec![2u8; 12]);
        list.push(vec![3u8; 11]);
        // two fit 10: the background takes the smaller, one is left for the foreground
        assert_eq!(take_leaving(&mut list, 10, 1).map(|v| v[0]), Some(3));
        assert_eq!(take_leaving(&mut list, 10, 1), None);
        assert_eq!(take_leaving(&mut list, 10, 0).map(|v| v[0]), Some(2));
    }
}
