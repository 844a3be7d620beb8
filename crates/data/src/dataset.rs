//! In-memory image data sets and their train/test pairing.
//!
//! A [`Dataset`] keeps the images exactly as the files store them — `u8` pixels, one
//! channel-major plane after another (N×C×H×W) — so a full CIFAR-10 train split costs 150 MB
//! rather than 600 MB of `f32`, and raw pixels stay available for display and for
//! gradient-inversion metrics. Conversion to normalised tensors happens per batch, in
//! [`Dataset::batch`]. [`Splits`] pairs a train and a test set with the [`Normalization`]
//! computed on the train split (paper §4.1), so that every consumer normalises the same way.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::error::{DataError, Result};
use crate::normalization::Normalization;

/// Shape of one image: channels × height × width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// Number of channels (1 for MNIST, 3 for CIFAR).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// A `channels × height × width` shape.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Pixels in one channel plane (`height × width`).
    pub const fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Values in one image (`channels × height × width`).
    pub const fn numel(&self) -> usize {
        self.channels * self.plane()
    }

    /// `[channels, height, width]`, e.g. for building tensor shapes.
    pub const fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// A labelled image data set held in memory as raw `u8` pixels.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    shape: ImageShape,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

impl Dataset {
    /// Builds a data set from its parts, checking that they fit together: `pixels` holds
    /// `labels.len()` images of `shape` (channel-major planes), the shape is non-empty, there
    /// is at least one class, and every label is below `class_names.len()`.
    pub fn new(
        name: impl Into<String>,
        shape: ImageShape,
        pixels: Vec<u8>,
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let invalid = |reason: String| Err(DataError::InvalidDataset { reason });
        if shape.numel() == 0 {
            return invalid(format!("image shape {shape} is empty"));
        }
        if class_names.is_empty() {
            return invalid("no classes".into());
        }
        if labels.len().checked_mul(shape.numel()) != Some(pixels.len()) {
            return invalid(format!(
                "{} pixel bytes are not {} images of {shape}",
                pixels.len(),
                labels.len()
            ));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= class_names.len())
        {
            return invalid(format!(
                "label {label} of image {index} is out of range 0..{}",
                class_names.len()
            ));
        }
        Ok(Self {
            name: name.into(),
            shape,
            pixels,
            labels,
            class_names,
        })
    }

    /// The data set's name, e.g. `mnist/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of classes (labels range over `0..num_classes()`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Human-readable class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// All pixels: `len()` images of `shape().numel()` bytes each, channel-major planes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Raw pixels of image `index` (C×H×W, channel-major planes, 0–255).
    pub fn image(&self, index: usize) -> Result<&[u8]> {
        let numel = self.shape.numel();
        self.check_index(index)?;
        Ok(&self.pixels[index * numel..(index + 1) * numel])
    }

    /// Label of image `index`.
    pub fn label(&self, index: usize) -> Result<u32> {
        self.check_index(index)?;
        Ok(self.labels[index])
    }

    /// Number of images per class, indexed by label.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// A new data set holding the images at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let numel = self.shape.numel();
        let mut pixels = Vec::with_capacity(indices.len() * numel);
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            pixels.extend_from_slice(self.image(index)?);
            labels.push(self.labels[index]);
        }
        Ok(Self {
            name: self.name.clone(),
            shape: self.shape,
            pixels,
            labels,
            class_names: self.class_names.clone(),
        })
    }

    /// The images at `indices` as a normalised `[B, C, H, W]` tensor of `dtype` on `device`,
    /// and their labels as a `[B]` `u32` tensor.
    ///
    /// Pixels are scaled to [0, 1] and then normalised per channel with `norm`.
    pub fn batch(
        &self,
        indices: &[usize],
        norm: &Normalization,
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        norm.check_channels(self.shape.channels)?;
        let tables = norm.lookup_tables();
        let plane = self.shape.plane();
        let mut values = Vec::with_capacity(indices.len() * self.shape.numel());
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            let image = self.image(index)?;
            for (channel, table) in image.chunks_exact(plane).zip(&tables) {
                values.extend(channel.iter().map(|&p| table[usize::from(p)]));
            }
            labels.push(self.labels[index]);
        }
        let [c, h, w] = self.shape.dims();
        let images = Tensor::from_vec(values, (indices.len(), c, h, w), device)?.to_dtype(dtype)?;
        let labels = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((images, labels))
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len() {
            Ok(())
        } else {
            Err(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            })
        }
    }
}

