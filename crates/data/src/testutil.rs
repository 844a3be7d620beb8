//! Builders for small hand-made data files, shared by the unit tests.
//!
//! Corruption tests need valid files to damage; these produce them in the official formats.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Gzip-compresses `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// An IDX3 image file of `count` 28×28 images; image `i` is filled with `i as u8`.
pub(crate) fn idx_images(count: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [0x0000_0803, count, 28, 28] {
        out.extend_from_slice(&u32::to_be_bytes(word));
    }
    for i in 0..count {
        out.extend(std::iter::repeat_n(i as u8, 28 * 28));
    }
    out
}

/// An IDX1 label file holding `labels`.
pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::to_be_bytes(0x0000_0801));
    out.extend_from_slice(&u32::to_be_bytes(labels.len() as u32));
    out.extend_from_slice(labels);
    out
}

/// CIFAR binary records: each entry is `(label bytes, pixel value)`; the 3,072 pixel bytes
/// are the R plane filled with `v`, G with `v + 1`, B with `v + 2`.
pub(crate) fn cifar_records(records: &[(&[u8], u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(labels, v) in records {
        out.extend_from_slice(labels);
        for c in 0..3u8 {
            out.extend(std::iter::repeat_n(v.wrapping_add(c), 1024));
        }
    }
    out
}
