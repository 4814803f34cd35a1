//! Dense products for the inference engine: `Y = X·Wᵀ` with the `matrixmultiply` crate's sgemm (a
//! well-kept, dependency-free blocked kernel), split over rows with rayon, and the im2col unfolding that
//! turns a convolution into that product.

use rayon::prelude::*;

/// A pointer that parallel tasks write through, each to its own disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32);
// SAFETY: every task writes a disjoint set of elements (each caller says which), and the buffer
// outlives the parallel scope.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `i` (a method, so closures capture the whole `Out`, not its raw pointer).
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// `Y[rows, out] = X[rows, k] · W[out, k]ᵀ` (+ `bias[out]` when given), all row-major. Split over
/// output columns when the layer is wider than the batch is long (an LM head: its weight is packed
/// once, not once per row block), else over rows.
pub fn xwt(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "input is not rows × k");
    assert_eq!(w.len(), out * k, "weight is not out × k");
    if out >= rows {
        xwt_by_columns(x, rows, k, w, out, bias)
    } else {
        xwt_by_rows(x, rows, k, w, out, bias)
    }
}

fn xwt_by_columns(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    out: usize,
    b: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 {
        return y;
    }
    let threads = rayon::current_num_threads();
    let cols = out.div_ceil(4 * threads).max(64).min(out);
    let tasks = out.div_ceil(cols);
    let dst = Out(y.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let c0 = t * cols;
        let c1 = (c0 + cols).min(out);
        // SAFETY: task t writes only columns c0..c1 of every row of y (rows × out, row stride `out`);
        // x and w are read through strides within their lengths.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                c1 - c0,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr().add(c0 * k),
                1,
                k as isize,
                0.0,
                dst.at(c0),
                out as isize,
                1,
            );
        }
    });
    if let Some(b) = b {
        y.par_chunks_mut(out).for_each(|row| {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        });
    }
    y
}

fn xwt_by_rows(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 {
        return y;
    }
    // Blocks of rows big enough to amortise the kernel's packing, one per task.
    let block = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(16, 1024);
    y.par_chunks_mut(block * out)
        .zip(x.par_chunks(block * k))
        .for_each(|(yb, xb)| {
            let r = xb.len() / k.max(1);
            if let Some(b) = bias {
                for row in yb.chunks_mut(out) {
                    row.copy_from_slice(b);
                }
            }
            let beta = if bias.is_some() { 1.0 } else { 0.0 };
            // SAFETY: the pointers cover r×k, k×out (W read transposed through its strides) and r×out
            // elements of live slices, as the strides describe.
            unsafe {
                matrixmultiply::sgemm(
                    r,
                    k,
                    out,
                    1.0,
                    xb.as_ptr(),
                    k as isize,
                    1,
                    w.as_ptr(),
                    1,
                    k as isize,
                    beta,
                    yb.as_mut_ptr(),
                    out as isize,
                    1,
                );
            }
        });
    y
}

/// `C[m, n] = Aᵀ[m, r] · B[r, n]` for row-major `A[r, m]` and `B[r, n]`: the gradient of `Y = X·Wᵀ`
/// with respect to W is `(∂Y)ᵀ·X`.
pub fn atb(a: &[f32], r: usize, m: usize, b: &[f32], n: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), r * m);
    debug_assert_eq!(b.len(), r * n);
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 || r == 0 {
        return c;
    }
    // split the m output rows across threads; each block reads all r rows of A and B
    let block = (m / (2 * rayon::current_num_threads()).max(1)).max(1);
    c.par_chunks_mut(block * n)
        .enumerate()
        .for_each(|(bi, cb)| {
            let rows = cb.len() / n;
            let off = bi * block;
            // SAFETY: A is read at (i, j) ↦ a[j·m + off + i] for i < rows ≤ m − off, j < r; B is r×n;
            // C's block is rows×n; all within their slices.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    r,
                    n,
                    1.0,
                    a.as_ptr().add(off),
                    1,
                    m as isize,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cb.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        });
    c
}