impl fmt::Debug for Dataset {
    /// Summarises instead of dumping megabytes of pixels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("num_classes", &self.num_classes())
            .finish_non_exhaustive()
    }
}

/// A train and a test split of one data set, with the normalisation computed on `train`.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training images.
    pub train: Dataset,
    /// Test images.
    pub test: Dataset,
    /// Per-channel mean and std of `train` (pixels scaled to [0, 1]).
    pub normalization: Normalization,
}

impl Splits {
    /// Pairs `train` and `test`, which must share image shape and class names, and computes
    /// the normalisation on `train`.
    pub fn new(train: Dataset, test: Dataset) -> Result<Self> {
        if train.shape() != test.shape() {
            return Err(DataError::InvalidDataset {
                reason: format!(
                    "train images are {} but test images are {}",
                    train.shape(),
                    test.shape()
                ),
            });
        }
        if train.class_names() != test.class_names() {
            return Err(DataError::InvalidDataset {
                reason: "train and test splits have different classes".into(),
            });
        }
        let normalization = Normalization::from_dataset(&train)?;
        Ok(Self {
            train,
            test,
            normalization,
        })
    }

    /// One split carved in two: its first `held_out` images become the test split (attacked
    /// and tested on, never trained on), the rest the training split; the normalisation is
    /// computed on the training part.
    ///
    /// The paper's Table 3 trains on CIFAR-100's training set, which is not always at hand;
    /// carving its test set keeps the trained models' training images apart from the
    /// attacked ones.
    pub fn held_out(whole: &Dataset, held_out: usize) -> Result<Self> {
        if held_out == 0 || held_out >= whole.len() {
            return Err(DataError::InvalidDataset {
                reason: format!(
                    "cannot hold out {held_out} of {} images: both parts must be non-empty",
                    whole.len()
                ),
            });
        }
        let test: Vec<usize> = (0..held_out).collect();
        let train: Vec<usize> = (held_out..whole.len()).collect();
        Self::new(whole.subset(&train)?, whole.subset(&test)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| i.to_string()).collect()
    }

    /// Three 2×2×2 images; image `i` has R plane `10i..10i+3`, G plane `100+…`.
    fn tiny() -> Dataset {
        let mut pixels = Vec::new();
        for i in 0..3u8 {
            pixels.extend((0..4).map(|j| 10 * i + j));
            pixels.extend((0..4).map(|j| 100 + 10 * i + j));
        }
        Dataset::new(
            "tiny",
            ImageShape::new(2, 2, 2),
            pixels,
            vec![0, 1, 1],
            names(2),
        )
        .unwrap()
    }

