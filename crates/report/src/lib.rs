//! Charts for synfed's reports, written as PNG or SVG: line charts of learning curves
//! (accuracy, loss, attack success … per round, [`LineChart`]), means with confidence
//! whiskers per category ([`ErrorBarChart`], e.g. reconstruction PSNR by method set) and
//! labelled scatter plots ([`ScatterChart`], e.g. the privacy–utility plot), and labelled grids
//! of images ([`ImageGrid`], e.g. an attacked batch and its reconstruction under every variant,
//! one labelled row each, tiles upscaled crisply). All four implement [`Chart`], so
//! [`write_png`] and [`write_svg`] take any of them; a grid's size follows from its content
//! ([`ImageGrid::size`]).
//!
//! Why this crate exists and how it is built:
//!
//! * **No system fonts.** Text is drawn with DejaVu Sans, embedded in the library
//!   (`assets/DejaVuSans.ttf`, see `assets/README.md` for its licence) and registered with
//!   plotters' `ab_glyph` font table under the family name `sans-serif`. Nothing looks up
//!   fontconfig, so charts render the same on a bare CI machine as on a desktop. (SVG files
//!   name the family `sans-serif`; the viewer's own sans-serif font draws the text there.)
//! * **Deterministic bytes.** The same chart and size always give the same file: the palette
//!   is fixed, the legend placement is a pure function of the data, and the PNG is rendered
//!   into memory and encoded by the `image` crate's PNG encoder (no timestamps or other
//!   metadata). Results can therefore be diffed or checked into a repository.
//! * **Atomic files.** A chart is written to a temporary file beside its destination and
//!   renamed over it, so a reader never sees a half-written chart.
//! * **Bad data is an error, not a panic.** A line chart with no series, a series with no
//!   points, a NaN or infinite coordinate, an empty or inverted `y_range` or an unusable image
//!   size is reported as a [`PlotError`] that names the output path, and nothing is written.
//!   Error-bar and scatter charts summarise experiments where a cell may be missing or
//!   undefined, so there missing and non-finite values are left out (and an empty chart
//!   renders as an empty frame); only inconsistent input (more values than groups, a point of
//!   an unnamed series) or an unusable size is an error. An image grid without rows, a row
//!   without images or tiles of different sizes is an error too.
//! * **Legends never hide data** in error-bar and scatter charts: they sit in centred rows
//!   between the title and the plot. Category names that do not fit side by side are shrunk,
//!   wrapped in two lines or set vertically; point annotations go where they cover the fewest
//!   other labels and points.
//!
//! Points of a line chart's series are joined in the order given (sort them by x first if they
//! are not already); series with at most [`MARKER_MAX_POINTS`] points also get a dot at every
//! point so that sparse curves stay readable.
//!
//! One concept a file: `output` (the [`Chart`] trait, rendering to bytes, atomic files),
//! `error`, `style` (font, palette, markers, scale), `axis` (ranges, ticks, clipping, the
//! axes' look), `legend`, `categories` (category labels under an error-bar chart),
//! `annotation` (placing point labels), and one file per chart kind: `line`, `error_bar`,
//! `scatter`, `image_grid`.

mod annotation;
mod axis;
mod categories;
mod error;
mod error_bar;
mod image_grid;
mod legend;
mod line;
mod output;
mod scatter;
mod style;
#[cfg(test)]
mod test_support;

pub use error::PlotError;
pub use error_bar::{BarSeries, ErrorBarChart};
pub use image_grid::{GridLayout, ImageGrid, MAX_LABEL_WIDTH, MIN_TILE_SIDE, TILE_GAP};
pub use line::{LineChart, Series, MARKER_MAX_POINTS};
pub use output::{
    render_png, render_svg, write_png, write_svg, Chart, MAX_SIDE, MIN_HEIGHT, MIN_WIDTH,
};
pub use scatter::{ScatterChart, ScatterPoint};
