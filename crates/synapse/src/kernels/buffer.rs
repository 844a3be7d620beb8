//! New output buffers, written in parallel without a serial zeroing pass first.
//!
//! `vec![0.0; n]` zeroes the whole buffer on the calling thread before any worker starts: for a
//! ResNet20 training step that serial `memset` of cold memory was a quarter of the main
//! thread's time, while the other core waited. Here each parallel task prepares only its own
//! chunk, just before writing it (while it is in cache), or copies rows straight into
//! uninitialised memory. Buffers of at most one task's worth are built on the calling thread.

use super::gemm::Element;
use super::worth_splitting;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A buffer of `len` elements built in chunks of `chunk` elements (the last may be shorter):
/// `fill(index, chunk)` sees its chunk zeroed and writes or accumulates into it. Chunks run in
/// parallel, at least `min_chunks` per task.
pub(crate) fn par_build<T: Element>(
    len: usize,
    chunk: usize,
    min_chunks: usize,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let parts = &mut out.spare_capacity_mut()[..len];
    if worth_splitting(len) {
        parts
            .par_chunks_mut(chunk.max(1))
            .with_min_len(min_chunks.max(1))
            .enumerate()
            .for_each(|(index, part)| fill(index, zeroed(part)));
    } else {
        parts
            .chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(index, part)| fill(index, zeroed(part)));
    }
    // SAFETY: the chunks above cover all `len` elements and `zeroed` initialised each before
    // `fill` saw it; had a task panicked, the panic would have propagated before this line.
    unsafe { out.set_len(len) };
    out
}

/// `rows × width` elements whose row `r` is a copy of `row(r)` (which must be `width` long),
/// rows copied in parallel, at least `min_rows` per task.
pub(crate) fn par_gather_rows<'a, T: Element>(
    rows: usize,
    width: usize,
    min_rows: usize,
    row: impl Fn(usize) -> &'a [T] + Sync + Send,
) -> Vec<T> {
    if width == 0 {
        return Vec::new();
    }
    let len = rows * width;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let rows_out = &mut out.spare_capacity_mut()[..len];
    // panics (before `set_len`) unless the source row is exactly `width` long
    if worth_splitting(len) {
        rows_out
            .par_chunks_mut(width)
            .with_min_len(min_rows.max(1))
            .enumerate()
            .for_each(|(r, dst)| write_copy(dst, row(r)));
    } else {
        rows_out
            .chunks_mut(width)
            .enumerate()
            .for_each(|(r, dst)| write_copy(dst, row(r)));
    }
    // SAFETY: `rows` chunks of `width` elements cover `len`, each fully written by
    // `write_copy`, which fails rather than write a row of another length.
    unsafe { out.set_len(len) };
    out
}

/// Copies `src` into `dst`, initialising all of it; panics if the lengths differ. (The
/// standard library's `write_copy_of_slice`, which needs Rust 1.93.)
pub(crate) fn write_copy<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    // SAFETY: both slices hold `src.len()` elements, `MaybeUninit<T>` has `T`'s layout, and a
    // shared and an exclusive borrow cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len());
    }
}

/// Initialises `part` with zeros and returns it as initialised elements.
fn zeroed<T: Element>(part: &mut [MaybeUninit<T>]) -> &mut [T] {
    for v in part.iter_mut() {
        v.write(T::ZERO);
    }
    // SAFETY: every element was written just above, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_zeroes_every_chunk_before_filling() {
        // accumulating into the chunk shows it started at zero; lengths not a multiple of
        // the chunk size leave a short last chunk
        for (len, chunk, min) in [(10, 3, 1), (12, 4, 2), (0, 5, 1), (7, 100, 1), (5, 1, 4)] {
            let v: Vec<f64> = par_build(len, chunk, min, |i, part| {
                for (j, x) in part.iter_mut().enumerate() {
                    *x += (i * chunk + j) as f64;
                }
            });
            assert_eq!(v, (0..len).map(|k| k as f64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn gather_copies_each_row_from_its_source() {
        let src: Vec<f32> = (0..12).map(|k| k as f32).collect();
        // rows in reverse order
        let v = par_gather_rows(3, 4, 1, |r| &src[(2 - r) * 4..][..4]);
        assert_eq!(
            v,
            [8., 9., 10., 11., 4., 5., 6., 7., 0., 1., 2., 3.].to_vec()
        );
        assert!(par_gather_rows::<f32>(5, 0, 1, |_| &[]).is_empty());
    }

    #[test]
    #[should_panic]
    fn gather_refuses_a_row_of_the_wrong_length() {
        let src = [1.0f32; 3];
        par_gather_rows(2, 4, 1, |_| &src[..]);
    }
}
