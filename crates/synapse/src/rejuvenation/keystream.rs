//! The rejuvenation stream's words, generated ahead on several threads and read in order.
//!
//! Rejuvenation reads one 32-bit word of a ChaCha8 stream per weight (and a 64-bit value per
//! reset weight): ~19 M words a step for the paper's CIFAR MLP. Drawn one at a time through the
//! generator's 256-byte buffer, that alone took longer than the training step. ChaCha's output
//! is a function of its position, so pieces of it can be computed on every thread at once and
//! then read in order: the reader sees exactly the words, in exactly the order, that the
//! sequential generator would have given, and leaves the generator at the position it would
//! have reached. A run is therefore bit-identical to one drawn word by word.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Words generated per parallel task (64 KiB of keystream).
const PIECE: usize = 1 << 14;
/// The fewest words generated at once, so that refills are rare.
const MIN_REFILL: usize = 1 << 16;

/// A window of a ChaCha8 stream, read word by word like the generator itself.
pub(crate) struct Keystream {
    /// Key and stream number (its own position is never used).
    base: ChaCha8Rng,
    /// Stream position of the word after the last generated one.
    end: u128,
    /// Generated words; `words[read..]` are not read yet.
    words: Vec<u32>,
    read: usize,
}

impl Keystream {
    /// A reader that continues `rng` from its current position.
    pub(crate) fn continuing(rng: &ChaCha8Rng) -> Self {
        Self {
            base: rng.clone(),
            end: rng.get_word_pos(),
            words: Vec::new(),
            read: 0,
        }
    }

    /// Starts again from `rng`'s position, keeping the allocated buffer.
    pub(crate) fn restart(&mut self, rng: &ChaCha8Rng) {
        self.base = rng.clone();
        self.end = rng.get_word_pos();
        self.words.clear();
        self.read = 0;
    }

    /// Stream position of the next word to be read: where the sequential generator would be.
    pub(crate) fn position(&self) -> u128 {
        self.end - (self.words.len() - self.read) as u128
    }

    /// The words generated and not yet read, in stream order.
    pub(crate) fn unread(&self) -> &[u32] {
        &self.words[self.read..]
    }

    /// Marks the first `n` unread words as read.
    pub(crate) fn skip(&mut self, n: usize) {
        debug_assert!(n <= self.words.len() - self.read);
        self.read += n;
    }

    /// Makes at least `n` words available unread, generating more (in parallel) if needed.
    pub(crate) fn ensure(&mut self, n: usize) {
        let unread = self.words.len() - self.read;
        if unread >= n {
            return;
        }
        self.words.drain(..self.read);
        self.read = 0;
        let more = (n - unread).max(MIN_REFILL);
        let from = self.words.len();
        self.words.resize(from + more, 0);
        let (base, start) = (&self.base, self.end);
        self.words[from..]
            .par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(k, piece)| {
                let mut rng = base.clone();
                rng.set_word_pos(start + (k * PIECE) as u128);
                // the generator's words, little-endian, as `next_u32` would return them
                rng.fill_bytes(bytemuck::cast_slice_mut(piece));
                if cfg!(target_endian = "big") {
                    piece.iter_mut().for_each(|w| *w = u32::from_le(*w));
                }
            });
        self.end += more as u128;
    }
}

/// Reads exactly as `ChaCha8Rng` (rand_core's `BlockRng`) consumes its words: `next_u64` is two
/// consecutive words, the first the low half; `fill_bytes` takes ⌈len/4⌉ words, little-endian.
impl RngCore for Keystream {
    fn next_u32(&mut self) -> u32 {
        self.ensure(1);
        let word = self.words[self.read];
        self.read += 1;
        word
    }

    fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32());
        (high << 32) | low
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let bytes = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn reads_the_same_words_as_the_generator_and_ends_at_its_position() {
        let mut reference = crate::rng::stream(42, crate::rng::STREAM_REJUVENATION);
        // start mid-buffer, as after an odd number of draws
        for _ in 0..37 {
            reference.next_u32();
        }
        let mut ours = Keystream::continuing(&reference);
        let mut seen = 0usize;
        // mixed reads across many buffer and refill boundaries, including a 64-bit value
        // straddling the generator's 64-word buffer
        for i in 0..200_000usize {
            match i % 7 {
                0 => assert_eq!(ours.next_u64(), reference.next_u64(), "draw {i}"),
                1 => {
                    let (mut a, mut b) = ([0u8; 7], [0u8; 7]);
                    ours.fill_bytes(&mut a);
                    reference.fill_bytes(&mut b);
                    assert_eq!(a, b, "draw {i}");
                }
                2 => assert_eq!(
                    ours.random_range(-0.5f64..=0.5),
                    reference.random_range(-0.5f64..=0.5),
                    "draw {i}"
                ),
                _ => assert_eq!(ours.next_u32(), reference.next_u32(), "draw {i}"),
            }
            seen += 1;
            assert_eq!(
                ours.position(),
                reference.get_word_pos(),
                "after {seen} draws"
            );
        }
        // bulk reads through `unread`/`skip` agree too
        ours.ensure(100_000);
        let ahead: Vec<u32> = ours.unread()[..100_000].to_vec();
        ours.skip(100_000);
        let expected: Vec<u32> = (0..100_000).map(|_| reference.next_u32()).collect();
        assert_eq!(ahead, expected);
        assert_eq!(ours.position(), reference.get_word_pos());
    }
}
