//! A checked front to the `gemm` crate, the matrix multiply candle's CPU backend already uses.
//!
//! `gemm` takes raw pointers and arbitrary row/column strides, which is what lets the kernels
//! above multiply by a transposed matrix without copying it. This file is the only place that
//! calls it: every matrix view is checked against its buffer here, so the convolution and
//! matrix-product kernels stay free of `unsafe`.

use candle_core::{bail, Result};
use gemm::Parallelism;

/// The element types the CPU kernels support: single precision for training and attacks,
/// double precision for the finite-difference checks.
pub trait Element:
    Copy
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::AddAssign
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    /// The value nearest to `v` (how a learning rate enters an f32 update, as candle's
    /// `affine` converts it).
    fn from_f64(v: f64) -> Self;
    /// The value as f64 (exact).
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// A read-only `rows × cols` matrix inside a buffer: element (r, c) is at
/// `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Matrix<'a, T> {
    /// A strided view; fails when the view reaches past the end of `data`.
    pub fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let extent = extent(rows, cols, row_stride, col_stride);
        if extent > data.len() {
            bail!(
                "a {rows}×{cols} matrix with strides ({row_stride}, {col_stride}) needs {extent} \
                 elements, the buffer has {}",
                data.len()
            );
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A dense row-major view of the first `rows * cols` elements.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Number of elements a strided view spans (0 for an empty matrix).
fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

/// Below this many multiply-adds a product runs on the calling thread: splitting it costs more
/// than it saves.
const PARALLEL_WORK: usize = 1 << 17;

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), `dst` row-major with
/// `dst_row_stride` between rows.
///
/// Split over the rayon pool for large products; `gemm` divides the output, never the inner
/// dimension, between threads, so the result does not depend on the number of threads.
pub fn matmul_into<T: Element>(
    dst: &mut [T],
    dst_row_stride: usize,
    lhs: Matrix<'_, T>,
    rhs: Matrix<'_, T>,
    accumulate: bool,
) -> Result<()> {
    product(dst, dst_row_stride, lhs, rhs, accumulate)
}

/// `lhs · rhs` as a new row-major matrix, written by `gemm` without zeroing it first.
pub fn matmul_new<T: Element>(lhs: Matrix<'_, T>, rhs: Matrix<'_, T>) -> Result<Vec<T>> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        bail!("matrix product of {m}×{k} and {}×{n}", rhs.rows);
    }
    if m == 0 || n == 0 || k == 0 {
        return Ok(vec![T::ZERO; m * n]);
    }
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: as in `product`; with `read_dst` false gemm never reads the destination and
    // writes each of its m·n elements (m, n, k > 0), so all of `out` is initialised before
    // `set_len`. The pointer comes from the spare capacity, no reference to uninitialised
    // memory is formed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            parallelism(m * n * k),
        );
        out.set_len(m * n);
    }
    Ok(out)
}

fn parallelism(work: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= PARALLEL_WORK {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

fn product<T: Element>(
    dst: &mut [T],
    dst_row_stride: usize,
    lhs: Matrix<'_, T>,
    rhs: Matrix<'_, T>,
    accumulate: bool,
) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        bail!("matrix product of {m}×{k} and {}×{n}", rhs.rows);
    }
    if extent(m, n, dst_row_stride, 1) > dst.len() || (m > 1 && dst_row_stride < n) {
        bail!(
            "a {m}×{n} product does not fit a buffer of {} with row stride {dst_row_stride}",
            dst.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_row_stride..r * dst_row_stride + n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    // SAFETY: every element gemm reads or writes lies inside the checked extents above (the
    // views were checked when made, dst here), strides are non-negative and fit in isize
    // because the buffers they index exist, and dst does not alias lhs or rhs (it is borrowed
    // mutably while they are borrowed shared).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism(m * n * k),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as u64 * 2654435761 + seed) % 97) as f64 / 13.0 - 3.0)
            .collect()
    }

    #[test]
    fn products_of_plain_and_transposed_views_match_the_definition() {
        let (m, k, n) = (7, 5, 9);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let expected = naive(&a, &b, m, k, n);
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for (lhs, rhs) in [
            (
                Matrix::row_major(&a, m, k).unwrap(),
                Matrix::row_major(&b, k, n).unwrap(),
            ),
            (
                Matrix::row_major(&at, k, m).unwrap().t(),
                Matrix::row_major(&bt, n, k).unwrap().t(),
            ),
        ] {
            let mut c = vec![0.0; m * n];
            matmul_into(&mut c, n, lhs, rhs, false).unwrap();
            for (got, want) in c.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-12, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn new_products_equal_products_into_buffers() {
        for (m, k, n) in [(7, 5, 9), (64, 300, 40), (3, 0, 2)] {
            let a = values(m * k, 5);
            let b = values(k * n, 6);
            let (lhs, rhs) = (
                Matrix::row_major(&a, m, k).unwrap(),
                Matrix::row_major(&b, k, n).unwrap(),
            );
            let mut c = vec![0.0; m * n];
            matmul_into(&mut c, n, lhs, rhs, false).unwrap();
            assert_eq!(matmul_new(lhs, rhs).unwrap(), c);
        }
    }

    #[test]
    fn accumulates_into_a_strided_destination() {
        let (m, k, n, stride) = (3, 4, 2, 5);
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        let product = naive(&a, &b, m, k, n);
        let mut c = vec![1.0; m * stride];
        let lhs = Matrix::row_major(&a, m, k).unwrap();
        let rhs = Matrix::row_major(&b, k, n).unwrap();
        matmul_into(&mut c, stride, lhs, rhs, true).unwrap();
        for r in 0..m {
            for j in 0..stride {
                let want = if j < n { 1.0 + product[r * n + j] } else { 1.0 };
                assert!((c[r * stride + j] - want).abs() < 1e-12, "({r}, {j})");
            }
        }
    }

    #[test]
    fn views_and_destinations_that_do_not_fit_are_refused() {
        let a = vec![0f32; 10];
        assert!(Matrix::row_major(&a, 3, 4).is_err());
        assert!(Matrix::new(&a, 2, 5, 5, 1).is_ok());
        let m = Matrix::row_major(&a, 2, 5).unwrap();
        let mut small = vec![0f32; 3];
        assert!(matmul_into(&mut small, 2, m, m.t(), false).is_err());
        assert!(matmul_into(&mut small, 2, m, m, false).is_err());
    }
}
