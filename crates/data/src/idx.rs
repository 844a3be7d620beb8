//! The IDX format of MNIST.
//!
//! MNIST ships as two big-endian IDX files per split: images (magic `0x00000803`: unsigned
//! bytes, 3 dimensions — count, 28, 28 — then the pixels) and labels (magic `0x00000801`:
//! count, then one byte per label). Everything the header claims is checked against the
//! bytes actually present, so a truncated download or a swapped file is reported, with its
//! path, instead of producing garbage images or a panic.

use std::path::Path;

use crate::dataset::{Dataset, ImageShape};
use crate::error::{DataError, Result};
use crate::read;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub(crate) const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub(crate) const LABELS_MAGIC: u32 = 0x0000_0801;
/// MNIST images are 28×28.
pub(crate) const SIDE: usize = 28;
/// MNIST has ten classes, the digits.
pub(crate) const CLASSES: usize = 10;

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// One IDX file in memory, together with the path that names it in errors.
#[derive(Clone, Copy)]
pub(crate) struct IdxFile<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) path: &'a Path,
}

/// Builds an MNIST data set named `name` from the contents of its images and labels files,
/// each raw or gzip-compressed exactly as on disk (inflation bounded by the IDX header);
/// `images_path` and `labels_path` name the files in errors. This is the reader every MNIST
/// source goes through, and the entry point for bytes that did not come from a data directory.
pub fn mnist_from_bytes(
    name: &str,
    images: &[u8],
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
) -> Result<Dataset> {
    let images = read::decode(images, images_path)?;
    let labels = read::decode(labels, labels_path)?;
    mnist(
        name,
        IdxFile {
            bytes: &images,
            path: images_path,
        },
        IdxFile {
            bytes: &labels,
            path: labels_path,
        },
    )
}

/// Builds an MNIST data set named `name` from an images file and a labels file.
pub(crate) fn mnist(name: &str, images: IdxFile<'_>, labels: IdxFile<'_>) -> Result<Dataset> {
    let pixels = parse_images(images)?;
    let labels_bytes = parse_labels(labels)?;
    let count = pixels.len() / (SIDE * SIDE);
    if count != labels_bytes.len() {
        return Err(DataError::CountMismatch {
            images_file: images.path.to_path_buf(),
            images: count,
            labels_file: labels.path.to_path_buf(),
            labels: labels_bytes.len(),
        });
    }
    Dataset::new(
        name,
        ImageShape::new(1, SIDE, SIDE),
        pixels.to_vec(),
        labels_bytes.iter().map(|&l| u32::from(l)).collect(),
        (0..CLASSES).map(|d| d.to_string()).collect(),
    )
}

/// Validates an IDX image file and returns its pixel bytes (count × 28 × 28).
pub(crate) fn parse_images(file: IdxFile<'_>) -> Result<&[u8]> {
    let count = header(
        file,
        IMAGES_MAGIC,
        "IDX image file (0x00000803)",
        IMAGES_HEADER,
    )?;
    let rows = be_u32(file.bytes, 8) as usize;
    let cols = be_u32(file.bytes, 12) as usize;
    if (rows, cols) != (SIDE, SIDE) {
        return Err(DataError::BadDimensions {
            file: file.path.to_path_buf(),
            expected: (SIDE, SIDE),
            found: (rows, cols),
        });
    }
    body(file, IMAGES_HEADER, u64::from(count) * (SIDE * SIDE) as u64)
}

/// Validates an IDX label file and returns its labels, each checked to be a digit.
pub(crate) fn parse_labels(file: IdxFile<'_>) -> Result<&[u8]> {
    let count = header(
        file,
        LABELS_MAGIC,
        "IDX label file (0x00000801)",
        LABELS_HEADER,
    )?;
    let labels = body(file, LABELS_HEADER, u64::from(count))?;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            file: file.path.to_path_buf(),
            kind: "label",
            index,
            label: u32::from(label),
            classes: CLASSES,
        });
    }
    Ok(labels)
}

