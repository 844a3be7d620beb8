//! Data set names and loading them, from a data directory or from the embedded subsets.
//!
//! Users name a data set (`mnist`, `cifar10`, `cifar100`, `demo-mnist`, `demo-cifar10`) and,
//! for the file-backed ones, pass `--data-dir DIR`. Data directories come in several shapes in
//! practice, so a file is looked for in a data set's own subdirectory (`DIR/mnist/`, also the
//! names the official archives and torchvision unpack to) and then in `DIR` itself, under its
//! official name, with or without `.gz`. When nothing matches, the error lists every path
//! tried. A split that is absent is reported as absent — in particular CIFAR-100 without
//! `train.bin` — never replaced by something else.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cifar::{self, Layout, Records};
use crate::dataset::{Dataset, Splits};
use crate::embedded;
use crate::error::{DataError, Result};
use crate::idx::{self, IdxFile};
use crate::read::read_files;

/// The data sets this crate can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST from a data directory: 60,000 train + 10,000 test 1×28×28 digits.
    Mnist,
    /// CIFAR-10 from a data directory: 50,000 train + 10,000 test 3×32×32 images, 10 classes.
    Cifar10,
    /// CIFAR-100 from a data directory (fine labels, 100 classes). Needs `train.bin`.
    Cifar100,
    /// Embedded real MNIST subset: 1,600 train + 400 test images.
    DemoMnist,
    /// Embedded real CIFAR-10 subset: 1,600 train + 400 test images.
    DemoCifar10,
}

impl DatasetName {
    /// Every data set, in the order used in messages.
    pub const ALL: [Self; 5] = [
        Self::Mnist,
        Self::Cifar10,
        Self::Cifar100,
        Self::DemoMnist,
        Self::DemoCifar10,
    ];

    /// The name as users write it, e.g. `demo-mnist`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::DemoMnist => "demo-mnist",
            Self::DemoCifar10 => "demo-cifar10",
        }
    }

    /// Whether the data set is compiled into the crate (needs no data directory).
    pub const fn is_embedded(self) -> bool {
        matches!(self, Self::DemoMnist | Self::DemoCifar10)
    }

    /// Loads the train and test splits.
    ///
    /// File-backed data sets need `data_dir`; embedded ones ignore it.
    pub fn load(self, data_dir: Option<&Path>) -> Result<Splits> {
        let dir = || self.required_dir(data_dir);
        match self {
            Self::Mnist => load_mnist(dir()?),
            Self::Cifar10 => load_cifar10(dir()?),
            Self::Cifar100 => load_cifar100(dir()?),
            Self::DemoMnist => embedded::demo_mnist(),
            Self::DemoCifar10 => embedded::demo_cifar10(),
        }
    }

    /// Loads only the test split (what [`Splits::held_out`] carves; CIFAR-100 here has no
    /// `train.bin`).
    pub fn load_test(self, data_dir: Option<&Path>) -> Result<Dataset> {
        let dir = || self.required_dir(data_dir);
        match self {
            Self::Mnist => load_mnist_test(dir()?),
            Self::Cifar10 => load_cifar10_test(dir()?),
            Self::Cifar100 => load_cifar100_test(dir()?),
            Self::DemoMnist | Self::DemoCifar10 => Ok(self.load(None)?.test),
        }
    }

    /// The data directory a file-backed data set needs.
    fn required_dir(self, data_dir: Option<&Path>) -> Result<&Path> {
        data_dir.ok_or(DataError::DataDirRequired {
            name: self.as_str(),
        })
    }

    /// `mnist, cifar10, …` for error messages.
    pub(crate) fn valid_names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    /// Parses a name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|name| name.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| DataError::UnknownDataset { name: s.to_owned() })
    }
}

/// Loads the data set called `name` (see [`DatasetName`]), reading files from `data_dir`
/// when it is file-backed.
///
/// ```
/// let splits = synfed_data::load("demo-mnist", None)?;
/// assert_eq!(splits.train.len(), 1600);
/// # Ok::<(), synfed_data::DataError>(())
/// ```
pub fn load(name: &str, data_dir: Option<&Path>) -> Result<Splits> {
    name.parse::<DatasetName>()?.load(data_dir)
}

/// MNIST file names: (canonical name, dotted variant as some mirrors spell it).
const MNIST_TRAIN_IMAGES: [&str; 2] = ["train-images-idx3-ubyte", "train-images.idx3-ubyte"];
const MNIST_TRAIN_LABELS: [&str; 2] = ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"];
const MNIST_TEST_IMAGES: [&str; 2] = ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"];
const MNIST_TEST_LABELS: [&str; 2] = ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"];

