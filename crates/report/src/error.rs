//! Why a chart could not be written: one typed error for every chart kind, so that callers
//! can tell bad data from a bad size or a failed write, and every message names the file.

use std::path::PathBuf;

use crate::output::{MAX_SIDE, MIN_HEIGHT, MIN_WIDTH};

/// Why a chart could not be written. Every variant names the output path.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot plot {}: the chart has no series", path.display())]
    NoSeries { path: PathBuf },
    #[error("cannot plot {}: series {label:?} has no points", path.display())]
    EmptySeries { path: PathBuf, label: String },
    #[error(
        "cannot plot {}: series {label:?} has a non-finite value at point {index}: ({x}, {y})",
        path.display()
    )]
    NonFinite {
        path: PathBuf,
        label: String,
        index: usize,
        x: f64,
        y: f64,
    },
    #[error(
        "cannot plot {}: y range ({low}, {high}) is invalid (needs finite bounds with low < high)",
        path.display()
    )]
    InvalidYRange { path: PathBuf, low: f64, high: f64 },
    #[error(
        "cannot plot {}: the data spans more than an f64 can represent",
        path.display()
    )]
    RangeOverflow { path: PathBuf },
    #[error(
        "cannot plot {}: series {label:?} has {values} values but the chart has {groups} groups",
        path.display()
    )]
    TooManyValues {
        path: PathBuf,
        label: String,
        values: usize,
        groups: usize,
    },
    #[error(
        "cannot plot {}: point {label:?} belongs to series {series}, but only {count} series are named",
        path.display()
    )]
    UnknownSeries {
        path: PathBuf,
        label: String,
        series: usize,
        count: usize,
    },
    #[error("cannot plot {}: the image grid has no rows", path.display())]
    NoRows { path: PathBuf },
    #[error("cannot plot {}: row {label:?} of the image grid has no images", path.display())]
    EmptyRow { path: PathBuf, label: String },
    #[error(
        "cannot plot {}: image {index} of row {label:?} is {width}x{height}, but the grid's tiles are {expected_width}x{expected_height} (all tiles need one size, and at least one pixel)",
        path.display()
    )]
    TileSize {
        path: PathBuf,
        label: String,
        index: usize,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
    #[error(
        "cannot plot {}: the image grid needs {needed_width}x{needed_height} pixels, but the image is {width}x{height}",
        path.display()
    )]
    AreaTooSmall {
        path: PathBuf,
        width: u32,
        height: u32,
        needed_width: u32,
        needed_height: u32,
    },
    #[error(
        "cannot plot {}: image size {width}x{height} is outside {MIN_WIDTH}x{MIN_HEIGHT} ..= {MAX_SIDE}x{MAX_SIDE}",
        path.display()
    )]
    InvalidSize {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("failed to draw chart for {}: {message}", path.display())]
    Render { path: PathBuf, message: String },
    #[error("failed to encode PNG for {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("failed to write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
