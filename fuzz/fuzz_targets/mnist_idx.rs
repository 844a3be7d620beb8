//! The MNIST reader (IDX images + labels, each raw or gzip) on hostile bytes.
//!
//! Input: a little-endian `u16` telling where the images file ends, the images file, then the
//! labels file. Contract: never a panic or an allocation past the IDX bound; a data set that
//! parses has as many labels as images, 1×28×28 images, digits only, and (for raw files)
//! exactly the byte counts its two headers declared.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (images, labels) = rest.split_at(at);
    let Ok(ds) = synfed_data::mnist_from_bytes(
        "fuzz",
        images,
        Path::new("images"),
        labels,
        Path::new("labels"),
    ) else {
        return;
    };
    let n = ds.len();
    assert_eq!(ds.labels().len(), n);
    assert_eq!(ds.shape().dims(), [1, 28, 28]);
    assert_eq!(ds.pixels().len(), n * 784);
    assert_eq!(ds.num_classes(), 10);
    assert!(ds.labels().iter().all(|&l| l < 10));
    let gzip = |b: &[u8]| b.starts_with(&[0x1f, 0x8b]);
    if !gzip(images) {
        assert_eq!(images.len(), 16 + n * 784, "raw images: header + declared pixels");
        assert_eq!(&images[4..8], &(n as u32).to_be_bytes());
    }
    if !gzip(labels) {
        assert_eq!(labels.len(), 8 + n, "raw labels: header + declared labels");
    }
});
