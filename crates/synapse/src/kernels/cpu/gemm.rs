//! A checked front to the `gemm` crate, the matrix multiply candle's CPU backend already uses.
//!
//! `gemm` takes raw pointers and arbitrary row/column strides, which is what lets the kernels
//! above multiply by a transposed matrix without copying it. This file is the only place that
//! calls it: every matrix view is checked against its buffer here, so the convolution and
//! matrix-product kernels stay free of `unsafe`.

use super::buffer::{Threads, Written};
use candle_core::{bail, Result};
use gemm::Parallelism;
use std::mem::MaybeUninit;

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

/// `lhs · rhs` as a new row-major matrix, written by `gemm` without zeroing it first.
pub fn matmul_new<T: Element>(lhs: Matrix<'_, T>, rhs: Matrix<'_, T>) -> Result<Vec<T>> {
    matmul_new_on(lhs, rhs, Threads::All)
}

/// [`matmul_new`] on the given threads.
///
/// A product with few rows (a fully connected layer on a small batch: `[8, 3072] · [3072, 3000]`)
/// is computed column-major and then transposed: `gemm` turns a row-major product around to
/// suit its kernel, which makes the large factor the one it repacks — a copy of the whole
/// weight matrix every pass, a quarter of the CIFAR MLP's training step. Column-major, the
/// large factor is streamed as it is and only the small one is packed; transposing the few
/// rows of the result afterwards is cheap.
pub(crate) fn matmul_new_on<T: Element>(
    lhs: Matrix<'_, T>,
    rhs: Matrix<'_, T>,
    threads: Threads,
) -> Result<Vec<T>> {
    let (m, n) = (lhs.rows, rhs.cols);
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    if m <= FEW_ROWS && m < n {
        let mut columns: Vec<T> = Vec::with_capacity(m * n);
        write(
            &mut columns.spare_capacity_mut()[..m * n],
            DstOrder::ColumnMajor,
            lhs,
            rhs,
            threads,
        )?;
        // SAFETY: `write` returned Ok, so it initialised all `m * n` elements.
        unsafe { columns.set_len(m * n) };
        for i in 0..m {
            out.extend(columns[i..].iter().step_by(m));
        }
        return Ok(out);
    }
    matmul_write(&mut out.spare_capacity_mut()[..m * n], lhs, rhs, threads)?;
    // SAFETY: `matmul_write` returned Ok, so it initialised all `m * n` elements of the spare
    // capacity it was given.
    unsafe { out.set_len(m * n) };
    Ok(out)
}

/// Products with at most this many rows are computed column-major ([`matmul_new_on`]): up to
/// twice `gemm`'s register block of rows (16 for f32 with AVX2) it leaves the other factor
/// unpacked in that orientation.
const FEW_ROWS: usize = 32;

/// How a product's destination is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DstOrder {
    RowMajor,
    ColumnMajor,
}

/// Writes `lhs · rhs` row-major into `dst`, which must hold exactly its `m × n` elements;
/// `gemm` writes every element without reading any. On [`Threads::One`] the product runs on
/// the calling thread; on [`Threads::All`] `gemm` splits products worth it over the output.
pub(crate) fn matmul_write<T: Element>(
    dst: &mut [MaybeUninit<T>],
    lhs: Matrix<'_, T>,
    rhs: Matrix<'_, T>,
    threads: Threads,
) -> Result<Written> {
    write(dst, DstOrder::RowMajor, lhs, rhs, threads)
}

/// [`matmul_write`] with the destination in either order.
fn write<T: Element>(
    dst: &mut [MaybeUninit<T>],
    order: DstOrder,
    lhs: Matrix<'_, T>,
    rhs: Matrix<'_, T>,
    threads: Threads,
) -> Result<Written> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        bail!("matrix product of {m}×{k} and {}×{n}", rhs.rows);
    }
    if dst.len() != m * n {
        bail!(
            "matrix product of {m}×{k} and {k}×{n} into {} elements",
            dst.len()
        );
    }
    if m == 0 || n == 0 || k == 0 {
        dst.iter_mut().for_each(|v| {
            v.write(T::ZERO);
        });
        // SAFETY: every element (if any) was written just above.
        return Ok(unsafe { Written::new(dst) });
    }
    let threads = match threads {
        Threads::All => parallelism(m * n * k),
        Threads::One => Parallelism::None,
    };
    let (dst_cs, dst_rs) = match order {
        DstOrder::RowMajor => (1, n as isize),
        DstOrder::ColumnMajor => (m as isize, 1),
    };
    // SAFETY: every element gemm reads lies inside the views, checked when they were made;
    // strides are non-negative and fit in isize because the buffers they index exist; the
    // destination is an exclusively borrowed buffer of exactly m·n elements (row-major with
    // strides (n, 1) or column-major with (1, m): each element once), aliasing nothing gemm
    // reads. With `read_dst` false gemm never reads it and writes each of its m·n elements
    // (m, n, k > 0); the pointer comes from `MaybeUninit` elements, so no reference to
    // uninitialised `T` is formed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<T>(),
            dst_cs,
            dst_rs,
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
            threads,
        );
        // SAFETY: gemm has written all m·n elements (see above).
        Ok(Written::new(dst))
    }
}

fn parallelism(work: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= PARALLEL_WORK {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
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

    /// Plain and transposed views, products with few rows (computed column-major) and with
    /// many, products large enough to be split between threads, and an empty inner dimension,
    /// against the definition.
    #[test]
    fn products_of_plain_and_transposed_views_match_the_definition() {
        for (m, k, n) in [
            (7, 5, 9),
            (64, 300, 40),
            (3, 0, 2),
            (8, 200, 700),
            (32, 9, 5),
        ] {
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
                let c = matmul_new(lhs, rhs).unwrap();
                assert_eq!(c.len(), m * n);
                for (got, want) in c.iter().zip(&expected) {
                    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn views_and_products_that_do_not_fit_are_refused() {
        let a = vec![0f32; 10];
        assert!(Matrix::row_major(&a, 3, 4).is_err());
        assert!(Matrix::new(&a, 2, 5, 5, 1).is_ok());
        assert!(Matrix::new(&a, 2, 5, 6, 1).is_err());
        let m = Matrix::row_major(&a, 2, 5).unwrap();
        assert!(matmul_new(m, m).is_err());
        assert!(matmul_new(m, m.t()).is_ok());
    }
}
