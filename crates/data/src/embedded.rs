//! Real MNIST and CIFAR-10 subsets compiled into the crate (`demo-mnist`, `demo-cifar10`).
//!
//! The simulator has to run — and its tests have to pass — on machines without a data
//! directory. Rather than synthetic stand-ins, the crate embeds the first 1,600 training and
//! first 400 test images of the official files, cut by `embedded/make_subset.py` and stored in
//! the official formats, so they go through the very same readers as the full data sets. See
//! `embedded/README.md` for provenance, checksums and licences.

use std::path::PathBuf;

use crate::cifar;
use crate::dataset::{Dataset, Splits};
use crate::error::Result;
use crate::idx;

/// Training images in each embedded subset.
pub const DEMO_TRAIN_LEN: usize = 1600;
/// Test images in each embedded subset.
pub const DEMO_TEST_LEN: usize = 400;

/// A gzip file compiled into the binary, named by its path under `embedded/`.
struct Embedded {
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! embedded {
    ($path:literal) => {
        Embedded {
            path: $path,
            bytes: include_bytes!(concat!("../embedded/", $path)),
        }
    };
}

const MNIST_TRAIN_IMAGES: Embedded = embedded!("mnist/train-images-idx3-ubyte.gz");
const MNIST_TRAIN_LABELS: Embedded = embedded!("mnist/train-labels-idx1-ubyte.gz");
const MNIST_TEST_IMAGES: Embedded = embedded!("mnist/t10k-images-idx3-ubyte.gz");
const MNIST_TEST_LABELS: Embedded = embedded!("mnist/t10k-labels-idx1-ubyte.gz");
const CIFAR10_TRAIN: Embedded = embedded!("cifar10/data_batch_1.bin.gz");
const CIFAR10_TEST: Embedded = embedded!("cifar10/test_batch.bin.gz");

impl Embedded {
    /// The pseudo-path that names this file in errors.
    fn pseudo_path(&self) -> PathBuf {
        PathBuf::from("embedded").join(self.path)
    }
}

/// The embedded MNIST subset: 1,600 train and 400 test images.
pub(crate) fn demo_mnist() -> Result<Splits> {
    let split = |name: &str, images: &Embedded, labels: &Embedded| -> Result<Dataset> {
        idx::mnist_from_bytes(
            name,
            images.bytes,
            &images.pseudo_path(),
            labels.bytes,
            &labels.pseudo_path(),
        )
    };
    Splits::new(
        split("demo-mnist/train", &MNIST_TRAIN_IMAGES, &MNIST_TRAIN_LABELS)?,
        split("demo-mnist/test", &MNIST_TEST_IMAGES, &MNIST_TEST_LABELS)?,
    )
}

/// The embedded CIFAR-10 subset: 1,600 train and 400 test images.
pub(crate) fn demo_cifar10() -> Result<Splits> {
    let split = |name: &str, file: &Embedded| -> Result<Dataset> {
        cifar::cifar10_from_bytes(name, file.bytes, &file.pseudo_path())
    };
    Splits::new(
        split("demo-cifar10/train", &CIFAR10_TRAIN)?,
        split("demo-cifar10/test", &CIFAR10_TEST)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageShape;

    #[test]
    fn demo_mnist_loads() {
        let splits = demo_mnist().unwrap();
        assert_eq!(splits.train.len(), DEMO_TRAIN_LEN);
        assert_eq!(splits.test.len(), DEMO_TEST_LEN);
        assert_eq!(splits.train.shape(), ImageShape::new(1, 28, 28));
        assert_eq!(&splits.train.labels()[..3], &[5, 0, 4]);
        assert_eq!(&splits.test.labels()[..3], &[7, 2, 1]);
        assert_eq!(splits.train.name(), "demo-mnist/train");
    }

    #[test]
    fn demo_cifar10_loads() {
        let splits = demo_cifar10().unwrap();
        assert_eq!(splits.train.len(), DEMO_TRAIN_LEN);
        assert_eq!(splits.test.len(), DEMO_TEST_LEN);
        assert_eq!(splits.train.shape(), ImageShape::new(3, 32, 32));
        fn names(ds: &Dataset) -> Vec<&str> {
            ds.labels()[..3]
                .iter()
                .map(|&l| ds.class_names()[l as usize].as_str())
                .collect()
        }
        assert_eq!(names(&splits.train), ["frog", "truck", "truck"]);
        assert_eq!(names(&splits.test), ["cat", "ship", "ship"]);
    }

    #[test]
    fn errors_name_the_embedded_file() {
        assert_eq!(
            MNIST_TEST_LABELS.pseudo_path(),
            PathBuf::from("embedded/mnist/t10k-labels-idx1-ubyte.gz")
        );
    }
}
