//! The byte-level readers (`mnist_from_bytes`, `cifar10_from_bytes`, `cifar100_from_bytes`):
//! what a data file's contents give, raw or gzip, against hand-built files; and the inputs
//! that fuzzing (`fuzz/`) turned up, kept as regressions.

use std::io::Write;
use std::path::Path;

use synfed_data::{cifar100_from_bytes, cifar10_from_bytes, mnist_from_bytes, DataError};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX images file of `n` 28×28 images, image `i` filled with `i + 1`.
fn images(n: u32) -> Vec<u8> {
    let mut bytes = [0x803u32, n, 28, 28]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect::<Vec<u8>>();
    for i in 0..n {
        bytes.extend(std::iter::repeat_n(i as u8 + 1, 784));
    }
    bytes
}

fn labels(values: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = [0x801u32, values.len() as u32]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    bytes.extend_from_slice(values);
    bytes
}

fn mnist(images: &[u8], labels: &[u8]) -> synfed_data::Result<synfed_data::Dataset> {
    mnist_from_bytes("t", images, Path::new("img"), labels, Path::new("lab"))
}

#[test]
fn mnist_reads_raw_and_gzip_files_alike() {
    let (img, lab) = (images(2), labels(&[3, 7]));
    let raw = mnist(&img, &lab).unwrap();
    assert_eq!(raw.labels(), &[3, 7]);
    assert_eq!(raw.image(0).unwrap(), &[1u8; 784][..]);
    assert_eq!(raw.image(1).unwrap(), &[2u8; 784][..]);
    assert_eq!(raw.name(), "t");
    for (i, l) in [
        (gzip(&img), lab.clone()),
        (img.clone(), gzip(&lab)),
        (gzip(&img), gzip(&lab)),
    ] {
        assert!(mnist(&i, &l).unwrap() == raw);
    }
}

#[test]
fn mnist_errors_name_the_file() {
    let err = mnist(&images(2), &labels(&[3])).unwrap_err();
    assert_eq!(err.to_string(), "img holds 2 images but lab holds 1 labels");
    let mut bad = labels(&[3, 7]);
    bad[9] = 10;
    let err = mnist(&images(2), &gzip(&bad)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 10,
                index: 1,
                ..
            }
        ),
        "{err}"
    );
}

/// `n` CIFAR records of `label_bytes` label bytes (each `labels(i)`), pixels all `i`.
fn records(n: usize, label: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let mut r = label(i);
            r.extend(std::iter::repeat_n(i as u8, 3072));
            r
        })
        .collect()
}

#[test]
fn cifar10_and_cifar100_keep_the_right_label() {
    let c10 = records(3, |i| vec![i as u8 * 4]);
    for bytes in [c10.clone(), gzip(&c10)] {
        let ds = cifar10_from_bytes("c10", &bytes, Path::new("b.bin")).unwrap();
        assert_eq!(ds.labels(), &[0, 4, 8]);
        assert_eq!(ds.image(2).unwrap(), &[2u8; 3072][..]);
        assert_eq!(ds.class_names()[0], "airplane");
    }
    // CIFAR-100: coarse label first, then the fine label that is kept.
    let c100 = records(2, |i| vec![19 - i as u8, 99 - i as u8]);
    for bytes in [c100.clone(), gzip(&c100)] {
        let ds = cifar100_from_bytes("c100", &bytes, Path::new("t.bin")).unwrap();
        assert_eq!(ds.labels(), &[99, 98]);
        assert_eq!(ds.num_classes(), 100);
    }
    // The same bytes are not CIFAR-10 (3,074-byte records do not divide into 3,073).
    let err = cifar10_from_bytes("c10", &c100, Path::new("t.bin")).unwrap_err();
    assert!(
        matches!(err, DataError::RecordSize { record: 3073, .. }),
        "{err}"
    );
    let err = cifar100_from_bytes("c100", &gzip(&[]), Path::new("e.bin")).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
}
