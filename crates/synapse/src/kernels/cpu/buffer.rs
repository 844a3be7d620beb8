//! New output buffers, written in parallel without a serial zeroing pass first.
//!
//! `vec![0.0; n]` zeroes the whole buffer on the calling thread before any worker starts: for a
//! ResNet20 training step that serial `memset` of cold memory was a quarter of the main
//! thread's time, while the other core waited. Here each parallel task prepares only its own
//! chunk, just before writing it (while it is in cache), or a writer that sets every element
//! (a matrix product) writes straight into uninitialised memory and proves it with a
//! [`Written`]. Buffers of at most one task's worth are built on the calling thread.

use super::gemm::Element;
use super::{items_per_task, worth_splitting};
use candle_core::{bail, Result};
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
    par_build_on(len, chunk, min_chunks, Threads::All, fill)
}

/// [`par_build`] on the given threads (in order on the calling thread on [`Threads::One`]).
pub(crate) fn par_build_on<T: Element>(
    len: usize,
    chunk: usize,
    min_chunks: usize,
    threads: Threads,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let parts = &mut out.spare_capacity_mut()[..len];
    par_fill(parts, chunk, min_chunks, threads, fill);
    // SAFETY: `par_fill` initialised all `len` elements; had a task panicked, the panic would
    // have propagated before this line.
    unsafe { out.set_len(len) };
    out
}

/// [`par_build`] into a given buffer: initialises all of `parts` and returns the proof. On
/// [`Threads::One`] (inside a task that is itself one of many) the chunks run in order on the
/// calling thread.
pub(crate) fn par_fill<T: Element>(
    parts: &mut [MaybeUninit<T>],
    chunk: usize,
    min_chunks: usize,
    threads: Threads,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Written {
    if threads == Threads::All && worth_splitting(parts.len()) {
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
    // SAFETY: the chunks above cover all of `parts` and `zeroed` initialised each before
    // `fill` saw it (a panic in a task propagates before this line).
    unsafe { Written::new(parts) }
}

/// How many threads one image's work may use: all of them when it is the only image, one when
/// the images themselves run in parallel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    All,
    One,
}

/// Proof that a region of an output buffer has been initialised, element by element: made
/// only by the writers that fill every element of the slice they are given
/// ([`Written::new`] is `unsafe` for that reason), checked by [`per_image`] to be exactly the
/// part it handed out.
#[derive(Debug)]
pub(crate) struct Written {
    start: *const (),
    len: usize,
}

impl Written {
    /// # Safety
    /// Every element of `region` must have been written.
    pub(crate) unsafe fn new<T>(region: &[MaybeUninit<T>]) -> Self {
        Self {
            start: region.as_ptr().cast(),
            len: region.len(),
        }
    }

    fn covers<T>(&self, region: &[MaybeUninit<T>]) -> bool {
        self.start == region.as_ptr().cast::<()>() && self.len == region.len()
    }
}

/// A buffer of `images` parts of `len` elements, part `i` written by `fill(i, part, threads)`:
/// images in parallel, each on one thread ([`Threads::One`]; small parts several to a task); a
/// single image gets all threads.
/// Working a whole image at a time in one task keeps its intermediate buffers (its unfolded
/// columns) in that core's cache and needs no rearranging of the batch.
pub(crate) fn per_image<T: Element>(
    images: usize,
    len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>], Threads) -> Result<Written> + Sync,
) -> Result<Vec<T>> {
    let total = images * len;
    let mut out: Vec<T> = Vec::with_capacity(total);
    let parts = &mut out.spare_capacity_mut()[..total];
    let checked = |i: usize, part: &mut [MaybeUninit<T>], threads| {
        let written = fill(i, part, threads)?;
        if !written.covers(part) {
            bail!("image {i}: its output was not written as a whole");
        }
        Ok(())
    };
    if images == 1 {
        checked(0, parts, Threads::All)?;
    } else if len > 0 {
        parts
            .par_chunks_mut(len)
            .with_min_len(items_per_task(len))
            .enumerate()
            .try_for_each(|(i, part)| checked(i, part, Threads::One))?;
    }
    // SAFETY: every part was covered by a `Written` proof (checked above; an error returns
    // before this line), and the parts tile all `total` elements.
    unsafe { out.set_len(total) };
    Ok(out)
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

    /// Each image's part is written by its own call (images in parallel, one thread each; a
    /// single image with all threads), and a part left partly unwritten is an error.
    #[test]
    fn per_image_fills_each_part_and_refuses_a_partial_write() {
        for images in [1, 2, 5] {
            let v: Vec<f32> = per_image(images, 3, |i, part, threads| {
                assert_eq!(threads == Threads::All, images == 1);
                for (j, d) in part.iter_mut().enumerate() {
                    d.write((10 * i + j) as f32);
                }
                // SAFETY: all three elements were written just above
                Ok(unsafe { Written::new(part) })
            })
            .unwrap();
            let expected: Vec<f32> = (0..images)
                .flat_map(|i| (0..3).map(move |j| (10 * i + j) as f32))
                .collect();
            assert_eq!(v, expected);
        }
        let partial = per_image::<f32>(2, 4, |_, part, _| {
            let (head, _) = part.split_at_mut(2);
            head.iter_mut().for_each(|d| {
                d.write(1.0);
            });
            // SAFETY: the two elements of `head` were written just above
            Ok(unsafe { Written::new(head) })
        });
        assert!(partial.is_err());
    }
}
