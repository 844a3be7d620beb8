//! Image data for the synfed federated-learning privacy simulator.
//!
//! This crate turns MNIST, CIFAR-10 and CIFAR-100 files — or the real subsets compiled into
//! it — into in-memory [`Dataset`]s, and provides everything an experiment needs on top:
//!
//! - [`load`] / [`DatasetName`]: `mnist`, `cifar10`, `cifar100` from a data directory
//!   (official IDX / CIFAR binary files, gzip or raw), and the embedded `demo-mnist`,
//!   `demo-cifar10`. Every file is validated; corrupt input yields a [`DataError`] naming the
//!   file, never a panic.
//! - [`Normalization`]: per-channel mean/std computed on the training split (paper §4.1),
//!   serialisable so reconstructions can be de-normalised for display.
//! - [`Dataset::batch`]: normalised `[B, C, H, W]` tensors and `[B]` `u32` labels.
//! - [`Batches`], [`kfold`], [`partition`]: epoch batch orders, k-fold splits and federated
//!   client partitions, all reproducible from a `u64` seed (ChaCha8; candle's RNG cannot be
//!   seeded).
//!
//! ```
//! use candle_core::{DType, Device};
//! use synfed_data::{load, partition, Batches, Partition};
//!
//! let splits = load("demo-mnist", None)?;
//! let clients = partition(splits.train.labels(), 4, &"dirichlet:0.5".parse()?, 7)?;
//! let batches = Batches::shuffled(clients[0].iter().copied(), 32, 7, 0)?;
//! for batch in &batches {
//!     let (x, y) = splits.train.batch(batch, &splits.normalization, &Device::Cpu, DType::F32)?;
//!     assert_eq!(x.dims()[1..], [1, 28, 28]);
//!     assert_eq!(y.dims(), [batch.len()]);
//! }
//! # Ok::<(), synfed_data::DataError>(())
//! ```

mod batching;
mod cifar;
mod dataset;
mod embedded;
mod error;
mod idx;
mod kfold;
mod normalization;
mod partition;
mod read;
mod rng;
mod source;
#[cfg(test)]
mod testutil;

pub use batching::Batches;
pub use cifar::{cifar100_from_bytes, cifar10_from_bytes};
pub use dataset::{Dataset, ImageShape, Splits};
pub use embedded::{DEMO_TEST_LEN, DEMO_TRAIN_LEN};
pub use error::{DataError, Result};
pub use idx::mnist_from_bytes;
pub use kfold::{kfold, Fold};
pub use normalization::Normalization;
pub use partition::{partition, Partition};
pub use source::{load, DatasetName};
