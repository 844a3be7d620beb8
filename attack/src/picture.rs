//! PNG pictures of images and reconstructions, for looking at what an attack recovered.
//!
//! A score says how close a reconstruction is; a picture shows what leaked. [`save_grid`] lays
//! out rows of images (say, ground truth above reconstructions) separated by a white gutter and
//! magnified by nearest-neighbour upscaling, so that 32×32 CIFAR images are visible and each
//! source pixel stays a crisp square. Values are clamped to [0, 1] and written as
//! `round(255 · v)`; grey images stay grey (an all-grey picture is an 8-bit grey PNG, a mixed
//! one repeats grey values in R, G and B). Files are written to a temporary name in the
//! destination directory and renamed into place, so a reader never sees a half-written PNG.

use std::ffi::OsString;
use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Tensor};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

use crate::error::{AttackError, Result};
use crate::shape::{ImageShape, ShapeChecks};

/// Width in pixels of the white gutter around and between the images of a grid.
pub const GUTTER: usize = 2;

/// Largest picture drawn, in bytes of raw pixels (1 GiB): far beyond any useful grid, and far
/// below an allocation that would abort the process when a scale is mistyped.
pub const MAX_PICTURE_BYTES: usize = 1 << 30;

/// One grey (`C = 1`) or RGB (`C = 3`) image, `[C, H, W]` values meant to lie in [0, 1].
///
/// Values outside [0, 1], infinities included, are clamped when drawn; NaN is refused when the
/// image is built, since it has no colour.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    shape: ImageShape,
    values: Vec<f32>,
}

impl Image {
    /// An image of `shape` from its `[C, H, W]` values. Errors unless `C` is 1 or 3, the length
    /// matches the shape, and no value is NaN.
    pub fn new(shape: ImageShape, values: Vec<f32>) -> Result<Self> {
        Self::checked("image", shape, values)
    }