    #[test]
    fn new_validates_parts() {
        let shape = ImageShape::new(1, 2, 2);
        let ok = Dataset::new("d", shape, vec![0; 8], vec![0, 1], names(2));
        assert!(ok.is_ok());
        for bad in [
            Dataset::new("d", shape, vec![0; 7], vec![0, 1], names(2)),
            Dataset::new("d", shape, vec![0; 8], vec![0, 2], names(2)),
            Dataset::new("d", shape, vec![0; 8], vec![0, 0], vec![]),
            Dataset::new("d", ImageShape::new(1, 0, 2), vec![], vec![0], names(1)),
        ] {
            assert!(
                matches!(bad, Err(DataError::InvalidDataset { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn accessors() {
        let ds = tiny();
        assert_eq!(ds.len(), 3);
        assert!(!ds.is_empty());
        assert_eq!(ds.shape().to_string(), "2x2x2");
        assert_eq!(ds.shape().plane(), 4);
        assert_eq!(ds.image(1).unwrap(), &[10, 11, 12, 13, 110, 111, 112, 113]);
        assert_eq!(ds.label(2).unwrap(), 1);
        assert_eq!(ds.label_histogram(), vec![1, 2]);
        assert!(format!("{ds:?}").contains("len: 3"));
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        let ds = tiny();
        assert!(matches!(
            ds.image(3),
            Err(DataError::IndexOutOfRange { index: 3, len: 3 })
        ));
        assert!(ds.label(usize::MAX).is_err());
        assert!(ds.subset(&[0, 5]).is_err());
        let norm = Normalization::identity(2);
        assert!(ds.batch(&[1, 3], &norm, &Device::Cpu, DType::F32).is_err());
    }

    #[test]
    fn subset_keeps_order_and_repeats() {
        let ds = tiny();
        let sub = ds.subset(&[2, 0, 2]).unwrap();
        assert_eq!(sub.len(), 3);
        assert_eq!(sub.labels(), &[1, 0, 1]);
        assert_eq!(sub.image(0).unwrap(), ds.image(2).unwrap());
        assert_eq!(sub.image(1).unwrap(), ds.image(0).unwrap());
        assert_eq!(ds.subset(&[]).unwrap().len(), 0);
    }

    #[test]
    fn batch_normalises_per_channel() {
        let ds = tiny();
        let norm = Normalization {
            mean: vec![0.0, 0.5],
            std: vec![1.0, 0.25],
        };
        let (x, y) = ds.batch(&[2, 0], &norm, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(x.dims(), &[2, 2, 2, 2]);
        assert_eq!(y.dtype(), DType::U32);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![1, 0]);
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = |p: u8, c: usize| (p as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        // image 2, R plane first pixel = 20; G plane first pixel = 120.
        assert!((x[0] - expect(20, 0)).abs() < 1e-6);
        assert!((x[4] - expect(120, 1)).abs() < 1e-6);
        // image 0 starts at offset 8.
        assert!((x[8] - expect(0, 0)).abs() < 1e-6);
        assert!((x[15] - expect(103, 1)).abs() < 1e-6);
    }

    #[test]
    fn batch_dtype_and_channel_check() {
        let ds = tiny();
        let (x, _) = ds
            .batch(&[0], &Normalization::identity(2), &Device::Cpu, DType::BF16)
            .unwrap();
        assert_eq!(x.dtype(), DType::BF16);
        let err = ds
            .batch(&[0], &Normalization::identity(3), &Device::Cpu, DType::F32)
            .unwrap_err();
        assert!(matches!(
            err,
            DataError::ChannelMismatch {
                expected: 3,
                found: 2
            }
        ));
        let (x, y) = ds
            .batch(&[], &Normalization::identity(2), &Device::Cpu, DType::F32)
            .unwrap();
        assert_eq!(x.dims(), &[0, 2, 2, 2]);
        assert_eq!(y.dims(), &[0]);
    }

    #[test]
    fn splits_check_compatibility_and_normalise_on_train() {
        let train = tiny();
        let test = tiny().subset(&[0]).unwrap();
        let splits = Splits::new(train.clone(), test).unwrap();
        assert_eq!(
            splits.normalization,
            Normalization::from_dataset(&train).unwrap()
        );
        let other =
            Dataset::new("o", ImageShape::new(1, 2, 2), vec![0; 4], vec![0], names(2)).unwrap();
        assert!(Splits::new(train.clone(), other).is_err());
        let other =
            Dataset::new("o", ImageShape::new(2, 2, 2), vec![0; 8], vec![0], names(3)).unwrap();
        assert!(Splits::new(train, other).is_err());
    }

    #[test]
    fn held_out_takes_the_first_images_as_test() {
        let whole = tiny();
        let splits = Splits::held_out(&whole, 1).unwrap();
        assert_eq!(splits.test.labels(), &[0]);
        assert_eq!(splits.test.pixels(), whole.image(0).unwrap());
        assert_eq!(splits.train.labels(), &[1, 1]);
        assert_eq!(splits.train.pixels(), &whole.pixels()[8..]);
        // normalised on the training part only: R plane of images 1, 2 = 10..14, 20..24
        let mean_r = (10..14).chain(20..24).sum::<u32>() as f32 / 8.0 / 255.0;
        assert!((splits.normalization.mean[0] - mean_r).abs() < 1e-6);
        assert!(Splits::held_out(&whole, 0).is_err());
        assert!(Splits::held_out(&whole, 3).is_err());
    }
}