/// Checks length and magic; returns the record count. Guarantees `header_len` bytes exist.
fn header(file: IdxFile<'_>, magic: u32, format: &'static str, header_len: usize) -> Result<u32> {
    let truncated = || DataError::Truncated {
        file: file.path.to_path_buf(),
        expected: header_len as u64,
        found: file.bytes.len() as u64,
    };
    if file.bytes.is_empty() {
        return Err(DataError::Empty {
            file: file.path.to_path_buf(),
        });
    }
    if file.bytes.len() < 4 {
        return Err(truncated());
    }
    let found = be_u32(file.bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            file: file.path.to_path_buf(),
            format,
            expected: magic,
            found,
        });
    }
    if file.bytes.len() < header_len {
        return Err(truncated());
    }
    Ok(be_u32(file.bytes, 4))
}

/// The `body_len` bytes after the header, which must be exactly the rest of the file.
fn body(file: IdxFile<'_>, header_len: usize, body_len: u64) -> Result<&[u8]> {
    let expected = header_len as u64 + body_len;
    let found = file.bytes.len() as u64;
    let path = || file.path.to_path_buf();
    match found.cmp(&expected) {
        std::cmp::Ordering::Less => Err(DataError::Truncated {
            file: path(),
            expected,
            found,
        }),
        std::cmp::Ordering::Greater => Err(DataError::TrailingBytes {
            file: path(),
            expected,
            found,
        }),
        std::cmp::Ordering::Equal => Ok(&file.bytes[header_len..]),
    }
}

/// Big-endian `u32` at `offset`; callers have checked that the bytes exist.
fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{idx_images, idx_labels};

    fn file<'a>(bytes: &'a [u8], name: &'a str) -> IdxFile<'a> {
        IdxFile {
            bytes,
            path: Path::new(name),
        }
    }

    fn load(images: &[u8], labels: &[u8]) -> Result<Dataset> {
        mnist("t", file(images, "img"), file(labels, "lab"))
    }

    #[test]
    fn parses_valid_files() {
        let ds = load(&idx_images(3), &idx_labels(&[7, 0, 9])).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.shape(), ImageShape::new(1, 28, 28));
        assert_eq!(ds.labels(), &[7, 0, 9]);
        assert!(ds.image(2).unwrap().iter().all(|&p| p == 2));
        assert_eq!(ds.class_names()[3], "3");
        assert_eq!(ds.num_classes(), 10);
    }

    #[test]
    fn zero_records_is_valid() {
        assert_eq!(load(&idx_images(0), &idx_labels(&[])).unwrap().len(), 0);
    }

    #[test]
    fn bad_magic() {
        let mut images = idx_images(1);
        images[3] = 0x01;
        let err = load(&images, &idx_labels(&[1])).unwrap_err();
        assert!(
            matches!(err, DataError::BadMagic { found: 0x801, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("img: bad magic"), "{err}");
        // Swapped files: labels where images belong.
        let err = load(&idx_labels(&[1]), &idx_images(1)).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
        let mut labels = idx_labels(&[1]);
        labels[2] = 0xff;
        let err = load(&idx_images(1), &labels).unwrap_err();
        assert!(err.to_string().starts_with("lab: bad magic"), "{err}");
    }

    #[test]
    fn bad_dimensions() {
        let mut images = idx_images(1);
        images[11] = 32;
        let err = load(&images, &idx_labels(&[1])).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadDimensions {
                    found: (32, 28),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_files() {
        let images = idx_images(2);
        for cut in [1, 3, 10, 16, images.len() - 1] {
            let err = load(&images[..cut], &idx_labels(&[1, 2])).unwrap_err();
            assert!(
                matches!(err, DataError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains("img: truncated"), "{err}");
        }
        let labels = idx_labels(&[1, 2]);
        let err = load(&images, &labels[..labels.len() - 1]).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 10,
                    found: 9,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut images = idx_images(1);
        images.push(0);
        let err = load(&images, &idx_labels(&[1])).unwrap_err();
        assert!(matches!(err, DataError::TrailingBytes { .. }), "{err}");
    }

    #[test]
    fn huge_count_is_truncation_not_overflow() {
        let mut images = idx_images(1);
        images[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = load(&images, &idx_labels(&[1])).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    }

    #[test]
    fn empty_file() {
        let err = load(&[], &idx_labels(&[1])).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
    }

    #[test]
    fn label_out_of_range() {
        let err = load(&idx_images(3), &idx_labels(&[1, 10, 2])).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 10,
                    classes: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "lab: label 10 of record 1 is out of range 0..10"
        );
    }

    #[test]
    fn count_mismatch() {
        let err = load(&idx_images(3), &idx_labels(&[1, 2])).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), "img holds 3 images but lab holds 2 labels");
    }
}