const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR10_TEST: &str = "test_batch.bin";
const CIFAR10_NAMES: &str = "batches.meta.txt";
const CIFAR100_TRAIN: &str = "train.bin";
const CIFAR100_TEST: &str = "test.bin";
const CIFAR100_NAMES: &str = "fine_label_names.txt";

/// The places a data set's files may be, in search order.
struct Locator {
    dataset: &'static str,
    dirs: Vec<PathBuf>,
}

impl Locator {
    /// Searches `root/<subdir>` for each of `subdirs`, then `root` itself.
    fn new(dataset: DatasetName, root: &Path, subdirs: &[&str]) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::DataDirNotFound {
                dir: root.to_path_buf(),
            });
        }
        let dirs = subdirs
            .iter()
            .map(|sub| root.join(sub))
            .chain([root.to_path_buf()])
            .collect();
        Ok(Self {
            dataset: dataset.as_str(),
            dirs,
        })
    }

    /// Every path tried for a file spelled any of `spellings`, uncompressed before `.gz`.
    fn candidates(&self, spellings: &[&str]) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for dir in &self.dirs {
            for name in spellings {
                paths.push(dir.join(name));
                paths.push(dir.join(format!("{name}.gz")));
            }
        }
        paths
    }

    /// The first existing file among the candidates, or `Err(candidates)`.
    fn search(&self, spellings: &[&str]) -> std::result::Result<PathBuf, Vec<PathBuf>> {
        let candidates = self.candidates(spellings);
        match candidates.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(candidates),
        }
    }

    /// Like [`search`](Self::search), with a [`DataError::FileNotFound`] naming `spellings[0]`.
    fn find(&self, spellings: &[&'static str]) -> Result<PathBuf> {
        self.search(spellings)
            .map_err(|searched| DataError::FileNotFound {
                dataset: self.dataset,
                file: spellings[0],
                searched,
            })
    }
}

fn load_mnist(root: &Path) -> Result<Splits> {
    let locator = Locator::new(DatasetName::Mnist, root, &["mnist", "MNIST/raw"])?;
    let paths = [
        MNIST_TRAIN_IMAGES,
        MNIST_TRAIN_LABELS,
        MNIST_TEST_IMAGES,
        MNIST_TEST_LABELS,
    ]
    .iter()
    .map(|spellings| locator.find(spellings))
    .collect::<Result<Vec<_>>>()?;
    let contents = read_files(&paths)?;
    let file = |i: usize| IdxFile {
        bytes: &contents[i],
        path: &paths[i],
    };
    Splits::new(
        idx::mnist("mnist/train", file(0), file(1))?,
        idx::mnist("mnist/test", file(2), file(3))?,
    )
}

fn load_mnist_test(root: &Path) -> Result<Dataset> {
    let locator = Locator::new(DatasetName::Mnist, root, &["mnist", "MNIST/raw"])?;
    let paths = [MNIST_TEST_IMAGES, MNIST_TEST_LABELS]
        .iter()
        .map(|spellings| locator.find(spellings))
        .collect::<Result<Vec<_>>>()?;
    let contents = read_files(&paths)?;
    let file = |i: usize| IdxFile {
        bytes: &contents[i],
        path: &paths[i],
    };
    idx::mnist("mnist/test", file(0), file(1))
}

fn load_cifar10_test(root: &Path) -> Result<Dataset> {
    let locator = Locator::new(
        DatasetName::Cifar10,
        root,
        &["cifar10", "cifar-10-batches-bin"],
    )?;
    let test_path = locator.find(&[CIFAR10_TEST])?;
    let class_names = cifar10_class_names(&test_path)?;
    read_cifar("cifar10/test", Layout::Cifar10, &[test_path], class_names)
}

/// CIFAR-10's class names from `batches.meta.txt` beside `file`, else the official ones.
fn cifar10_class_names(file: &Path) -> Result<Vec<String>> {
    match sibling(file, CIFAR10_NAMES) {
        Some(path) => read_class_names(&path, cifar::CIFAR10_CLASSES.len()),
        None => Ok(cifar::cifar10_class_names()),
    }
}