/// `C[rows, n] = A[rows, m] · B[m, n]`, all row-major: the input gradient of `Y = X·Wᵀ` is `∂Y·W`.
pub fn ab(a: &[f32], rows: usize, m: usize, b: &[f32], n: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), rows * m);
    debug_assert_eq!(b.len(), m * n);
    let mut c = vec![0f32; rows * n];
    if rows == 0 || n == 0 || m == 0 {
        return c;
    }
    let block = (rows / (4 * rayon::current_num_threads()).max(1)).clamp(16, 1024);
    c.par_chunks_mut(block * n)
        .zip(a.par_chunks(block * m))
        .for_each(|(cb, ab)| {
            let r = ab.len() / m;
            // SAFETY: A's block is r×m, B is m×n, C's block r×n, row-major as the strides say.
            unsafe {
                matrixmultiply::sgemm(
                    r,
                    m,
                    n,
                    1.0,
                    ab.as_ptr(),
                    m as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cb.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        });
    c
}

/// The geometry of a 2-D convolution on one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        let oh = (self.h + 2 * self.padding).saturating_sub(self.kh) / self.stride + 1;
        let ow = (self.w + 2 * self.padding).saturating_sub(self.kw) / self.stride + 1;
        (oh, ow)
    }

    /// Columns of a patch: `cin·kh·kw`, ordered as PyTorch's weight `[O, I, kh, kw]` flattens.
    pub fn patch(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// One image `[cin, h, w]` unfolded to `[oh·ow, cin·kh·kw]` (zero padding), so that the convolution
    /// is `patches · Wᵀ` (as `torch.nn.functional.unfold`, transposed).
    pub fn im2col(&self, img: &[f32]) -> Vec<f32> {
        let (oh, ow) = self.out_hw();
        let k = self.patch();
        let mut p = vec![0f32; oh * ow * k];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &mut p[(oy * ow + ox) * k..][..k];
                let mut c = 0;
                for ci in 0..self.cin {
                    for ky in 0..self.kh {
                        let y = (oy * self.stride + ky) as isize - self.padding as isize;
                        for kx in 0..self.kw {
                            let x = (ox * self.stride + kx) as isize - self.padding as isize;
                            if y >= 0 && x >= 0 && (y as usize) < self.h && (x as usize) < self.w {
                                row[c] = img[(ci * self.h + y as usize) * self.w + x as usize];
                            }
                            c += 1;
                        }
                    }
                }
            }
        }
        p
    }

    /// The adjoint of [`ConvGeom::im2col`]: patch gradients `[oh·ow, cin·kh·kw]` summed back onto the
    /// image `[cin, h, w]` they were read from (overlapping windows add up; padding is dropped).
    pub fn col2im(&self, patches: &[f32]) -> Vec<f32> {
        let (oh, ow) = self.out_hw();
        let k = self.patch();
        debug_assert_eq!(patches.len(), oh * ow * k);
        let mut img = vec![0f32; self.cin * self.h * self.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &patches[(oy * ow + ox) * k..][..k];
                let mut c = 0;
                for ci in 0..self.cin {
                    for ky in 0..self.kh {
                        let y = (oy * self.stride + ky) as isize - self.padding as isize;
                        for kx in 0..self.kw {
                            let x = (ox * self.stride + kx) as isize - self.padding as isize;
                            if y >= 0 && x >= 0 && (y as usize) < self.h && (x as usize) < self.w {
                                img[(ci * self.h + y as usize) * self.w + x as usize] += row[c];
                            }
                            c += 1;
                        }
                    }
                }
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_splits_give_the_plain_product() {
        let (rows, k, out) = (3, 5, 130);
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..out * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.01).collect();
        let plain: Vec<f32> = (0..rows * out)
            .map(|e| {
                let (r, o) = (e / out, e % out);
                b[o] + (0..k).map(|j| x[r * k + j] * w[o * k + j]).sum::<f32>()
            })
            .collect();
        for y in [
            xwt_by_columns(&x, rows, k, &w, out, Some(&b)),
            xwt_by_rows(&x, rows, k, &w, out, Some(&b)),
        ] {
            for (a, p) in y.iter().zip(&plain) {
                assert!((a - p).abs() < 1e-5, "{a} {p}");
            }
        }
    }

    #[test]
    fn xwt_matches_the_definition() {
        let (rows, k, out) = (37, 13, 5);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let w: Vec<f32> = (0..out * k)
            .map(|i| ((i * 104729) % 17) as f32 - 8.0)
            .collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.5).collect();
        let y = xwt(&x, rows, k, &w, out, Some(&b));
        for r in 0..rows {
            for o in 0..out {
                let want: f32 = b[o] + (0..k).map(|j| x[r * k + j] * w[o * k + j]).sum::<f32>();
                assert_eq!(y[r * out + o], want, "small integers multiply exactly");
            }
        }
    }

    #[test]
    fn atb_matches_the_definition() {
        let (r, m, n) = (11, 7, 5);
        let a: Vec<f32> = (0..r * m).map(|i| ((i * 31) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..r * n).map(|i| ((i * 17) % 11) as f32 - 5.0).collect();
        let c = atb(&a, r, m, &b, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..r).map(|t| a[t * m + i] * b[t * n + j]).sum();
                assert_eq!(c[i * n + j], want);
            }
        }
    }

    #[test]
    fn ab_matches_the_definition() {
        let (r, m, n) = (41, 6, 9);
        let a: Vec<f32> = (0..r * m).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..m * n).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
        let c = ab(&a, r, m, &b, n);
        for i in 0..r {
            for j in 0..n {
                let want: f32 = (0..m).map(|t| a[i * m + t] * b[t * n + j]).sum();
                assert_eq!(c[i * n + j], want);
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), p> = <x, col2im(p)> for every x and p: the definition of the adjoint
        let g = ConvGeom {
            cin: 2,
            h: 5,
            w: 4,
            kh: 3,
            kw: 2,
            stride: 2,
            padding: 1,
        };
        let x: Vec<f32> = (0..2 * 5 * 4)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let (oh, ow) = g.out_hw();
        let p: Vec<f32> = (0..oh * ow * g.patch())
            .map(|i| ((i * 3) % 13) as f32 - 6.0)
            .collect();
        let lhs: f32 = g.im2col(&x).iter().zip(&p).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&g.col2im(&p)).map(|(a, b)| a * b).sum();
        assert_eq!(lhs, rhs);
    }

    #[test]
    fn im2col_picks_the_padded_neighbourhood() {
        let g = ConvGeom {
            cin: 1,
            h: 2,
            w: 2,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 1,
        };
        let p = g.im2col(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(g.out_hw(), (2, 2));
        // output (0,0): the 3×3 window centred on pixel (0,0)
        assert_eq!(&p[..9], &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    }
}
