//! The CIFAR-10 / CIFAR-100 record reader (headerless fixed-size records, raw or gzip) on
//! hostile bytes.
//!
//! Input: one byte choosing the layout (even: CIFAR-10, odd: CIFAR-100), then the file.
//! Contract: never a panic or an allocation past the record-file bound; a data set that
//! parses holds whole 3×32×32 records with labels in range, and (for a raw file) exactly one
//! image per record of the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&layout, file)) = data.split_first() else {
        return;
    };
    let cifar100 = layout % 2 == 1;
    type Reader = fn(&str, &[u8], &Path) -> synfed_data::Result<synfed_data::Dataset>;
    let (read, record, classes): (Reader, usize, usize) = if cifar100 {
        (synfed_data::cifar100_from_bytes, 3074, 100)
    } else {
        (synfed_data::cifar10_from_bytes, 3073, 10)
    };
    let Ok(ds) = read("fuzz", file, Path::new("batch.bin")) else {
        return;
    };
    let n = ds.len();
    assert!(n > 0, "an empty file is an error");
    assert_eq!(ds.shape().dims(), [3, 32, 32]);
    assert_eq!(ds.pixels().len(), n * 3072);
    assert_eq!(ds.num_classes(), classes);
    assert!(ds.labels().iter().all(|&l| (l as usize) < classes));
    // Records inflate to at most 60,000 of the longest record.
    assert!(n * record <= 60_000 * 3074);
    if !file.starts_with(&[0x1f, 0x8b]) {
        assert_eq!(file.len(), n * record);
        let label_at = if cifar100 { 1 } else { 0 };
        for (i, &label) in ds.labels().iter().enumerate() {
            assert_eq!(u32::from(file[i * record + label_at]), label);
        }
        assert_eq!(&ds.pixels()[..3072], &file[record - 3072..record]);
    }
});