/// CIFAR-100's fine class names from `fine_label_names.txt` beside `file`, else numbered.
fn cifar100_class_names(file: &Path) -> Result<Vec<String>> {
    match sibling(file, CIFAR100_NAMES) {
        Some(path) => read_class_names(&path, cifar::CIFAR100_FINE),
        None => Ok(cifar::numbered_class_names(cifar::CIFAR100_FINE)),
    }
}

fn load_cifar100_test(root: &Path) -> Result<Dataset> {
    let locator = Locator::new(
        DatasetName::Cifar100,
        root,
        &["cifar100", "cifar-100-binary"],
    )?;
    let test_path = locator.find(&[CIFAR100_TEST])?;
    let class_names = cifar100_class_names(&test_path)?;
    read_cifar("cifar100/test", Layout::Cifar100, &[test_path], class_names)
}

fn load_cifar10(root: &Path) -> Result<Splits> {
    let locator = Locator::new(
        DatasetName::Cifar10,
        root,
        &["cifar10", "cifar-10-batches-bin"],
    )?;
    // Locate everything first, so a missing batch is reported before 150 MB are decoded.
    let train_paths = CIFAR10_TRAIN
        .iter()
        .map(|name| locator.find(&[name]))
        .collect::<Result<Vec<_>>>()?;
    let test_path = locator.find(&[CIFAR10_TEST])?;
    let class_names = cifar10_class_names(&test_path)?;
    Splits::new(
        read_cifar(
            "cifar10/train",
            Layout::Cifar10,
            &train_paths,
            class_names.clone(),
        )?,
        read_cifar("cifar10/test", Layout::Cifar10, &[test_path], class_names)?,
    )
}

fn load_cifar100(root: &Path) -> Result<Splits> {
    let locator = Locator::new(
        DatasetName::Cifar100,
        root,
        &["cifar100", "cifar-100-binary"],
    )?;
    let test_path = locator.search(&[CIFAR100_TEST]);
    let train_path = match (locator.search(&[CIFAR100_TRAIN]), &test_path) {
        (Ok(train), _) => train,
        (Err(searched), Ok(test)) => {
            return Err(DataError::MissingSplit {
                dataset: DatasetName::Cifar100.as_str(),
                split: "train",
                file: CIFAR100_TRAIN,
                present: test.clone(),
                searched,
            })
        }
        (Err(searched), Err(_)) => {
            return Err(DataError::FileNotFound {
                dataset: DatasetName::Cifar100.as_str(),
                file: CIFAR100_TRAIN,
                searched,
            })
        }
    };
    let test_path = test_path.map_err(|searched| DataError::MissingSplit {
        dataset: DatasetName::Cifar100.as_str(),
        split: "test",
        file: CIFAR100_TEST,
        present: train_path.clone(),
        searched,
    })?;
    let class_names = cifar100_class_names(&train_path)?;
    Splits::new(
        read_cifar(
            "cifar100/train",
            Layout::Cifar100,
            &[train_path],
            class_names.clone(),
        )?,
        read_cifar("cifar100/test", Layout::Cifar100, &[test_path], class_names)?,
    )
}

/// Reads and concatenates CIFAR binary files into one data set.
fn read_cifar(
    name: &str,
    layout: Layout,
    paths: &[PathBuf],
    class_names: Vec<String>,
) -> Result<Dataset> {
    let contents = read_files(paths)?;
    let mut records = Records::with_capacity(layout, contents.iter().map(Vec::len).sum());
    for (bytes, path) in contents.iter().zip(paths) {
        records.append(bytes, path)?;
    }
    records.into_dataset(name, class_names)
}

/// `name` in the same directory as `file`, if it exists.
fn sibling(file: &Path, name: &str) -> Option<PathBuf> {
    let path = file.parent()?.join(name);
    path.is_file().then_some(path)
}

