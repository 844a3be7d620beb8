//! End-to-end loading: the embedded subsets always, and the full data sets from the shared
//! data directory when it exists (set `SYNFED_DATA_DIR` to point elsewhere). Machines without
//! the data, such as CI, skip those checks quietly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use synfed_data::{load, DataError, Dataset, Normalization, DEMO_TEST_LEN, DEMO_TRAIN_LEN};

/// The shared data directory, if present.
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("SYNFED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    dir.is_dir().then_some(dir)
}

/// Per-channel mean and population std of pixels/255, by a plain f64 loop.
fn reference_stats(ds: &Dataset) -> Vec<(f64, f64)> {
    let shape = ds.shape();
    (0..shape.channels)
        .map(|c| {
            let values: Vec<f64> = (0..ds.len())
                .flat_map(|i| {
                    let image = ds.image(i).unwrap();
                    image[c * shape.plane()..(c + 1) * shape.plane()].to_vec()
                })
                .map(|p| f64::from(p) / 255.0)
                .collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        })
        .collect()
}

fn assert_stats(norm: &Normalization, ds: &Dataset) {
    for (c, (mean, std)) in reference_stats(ds).into_iter().enumerate() {
        assert!((f64::from(norm.mean[c]) - mean).abs() < 1e-6, "mean[{c}]");
        assert!((f64::from(norm.std[c]) - std).abs() < 1e-6, "std[{c}]");
    }
}

fn class_names_of(ds: &Dataset, n: usize) -> Vec<&str> {
    ds.labels()[..n]
        .iter()
        .map(|&l| ds.class_names()[l as usize].as_str())
        .collect()
}

#[test]
fn demo_mnist() {
    let splits = load("demo-mnist", None).unwrap();
    let (train, test) = (&splits.train, &splits.test);
    assert_eq!((train.len(), test.len()), (DEMO_TRAIN_LEN, DEMO_TEST_LEN));
    assert_eq!(train.shape().dims(), [1, 28, 28]);
    assert_eq!(
        train.class_names(),
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    );
    assert_eq!(
        train.label_histogram(),
        [150, 180, 156, 152, 171, 147, 154, 185, 141, 164]
    );
    assert_eq!(
        test.label_histogram(),
        [33, 57, 44, 35, 46, 42, 34, 41, 27, 41]
    );
    assert_eq!(&test.labels()[..3], [7, 2, 1]);
    assert_stats(&splits.normalization, train);
    // The subset's statistics are close to full MNIST's well-known 0.1307 / 0.3081.
    assert!((splits.normalization.mean[0] - 0.1307).abs() < 0.005);
    assert!((splits.normalization.std[0] - 0.3081).abs() < 0.005);

    let (x, y) = train
        .batch(&[0, 1], &splits.normalization, &Device::Cpu, DType::F32)
        .unwrap();
    assert_eq!(x.dims(), [2, 1, 28, 28]);
    assert_eq!(y.to_vec1::<u32>().unwrap(), [5, 0]);
    // Normalised pixels of the first image have the expected background value.
    let background = -splits.normalization.mean[0] / splits.normalization.std[0];
    let first = x
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!((first[0] - background).abs() < 1e-6);
    // And de-normalise back to the raw pixels.
    let back = splits.normalization.denormalize(&x).unwrap();
    let back = back
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (v, &p) in back.iter().zip(train.image(1).unwrap()) {
        assert!((v * 255.0 - f32::from(p)).abs() < 1e-3);
    }
}