    /// An image from a `[C, H, W]` tensor of any float dtype on any device.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let &[channels, height, width] = tensor.dims() else {
            return Err(AttackError::Rank {
                what: "image".to_string(),
                expected: "[channels, height, width]",
                dims: tensor.dims().to_vec(),
            });
        };
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(ImageShape::new(channels, height, width), values)
    }

    /// The images of a `[B, C, H, W]` tensor of any float dtype on any device.
    pub fn batch_from_tensor(tensor: &Tensor) -> Result<Vec<Self>> {
        let &[batch, channels, height, width] = tensor.dims() else {
            return Err(AttackError::Rank {
                what: "images".to_string(),
                expected: "[batch, channels, height, width]",
                dims: tensor.dims().to_vec(),
            });
        };
        if batch == 0 {
            return Err(AttackError::Empty {
                what: "images (a batch of 0 images)".to_string(),
            });
        }
        let shape = ImageShape::new(channels, height, width);
        if shape.numel() == 0 {
            return Err(AttackError::BadShape {
                what: "images".to_string(),
                shape,
            });
        }
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        values
            .chunks_exact(shape.numel())
            .enumerate()
            .map(|(i, image)| Self::checked(&format!("images[{i}]"), shape, image.to_vec()))
            .collect()
    }

    /// The image's `[C, H, W]` shape.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// The image's values, `[C, H, W]` flattened.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    fn checked(what: &str, shape: ImageShape, values: Vec<f32>) -> Result<Self> {
        if !matches!(shape.channels, 1 | 3) {
            return Err(AttackError::Channels {
                what: what.to_string(),
                channels: shape.channels,
            });
        }
        shape.check_len(what, &values)?;
        if let Some(index) = values.iter().position(|v| v.is_nan()) {
            let (channel, row, column) = shape.position(index);
            return Err(AttackError::NotANumber {
                what: what.to_string(),
                channel,
                row,
                column,
            });
        }
        Ok(Self { shape, values })
    }

    /// The 8-bit value of `channel` at (`row`, `column`); grey images answer every channel.
    fn byte(&self, channel: usize, row: usize, column: usize) -> u8 {
        let channel = channel.min(self.shape.channels - 1);
        let v = self.values[channel * self.shape.plane() + row * self.shape.width + column];
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// Writes `rows` of images as one PNG at `path`: each image magnified `scale` times (nearest
/// neighbour), a [`GUTTER`]-pixel white border around and between them, shorter rows padded
/// with white on the right. All images must have the same height and width; grey and RGB may
/// be mixed.
pub fn save_grid(rows: &[Vec<Image>], path: impl AsRef<Path>, scale: u32) -> Result<()> {
    let picture = render(rows, scale, GUTTER)?;
    write_png(&picture, path.as_ref())
}

/// Writes one image as a PNG at `path`, magnified `scale` times, without a border.
pub fn save_image(image: &Image, path: impl AsRef<Path>, scale: u32) -> Result<()> {
    let picture = render(&[std::slice::from_ref(image)], scale, 0)?;
    write_png(&picture, path.as_ref())
}

fn render<R: AsRef<[Image]>>(rows: &[R], scale: u32, gutter: usize) -> Result<DynamicImage> {
    if scale == 0 {
        return Err(AttackError::InvalidArgument(
            "picture scale must be at least 1".to_string(),
        ));
    }
    let scale = scale as usize;
    let (height, width) = common_size(rows)?;
    let columns = rows.iter().map(|row| row.as_ref().len()).max().unwrap_or(0);
    let too_large = || {
        AttackError::InvalidArgument(format!(
            "a picture of {} rows and {columns} columns of {height}x{width} images at scale \
             {scale} is too large (at most {MAX_PICTURE_BYTES} bytes of pixels)",
            rows.len()
        ))
    };
    let extent = |count: usize, side: usize| -> Option<(usize, u32)> {
        let cell = side.checked_mul(scale)?;
        let total = cell
            .checked_add(gutter)?
            .checked_mul(count)?
            .checked_add(gutter)?;
        Some((cell, u32::try_from(total).ok()?))
    };
    let (cell_w, picture_w) = extent(columns, width).ok_or_else(too_large)?;
    let (cell_h, picture_h) = extent(rows.len(), height).ok_or_else(too_large)?;
    let channels = if rows
        .iter()
        .flat_map(AsRef::as_ref)
        .all(|i| i.shape.channels == 1)
    {
        1
    } else {
        3
    };
    let stride = picture_w as usize * channels;
    let bytes = stride
        .checked_mul(picture_h as usize)
        .filter(|&bytes| bytes <= MAX_PICTURE_BYTES)
        .ok_or_else(too_large)?;
    let mut pixels = vec![u8::MAX; bytes];
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.as_ref().iter().enumerate() {
            let top = gutter + r * (cell_h + gutter);
            let left = gutter + c * (cell_w + gutter);
            for y in 0..cell_h {
                let line = &mut pixels[(top + y) * stride..][..stride];
                let cells = line[left * channels..][..cell_w * channels].chunks_exact_mut(channels);
                for (x, pixel) in cells.enumerate() {
                    for (channel, byte) in pixel.iter_mut().enumerate() {
                        *byte = image.byte(channel, y / scale, x / scale);
                    }
                }
            }
        }
    }
    let picture = if channels == 1 {
        GrayImage::from_raw(picture_w, picture_h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(picture_w, picture_h, pixels).map(DynamicImage::ImageRgb8)
    };
    picture.ok_or_else(too_large)
}

/// The height and width every image of `rows` must share; an error for an empty grid, an empty
/// row, or an image of another size.
fn common_size<R: AsRef<[Image]>>(rows: &[R]) -> Result<(usize, usize)> {
    let first = rows
        .iter()
        .find_map(|row| row.as_ref().first())
        .ok_or_else(|| AttackError::Empty {
            what: "picture (no images)".to_string(),
        })?;
    let (height, width) = (first.shape.height, first.shape.width);
    for (r, row) in rows.iter().enumerate() {
        let row = row.as_ref();
        if row.is_empty() {
            return Err(AttackError::Empty {
                what: format!("picture row {r}"),
            });
        }
        let other = row
            .iter()
            .position(|image| (image.shape.height, image.shape.width) != (height, width));
        if let Some(c) = other {
            let shape = row[c].shape;
            return Err(AttackError::ShapeMismatch {
                what: format!(
                    "picture image ({r}, {c}) is {}x{} but the first image is {height}x{width}",
                    shape.height, shape.width
                ),
            });
        }
    }
    Ok((height, width))
}

/// Encodes `picture` as PNG and writes it to `path` atomically: to a temporary file beside it,
/// then renamed over it.
fn write_png(picture: &DynamicImage, path: &Path) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|source| AttackError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    let temporary = temporary_path(path)?;
    let written =
        fs::write(&temporary, bytes.get_ref()).and_then(|()| fs::rename(&temporary, path));
    written.map_err(|source| {
        // Best effort: the temporary file may not exist, and the write error is what matters.
        let _ = fs::remove_file(&temporary);
        AttackError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// `dir/.name.<pid>-<n>.partial` beside `path`, unique within and across processes.
fn temporary_path(path: &Path) -> Result<std::path::PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        AttackError::InvalidArgument(format!(
            "picture path {} does not name a file",
            path.display()
        ))
    })?;
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(format!(
        ".{}-{}.partial",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(temporary))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use image::ColorType;

    use super::*;

    fn byte(v: f32) -> u8 {
        (v * 255.0).round() as u8
    }

    /// An image whose every value differs, so that a misplaced pixel shows.
    fn ramp(channels: usize, height: usize, width: usize, offset: f32) -> Image {
        let shape = ImageShape::new(channels, height, width);
        let values = (0..shape.numel())
            .map(|i| (offset + i as f32 * 0.013).fract())
            .collect();
        Image::new(shape, values).unwrap()
    }

    #[test]
    fn grid_has_the_expected_size_gutter_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let (h, w, scale) = (4, 5, 3);
        let rows: Vec<Vec<Image>> = (0..2)
            .map(|r| {
                (0..3)
                    .map(|c| ramp(3, h, w, 0.1 * (3 * r + c) as f32))
                    .collect()
            })
            .collect();
        save_grid(&rows, &path, scale as u32).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!(png.color(), ColorType::Rgb8);
        let png = png.to_rgb8();
        assert_eq!(png.dimensions(), (3 * 15 + 4 * 2, 2 * 12 + 3 * 2));
        let white = image::Rgb([255, 255, 255]);
        for x in 0..png.width() {
            assert_eq!(png[(x, 0)], white);
            assert_eq!(png[(x, 1)], white);
            assert_eq!(png[(x, 2 + 12)], white, "gutter between the rows");
            assert_eq!(png[(x, png.height() - 1)], white);
        }
        for y in 0..png.height() {
            assert_eq!(png[(0, y)], white);
            assert_eq!(
                png[(2 + 15 + 1, y)],
                white,
                "gutter between columns 0 and 1"
            );
            assert_eq!(png[(png.width() - 2, y)], white);
        }
        for (r, row) in rows.iter().enumerate() {
            for (c, image) in row.iter().enumerate() {
                let (top, left) = (2 + r * (12 + 2), 2 + c * (15 + 2));
                for y in 0..h * scale {
                    for x in 0..w * scale {
                        let (i, j) = (y / scale, x / scale);
                        let expected: Vec<u8> = (0..3)
                            .map(|ch| byte(image.values()[ch * h * w + i * w + j]))
                            .collect();
                        let got = png[((left + x) as u32, (top + y) as u32)].0;
                        assert_eq!(
                            got.as_slice(),
                            expected,
                            "image ({r}, {c}) pixel ({i}, {j})"
                        );
                    }
                }
            }
        }
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn grey_images_give_a_grey_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grey.png");
        let image = ramp(1, 3, 2, 0.2);
        save_grid(&[vec![image.clone()]], &path, 2).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!(png.color(), ColorType::L8);
        let png = png.to_luma8();
        assert_eq!(png.dimensions(), (2 * 2 + 2 * 2, 3 * 2 + 2 * 2));
        assert_eq!(png[(2 + 3, 2 + 5)].0[0], byte(image.values()[2 * 2 + 1]));
        assert_eq!(png[(1, 1)].0[0], 255);
    }

    #[test]
    fn grey_next_to_rgb_is_drawn_grey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.png");
        let grey = ramp(1, 2, 2, 0.3);
        save_grid(&[vec![grey.clone(), ramp(3, 2, 2, 0.0)]], &path, 1).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!(png.color(), ColorType::Rgb8);
        let png = png.to_rgb8();
        for (k, &v) in grey.values().iter().enumerate() {
            let (i, j) = (k / 2, k % 2);
            let b = byte(v);
            assert_eq!(png[(2 + j as u32, 2 + i as u32)].0, [b, b, b]);
        }
    }

    #[test]
    fn short_rows_are_padded_with_white() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ragged.png");
        let black = Image::new(ImageShape::new(1, 2, 2), vec![0.0; 4]).unwrap();
        let rows = vec![vec![black.clone(), black.clone()], vec![black]];
        save_grid(&rows, &path, 1).unwrap();
        let png = image::open(&path).unwrap().to_luma8();
        assert_eq!(png.dimensions(), (2 * 2 + 3 * 2, 2 * 2 + 3 * 2));
        assert_eq!(png[(6, 2)].0[0], 0, "row 0, column 1 is drawn");
        assert_eq!(png[(6, 6)].0[0], 255, "row 1, column 1 is blank");
        assert_eq!(png[(2, 6)].0[0], 0);
    }

    #[test]
    fn values_are_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clamped.png");
        let values = vec![-0.5, 1.5, f32::INFINITY, f32::NEG_INFINITY, 0.5, 1.0];
        let image = Image::new(ImageShape::new(1, 1, 6), values).unwrap();
        save_image(&image, &path, 1).unwrap();
        let png = image::open(&path).unwrap().to_luma8();
        assert_eq!(png.dimensions(), (6, 1));
        assert_eq!(png.into_raw(), vec![0, 255, 255, 0, 128, 255]);
    }

    #[test]
    fn save_image_magnifies_without_a_border() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        let image = ramp(3, 2, 3, 0.5);
        save_image(&image, &path, 4).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (12, 8));
        for (x, y) in [(0u32, 0u32), (11, 7), (5, 3), (8, 4)] {
            let (i, j) = (y as usize / 4, x as usize / 4);
            let expected: Vec<u8> = (0..3)
                .map(|c| byte(image.values()[c * 6 + i * 3 + j]))
                .collect();
            assert_eq!(png[(x, y)].0.as_slice(), expected);
        }
    }

    #[test]
    fn overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("again.png");
        fs::write(&path, b"not a png").unwrap();
        save_image(&ramp(1, 2, 2, 0.0), &path, 1).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!((png.width(), png.height()), (2, 2));
    }

    #[test]
    fn tensors_become_images() {
        let device = Device::Cpu;
        let batch = Tensor::arange(0u32, 24, &device)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .affine(1.0 / 24.0, 0.0)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let images = Image::batch_from_tensor(&batch).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].shape(), ImageShape::new(3, 2, 2));
        assert_eq!(images[1].values()[0], 12.0 / 24.0);
        let one = Image::from_tensor(&batch.get(1).unwrap()).unwrap();
        assert_eq!(one, images[1]);
        assert!(matches!(
            Image::from_tensor(&batch),
            Err(AttackError::Rank { .. })
        ));
        let two_channels = Tensor::zeros((1, 2, 2, 2), DType::F32, &device).unwrap();
        assert!(matches!(
            Image::batch_from_tensor(&two_channels),
            Err(AttackError::Channels { channels: 2, .. })
        ));
    }

    #[test]
    fn bad_input_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let mut values = vec![0.5; 12];
        values[7] = f32::NAN;
        let err = Image::new(ImageShape::new(3, 2, 2), values)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channel 1, row 1, column 1 is NaN"), "{err}");
        assert!(matches!(
            Image::new(ImageShape::new(1, 2, 2), vec![0.0; 3]),
            Err(AttackError::Length { .. })
        ));
        let image = ramp(1, 2, 2, 0.0);
        assert!(matches!(
            save_image(&image, &path, 0),
            Err(AttackError::InvalidArgument(_))
        ));
        assert!(matches!(
            save_grid(&[], &path, 1),
            Err(AttackError::Empty { .. })
        ));
        let err = save_grid(&[vec![image.clone()], vec![]], &path, 1).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        let other = ramp(1, 3, 2, 0.0);
        let err = save_grid(&[vec![image.clone(), other]], &path, 1).unwrap_err();
        assert!(matches!(err, AttackError::ShapeMismatch { .. }), "{err}");
        for scale in [u32::MAX, 100_000] {
            let huge = save_image(&image, &path, scale);
            assert!(
                matches!(huge, Err(AttackError::InvalidArgument(_))),
                "{scale}"
            );
        }
        let missing = dir.path().join("no-such-dir").join("x.png");
        assert!(matches!(
            save_image(&image, &missing, 1),
            Err(AttackError::Write { .. })
        ));
        assert!(!path.exists());
    }
}