fn read_class_names(path: &Path, expected: usize) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    cifar::parse_class_names(&text, path, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cifar_records, gzip, idx_images, idx_labels};

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// A tiny MNIST directory: 4 train and 2 test images.
    fn mnist_files(dir: &Path, compressed: bool, dotted: bool) {
        let name = |canonical: &str| {
            let base = if dotted {
                canonical.replacen("-idx", ".idx", 1)
            } else {
                canonical.to_owned()
            };
            if compressed {
                format!("{base}.gz")
            } else {
                base
            }
        };
        let pack = |bytes: Vec<u8>| if compressed { gzip(&bytes) } else { bytes };
        write(
            &dir.join(name("train-images-idx3-ubyte")),
            &pack(idx_images(4)),
        );
        write(
            &dir.join(name("train-labels-idx1-ubyte")),
            &pack(idx_labels(&[1, 2, 3, 4])),
        );
        write(
            &dir.join(name("t10k-images-idx3-ubyte")),
            &pack(idx_images(2)),
        );
        write(
            &dir.join(name("t10k-labels-idx1-ubyte")),
            &pack(idx_labels(&[9, 8])),
        );
    }

    #[test]
    fn names_parse_and_display() {
        for name in DatasetName::ALL {
            assert_eq!(name.as_str().parse::<DatasetName>().unwrap(), name);
            assert_eq!(name.to_string(), name.as_str());
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
        assert_eq!(
            " MNIST ".parse::<DatasetName>().unwrap(),
            DatasetName::Mnist
        );
        let err = "imagenet".parse::<DatasetName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown data set `imagenet`; valid names: mnist, cifar10, cifar100, demo-mnist, demo-cifar10"
        );
        assert!(DatasetName::DemoCifar10.is_embedded());
        assert!(!DatasetName::Cifar100.is_embedded());
    }

    #[test]
    fn file_backed_sets_need_a_directory() {
        for name in ["mnist", "cifar10", "cifar100"] {
            let err = load(name, None).unwrap_err();
            assert!(matches!(err, DataError::DataDirRequired { .. }), "{err}");
            assert!(err.to_string().contains("--data-dir"), "{err}");
        }
        let err = load("mnist", Some(Path::new("/no/such/dir"))).unwrap_err();
        assert!(matches!(err, DataError::DataDirNotFound { .. }), "{err}");
    }

    #[test]
    fn embedded_sets_ignore_the_directory() {
        let splits = load("demo-mnist", Some(Path::new("/no/such/dir"))).unwrap();
        assert_eq!(splits.train.len(), embedded::DEMO_TRAIN_LEN);
    }

    #[test]
    fn mnist_layouts() {
        for (sub, compressed, dotted) in [
            ("mnist", true, false),
            ("", false, false),
            ("", true, true),
            ("MNIST/raw", false, true),
        ] {
            let root = tempfile::tempdir().unwrap();
            mnist_files(&root.path().join(sub), compressed, dotted);
            let splits = load("mnist", Some(root.path()))
                .unwrap_or_else(|e| panic!("{sub:?} {compressed} {dotted}: {e}"));
            assert_eq!(splits.train.labels(), &[1, 2, 3, 4]);
            assert_eq!(splits.test.labels(), &[9, 8]);
            assert_eq!(splits.train.name(), "mnist/train");
        }
    }

    #[test]
    fn missing_mnist_file_lists_paths_tried() {
        let root = tempfile::tempdir().unwrap();
        mnist_files(&root.path().join("mnist"), true, false);
        fs::remove_file(root.path().join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
        let err = load("mnist", Some(root.path())).unwrap_err();
        let DataError::FileNotFound { file, searched, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*file, "t10k-labels-idx1-ubyte");
        assert_eq!(searched.len(), 3 * 2 * 2);
        assert!(searched.contains(&root.path().join("mnist/t10k-labels-idx1-ubyte.gz")));
        assert!(searched.contains(&root.path().join("t10k-labels.idx1-ubyte")));
    }

    #[test]
    fn corrupt_mnist_file_is_named() {
        let root = tempfile::tempdir().unwrap();
        mnist_files(root.path(), true, false);
        let path = root.path().join("train-labels-idx1-ubyte.gz");
        let packed = fs::read(&path).unwrap();
        fs::write(&path, &packed[..packed.len() - 3]).unwrap();
        let err = load("mnist", Some(root.path())).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
    }

    fn cifar10_files(dir: &Path) {
        for (i, name) in CIFAR10_TRAIN.iter().enumerate() {
            let bytes = cifar_records(&[(&[i as u8], 0), (&[9], 1)]);
            write(&dir.join(format!("{name}.gz")), &gzip(&bytes));
        }
        write(&dir.join(CIFAR10_TEST), &cifar_records(&[(&[3], 7)]));
    }

    #[test]
    fn cifar10_concatenates_batches_in_order() {
        let root = tempfile::tempdir().unwrap();
        cifar10_files(&root.path().join("cifar-10-batches-bin"));
        let splits = load("cifar10", Some(root.path())).unwrap();
        assert_eq!(splits.train.labels(), &[0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(splits.test.labels(), &[3]);
        assert_eq!(splits.train.class_names()[0], "airplane");
        assert_eq!(splits.normalization.channels(), 3);
    }

    #[test]
    fn cifar10_missing_batch_and_names_file() {
        let root = tempfile::tempdir().unwrap();
        cifar10_files(root.path());
        write(
            &root.path().join(CIFAR10_NAMES),
            b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n",
        );
        let splits = load("cifar10", Some(root.path())).unwrap();
        assert_eq!(splits.test.class_names()[9], "j");
        write(&root.path().join(CIFAR10_NAMES), b"a\nb\n");
        let err = load("cifar10", Some(root.path())).unwrap_err();
        assert!(
            matches!(err, DataError::BadClassNames { found: 2, .. }),
            "{err}"
        );
        fs::remove_file(root.path().join("data_batch_4.bin.gz")).unwrap();
        let err = load("cifar10", Some(root.path())).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::FileNotFound {
                    file: "data_batch_4.bin",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn cifar100_without_train_split_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar100");
        write(
            &dir.join("test.bin.gz"),
            &gzip(&cifar_records(&[(&[1, 2], 0)])),
        );
        let err = load("cifar100", Some(root.path())).unwrap_err();
        assert!(
            matches!(err, DataError::MissingSplit { split: "train", .. }),
            "{err}"
        );
        // ... but its test split alone loads (what a held-out split carves)
        let test = DatasetName::Cifar100.load_test(Some(root.path())).unwrap();
        assert_eq!(test.labels(), &[2]);
        assert_eq!(test.num_classes(), 100);
        let msg = err.to_string();
        assert!(
            msg.starts_with("cifar100: the train split is missing"),
            "{msg}"
        );
        assert!(msg.contains("test.bin.gz"), "{msg}");

        // Nothing at all: plain not-found.
        let empty = tempfile::tempdir().unwrap();
        let err = load("cifar100", Some(empty.path())).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::FileNotFound {
                    file: "train.bin",
                    ..
                }
            ),
            "{err}"
        );

        // Train without test is just as incomplete.
        let only_train = tempfile::tempdir().unwrap();
        write(
            &only_train.path().join("train.bin"),
            &cifar_records(&[(&[1, 2], 0)]),
        );
        let err = load("cifar100", Some(only_train.path())).unwrap_err();
        assert!(
            matches!(err, DataError::MissingSplit { split: "test", .. }),
            "{err}"
        );
    }

    #[test]
    fn cifar100_with_both_splits() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("train.bin"),
            &cifar_records(&[(&[1, 42], 0), (&[0, 7], 0)]),
        );
        write(
            &root.path().join("test.bin"),
            &cifar_records(&[(&[2, 99], 0)]),
        );
        let splits = load("cifar100", Some(root.path())).unwrap();
        assert_eq!(splits.train.labels(), &[42, 7]);
        assert_eq!(splits.test.labels(), &[99]);
        assert_eq!(splits.train.num_classes(), 100);
        assert_eq!(splits.train.class_names()[42], "class_42");

        let names: String = (0..100).map(|k| format!("name{k}\n")).collect();
        write(&root.path().join(CIFAR100_NAMES), names.as_bytes());
        let splits = load("cifar100", Some(root.path())).unwrap();
        assert_eq!(splits.test.class_names()[99], "name99");
    }

    #[test]
    fn test_split_alone() {
        let root = tempfile::tempdir().unwrap();
        mnist_files(root.path(), false, false);
        let splits = load("mnist", Some(root.path())).unwrap();
        let test = DatasetName::Mnist.load_test(Some(root.path())).unwrap();
        assert_eq!(test.labels(), splits.test.labels());
        assert_eq!(test.pixels(), splits.test.pixels());
        let demo = DatasetName::DemoMnist.load_test(None).unwrap();
        assert_eq!(demo.len(), crate::DEMO_TEST_LEN);
        assert!(matches!(
            DatasetName::Cifar10.load_test(None),
            Err(DataError::DataDirRequired { .. })
        ));
    }

    #[test]
    fn uncompressed_is_preferred_over_gz() {
        let root = tempfile::tempdir().unwrap();
        mnist_files(root.path(), false, false);
        // A corrupt .gz next to a good raw file is never opened.
        write(
            &root.path().join("train-images-idx3-ubyte.gz"),
            b"\x1f\x8bgarbage",
        );
        assert!(load("mnist", Some(root.path())).is_ok());
    }
}