#[test]
fn demo_cifar10() {
    let splits = load("demo-cifar10", None).unwrap();
    let (train, test) = (&splits.train, &splits.test);
    assert_eq!((train.len(), test.len()), (DEMO_TRAIN_LEN, DEMO_TEST_LEN));
    assert_eq!(train.shape().dims(), [3, 32, 32]);
    assert_eq!(train.class_names()[0], "airplane");
    assert_eq!(train.class_names()[9], "truck");
    assert_eq!(
        train.label_histogram(),
        [165, 166, 158, 152, 161, 140, 170, 160, 161, 167]
    );
    assert_eq!(
        test.label_histogram(),
        [45, 33, 42, 38, 30, 36, 48, 36, 47, 45]
    );
    assert_eq!(class_names_of(train, 3), ["frog", "truck", "truck"]);
    assert_eq!(class_names_of(test, 3), ["cat", "ship", "ship"]);
    assert_stats(&splits.normalization, train);
    let (x, _) = test
        .batch(
            &[399, 0, 5],
            &splits.normalization,
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
    assert_eq!(x.dims(), [3, 3, 32, 32]);
}

#[test]
fn embedded_directory_loads_like_demo_mnist() {
    // The embedded files keep the data-directory layout, so the file loader reads them too.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("embedded");
    let from_dir = load("mnist", Some(&dir)).unwrap();
    let demo = load("demo-mnist", None).unwrap();
    assert_eq!(from_dir.train.pixels(), demo.train.pixels());
    assert_eq!(from_dir.test.labels(), demo.test.labels());
    assert_eq!(from_dir.normalization, demo.normalization);
}

#[test]
fn shared_mnist() {
    let Some(dir) = shared_data() else { return };
    let start = Instant::now();
    let splits = load("mnist", Some(&dir)).unwrap();
    eprintln!("full MNIST loaded in {:?}", start.elapsed());
    assert_eq!((splits.train.len(), splits.test.len()), (60_000, 10_000));
    assert_eq!(
        splits.train.label_histogram(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        splits.test.label_histogram(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(&splits.train.labels()[..2], [5, 0]);
    assert_eq!(&splits.test.labels()[..2], [7, 2]);
    let norm = &splits.normalization;
    assert!((norm.mean[0] - 0.1307).abs() < 5e-5, "{norm:?}");
    assert!((norm.std[0] - 0.3081).abs() < 5e-5, "{norm:?}");
    // The embedded subset is exactly the head of the official files.
    let demo = load("demo-mnist", None).unwrap();
    let head = DEMO_TRAIN_LEN * 28 * 28;
    assert_eq!(&splits.train.pixels()[..head], demo.train.pixels());
}

#[test]
fn shared_cifar10() {
    let Some(dir) = shared_data() else { return };
    let start = Instant::now();
    let splits = load("cifar10", Some(&dir)).unwrap();
    eprintln!("full CIFAR-10 loaded in {:?}", start.elapsed());
    assert_eq!((splits.train.len(), splits.test.len()), (50_000, 10_000));
    assert_eq!(splits.train.label_histogram(), [5000; 10]);
    assert_eq!(splits.test.label_histogram(), [1000; 10]);
    assert_eq!(class_names_of(&splits.train, 3), ["frog", "truck", "truck"]);
    assert_eq!(class_names_of(&splits.test, 3), ["cat", "ship", "ship"]);
    // Widely quoted CIFAR-10 training statistics.
    let norm = &splits.normalization;
    for (c, (mean, std)) in [(0.4914, 0.2470), (0.4822, 0.2435), (0.4465, 0.2616)]
        .into_iter()
        .enumerate()
    {
        assert!((norm.mean[c] - mean).abs() < 5e-4, "{norm:?}");
        assert!((norm.std[c] - std).abs() < 5e-4, "{norm:?}");
    }
}

#[test]
fn shared_cifar100_has_no_train_split() {
    let Some(dir) = shared_data() else { return };
    let err = load("cifar100", Some(&dir)).unwrap_err();
    assert!(
        matches!(err, DataError::MissingSplit { split: "train", .. }),
        "{err}"
    );
    eprintln!("{err}");
}

#[cfg(unix)]
#[test]
fn shared_cifar100_test_file_parses() {
    // Stand the official test.bin in for train.bin via symlinks, to exercise the CIFAR-100
    // reader and names file on real data (the split itself is never used for training).
    let Some(dir) = shared_data() else { return };
    let source = dir.join("cifar100");
    let tmp = tempfile::tempdir().unwrap();
    for (link, target) in [
        ("train.bin.gz", "test.bin.gz"),
        ("test.bin.gz", "test.bin.gz"),
        ("fine_label_names.txt", "fine_label_names.txt"),
    ] {
        std::os::unix::fs::symlink(source.join(target), tmp.path().join(link)).unwrap();
    }
    let splits = load("cifar100", Some(tmp.path())).unwrap();
    assert_eq!(splits.test.len(), 10_000);
    assert_eq!(splits.test.num_classes(), 100);
    assert_eq!(splits.test.label_histogram(), vec![100; 100]);
    assert_eq!(
        class_names_of(&splits.test, 3),
        ["mountain", "forest", "seal"]
    );
}
