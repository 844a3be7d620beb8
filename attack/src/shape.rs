//! The shape of one image, `[C, H, W]`, and the input checks that scores and pictures share.
//!
//! Metrics take images as flat `&[f32]` slices in candle's channel-major `[C, H, W]` layout, so
//! a slice alone does not say what it holds; [`ImageShape`] does. The helpers here turn a wrong
//! length, a NaN, a value outside [0, 1] or a tensor of the wrong rank into an [`AttackError`]
//! that names the argument and the pixel, in one place, so that every public function validates
//! its input the same way.

use candle_core::{DType, Tensor};

use crate::error::{AttackError, Result};

/// Channels, height and width of one image stored as `[C, H, W]` (the data crate's type).
pub use synfed_data::ImageShape;

/// The input checks on an [`ImageShape`] that scores and pictures share.
pub(crate) trait ShapeChecks {
    /// Checks that the shape is non-empty and that `values` holds exactly one image of it.
    fn check_len(&self, what: &str, values: &[f32]) -> Result<()>;
    /// `(channel, row, column)` of flat index `index`.
    fn position(&self, index: usize) -> (usize, usize, usize);
}

impl ShapeChecks for ImageShape {
    fn check_len(&self, what: &str, values: &[f32]) -> Result<()> {
        let addressable = self
            .height
            .checked_mul(self.width)
            .and_then(|plane| plane.checked_mul(self.channels))
            .is_some_and(|numel| numel > 0);
        if !addressable {
            return Err(AttackError::BadShape {
                what: what.to_string(),
                shape: *self,
            });
        }
        if values.len() != self.numel() {
            return Err(AttackError::Length {
                what: what.to_string(),
                shape: *self,
                expected: self.numel(),
                found: values.len(),
            });
        }
        Ok(())
    }

    fn position(&self, index: usize) -> (usize, usize, usize) {
        let plane = self.plane().max(1);
        let width = self.width.max(1);
        let within = index % plane;
        (index / plane, within / width, within % width)
    }
}

/// Checks that `values` is one finite image of `shape`.
pub(crate) fn check_finite(what: &str, values: &[f32], shape: ImageShape) -> Result<()> {
    shape.check_len(what, values)?;
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => {
            let (channel, row, column) = shape.position(index);
            Err(AttackError::NonFinite {
                what: what.to_string(),
                value: values[index],
                channel,
                row,
                column,
            })
        }
    }
}

/// Checks that `values` is one image of `shape` with every value finite and in [0, 1].
pub(crate) fn check_unit_range(what: &str, values: &[f32], shape: ImageShape) -> Result<()> {
    check_finite(what, values, shape)?;
    match values.iter().position(|v| !(0.0..=1.0).contains(v)) {
        None => Ok(()),
        Some(index) => {
            let (channel, row, column) = shape.position(index);
            Err(AttackError::OutOfRange {
                what: what.to_string(),
                value: values[index],
                channel,
                row,
                column,
            })
        }
    }
}

/// A `[B, C, H, W]` tensor copied to the host as `f32`, one flat image after another.
pub(crate) struct HostBatch {
    values: Vec<f32>,
    shape: ImageShape,
}

impl HostBatch {
    /// Copies `tensor` (any float dtype, any device) after checking that it is a non-empty
    /// `[B, C, H, W]` batch.
    pub(crate) fn from_tensor(what: &str, tensor: &Tensor) -> Result<Self> {
        let &[batch, channels, height, width] = tensor.dims() else {
            return Err(AttackError::Rank {
                what: what.to_string(),
                expected: "[batch, channels, height, width]",
                dims: tensor.dims().to_vec(),
            });
        };
        let shape = ImageShape::new(channels, height, width);
        if batch == 0 {
            return Err(AttackError::Empty {
                what: format!("{what} (a batch of 0 images)"),
            });
        }
        if shape.numel() == 0 {
            return Err(AttackError::BadShape {
                what: what.to_string(),
                shape,
            });
        }
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self { values, shape })
    }

    /// Shape of each image.
    pub(crate) fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of images.
    pub(crate) fn len(&self) -> usize {
        self.values.len() / self.shape.numel()
    }

    /// The images in order, each `shape().numel()` values.
    pub(crate) fn images(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        self.values.chunks_exact(self.shape.numel())
    }

    /// Checks that `other` holds as many images of the same shape as `self`.
    pub(crate) fn check_same(&self, other: &Self, names: (&str, &str)) -> Result<()> {
        if self.shape == other.shape && self.len() == other.len() {
            Ok(())
        } else {
            Err(AttackError::ShapeMismatch {
                what: format!(
                    "{} holds {} images of {} but {} holds {} images of {}",
                    names.0,
                    self.len(),
                    self.shape,
                    names.1,
                    other.len(),
                    other.shape
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn position_is_channel_row_column() {
        let shape = ImageShape::new(3, 4, 5);
        assert_eq!(shape.position(0), (0, 0, 0));
        assert_eq!(shape.position(7), (0, 1, 2));
        assert_eq!(shape.position(20 + 19), (1, 3, 4));
        assert_eq!(shape.position(59), (2, 3, 4));
    }

    #[test]
    fn length_and_empty_shapes_are_errors() {
        let shape = ImageShape::new(1, 2, 2);
        assert!(shape.check_len("x", &[0.0; 4]).is_ok());
        let err = shape.check_len("x", &[0.0; 3]).unwrap_err();
        assert!(
            matches!(
                err,
                AttackError::Length {
                    expected: 4,
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = ImageShape::new(1, 0, 2).check_len("x", &[]).unwrap_err();
        assert!(matches!(err, AttackError::BadShape { .. }), "{err}");
        let huge = ImageShape::new(usize::MAX, 2, 2);
        assert!(matches!(
            huge.check_len("x", &[0.0; 4]),
            Err(AttackError::BadShape { .. })
        ));
    }

    #[test]
    fn checks_name_the_pixel() {
        let shape = ImageShape::new(2, 2, 2);
        let mut values = [0.5; 8];
        values[6] = f32::NAN;
        let err = check_finite("x[1]", &values, shape)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x[1]") && err.contains("channel 1, row 1, column 0"),
            "{err}"
        );
        values[6] = 1.5;
        let err = check_unit_range("y", &values, shape)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1.5") && err.contains("outside [0, 1]"),
            "{err}"
        );
    }

    #[test]
    fn batches_must_be_four_dimensional_and_non_empty() {
        let device = Device::Cpu;
        let three = Tensor::zeros((1, 2, 2), DType::F32, &device).unwrap();
        assert!(matches!(
            HostBatch::from_tensor("x", &three),
            Err(AttackError::Rank { .. })
        ));
        let empty = Tensor::zeros((0, 1, 2, 2), DType::F32, &device).unwrap();
        assert!(matches!(
            HostBatch::from_tensor("x", &empty),
            Err(AttackError::Empty { .. })
        ));
        let batch = Tensor::arange(0f64, 24.0, &device)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let host = HostBatch::from_tensor("x", &batch).unwrap();
        assert_eq!(host.len(), 2);
        assert_eq!(host.shape(), ImageShape::new(3, 2, 2));
        assert_eq!(host.images().nth(1).unwrap()[0], 12.0);
    }
}
