//! Charts written as PNG or SVG: line charts of learning curves (accuracy,
//! loss, attack success … per round, [`LineChart`]), means with confidence
//! whiskers per category ([`ErrorBarChart`], e.g. reconstruction PSNR by
//! method set) and labelled scatter plots ([`ScatterChart`], e.g. the
//! privacy–utility plot). All three implement [`Chart`], so [`write_png`]
//! and [`write_svg`] take any of them.
//!
//! Why this module exists and how it is built:
//!
//! * **No system fonts.** Text is drawn with DejaVu Sans, embedded in the
//!   binary (`assets/DejaVuSans.ttf`, see `assets/README.md` for its licence)
//!   and registered with plotters' `ab_glyph` font table under the family
//!   name `sans-serif`. Nothing looks up fontconfig, so charts render the same
//!   on a bare CI machine as on a desktop. (SVG files name the family
//!   `sans-serif`; the viewer's own sans-serif font draws the text there.)
//! * **Deterministic bytes.** The same chart and size always give the same
//!   file: the palette is fixed, the legend placement is a pure function of
//!   the data, and the PNG is rendered into memory and encoded by the `image`
//!   crate's PNG encoder (no timestamps or other metadata). Results can
//!   therefore be diffed or checked into a repository.
//! * **Bad data is an error, not a panic.** A line chart with no series, a
//!   series with no points, a NaN or infinite coordinate, an empty or
//!   inverted `y_range` or an unusable image size is reported as a
//!   [`PlotError`] that names the output path, and nothing is written.
//!   Error-bar and scatter charts summarise experiments where a cell may be
//!   missing or undefined, so there missing and non-finite values are left
//!   out (and an empty chart renders as an empty frame); only inconsistent
//!   input (more values than groups, a point of an unnamed series) or an
//!   unusable size is an error.
//! * **Legends never hide data** in error-bar and scatter charts: they sit in
//!   centred rows between the title and the plot. Category names that do not
//!   fit side by side are shrunk, wrapped in two lines or set vertically;
//!   point annotations go where they cover the fewest other labels and points.
//!
//! Points of a series are joined in the order given (sort them by x first if
//! they are not already); series with at most [`MARKER_MAX_POINTS`] points
//! also get a dot at every point so that sparse curves stay readable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One curve of a [`LineChart`]: a legend label and its `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text; an empty label leaves the series out of the legend.
    pub label: String,
    /// Points, joined by straight lines in the order given.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: title, axis labels, one or more series and optionally a
/// fixed y range.
#[derive(Debug, Clone, Copy)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// Fixed y axis `(low, high)`, e.g. `Some((0.0, 1.0))` for accuracy, so
    /// that charts of different runs are comparable. `None` fits the axis to
    /// the data (with a small margin). Parts of curves outside a fixed range
    /// are clipped.
    pub y_range: Option<(f64, f64)>,
}

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

/// Series with at most this many points get a marker at every point.
pub const MARKER_MAX_POINTS: usize = 40;
/// Smallest accepted image width in pixels.
pub const MIN_WIDTH: u32 = 200;
/// Smallest accepted image height in pixels.
pub const MIN_HEIGHT: u32 = 150;
/// Largest accepted width or height in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Fixed series palette (Tableau 10), cycled when there are more series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Family name the embedded font is registered under; it is also plotters'
/// default family, so every piece of text uses the embedded font.
const FONT_FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters exactly once per process.
/// Returns whether the font is available.
fn ensure_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    })
}

/// A chart that can be written with [`write_png`] and [`write_svg`]:
/// [`LineChart`], [`ErrorBarChart`] and [`ScatterChart`].
pub trait Chart {
    /// Checks the chart's data and draws it onto `root`, the whole image.
    /// Errors name `path`, the file the chart is meant for; nothing is
    /// written to it here.
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError>;
}

/// Writes the chart as PNG (width × height pixels) to `path`.
pub fn write_png<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    let bytes = render_png(chart, path, width, height)?;
    write_file(path, &bytes)
}

/// Writes the chart as SVG (width × height user units) to `path`.
pub fn write_svg<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    let svg = render_svg(chart, path, width, height)?;
    write_file(path, svg.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    std::fs::write(path, bytes).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn check_size(path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
    if !(MIN_WIDTH..=MAX_SIDE).contains(&width) || !(MIN_HEIGHT..=MAX_SIDE).contains(&height) {
        return Err(PlotError::InvalidSize {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}

/// Wraps a drawing error message (see [`draw`]) as a [`PlotError`].
fn render_error(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError::Render {
        path: path.to_path_buf(),
        message,
    }
}

/// Renders the chart to PNG bytes; `path` is only used in error messages.
fn render_png<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, PlotError> {
    check_size(path, width, height)?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        chart.render(&root, path)?;
        root.present()
            .map_err(|e| render_error(path)(e.to_string()))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(png)
}

/// Renders the chart to an SVG document; `path` is only used in error messages.
fn render_svg<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<String, PlotError> {
    check_size(path, width, height)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        chart.render(&root, path)?;
        root.present()
            .map_err(|e| render_error(path)(e.to_string()))?;
    }
    Ok(svg)
}

impl Chart for LineChart<'_> {
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let (width, height) = root.dim_in_pixel();
        let layout = Layout::new(self, path, width, height)?;
        draw(root, self, &layout).map_err(render_error(path))
    }
}

/// Everything about a chart that is worked out (and validated) before
/// drawing: axis ranges, legend corner and the size-dependent scale.
struct Layout {
    x: (f64, f64),
    y: (f64, f64),
    legend: Corner,
    /// Multiplier for font sizes, line widths and margins.
    scale: f64,
}

impl Layout {
    fn new(chart: &LineChart, path: &Path, width: u32, height: u32) -> Result<Self, PlotError> {
        check_size(path, width, height)?;
        let path = || path.to_path_buf();
        if chart.series.is_empty() {
            return Err(PlotError::NoSeries { path: path() });
        }
        let (mut x_lo, mut x_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for series in chart.series {
            if series.points.is_empty() {
                return Err(PlotError::EmptySeries {
                    path: path(),
                    label: series.label.clone(),
                });
            }
            for (index, &(x, y)) in series.points.iter().enumerate() {
                if !x.is_finite() || !y.is_finite() {
                    return Err(PlotError::NonFinite {
                        path: path(),
                        label: series.label.clone(),
                        index,
                        x,
                        y,
                    });
                }
                x_lo = x_lo.min(x);
                x_hi = x_hi.max(x);
                y_lo = y_lo.min(y);
                y_hi = y_hi.max(y);
            }
        }
        let x = {
            // A little room left and right so edge markers are not cut in half.
            let (lo, hi) = widen_if_degenerate(x_lo, x_hi);
            let pad = 0.02 * (hi - lo);
            (lo - pad, hi + pad)
        };
        let y = match chart.y_range {
            Some((low, high)) => {
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(PlotError::InvalidYRange {
                        path: path(),
                        low,
                        high,
                    });
                }
                (low, high)
            }
            None => {
                let (lo, hi) = widen_if_degenerate(y_lo, y_hi);
                let pad = 0.05 * (hi - lo);
                (lo - pad, hi + pad)
            }
        };
        let spans_ok = [x, y]
            .iter()
            .all(|&(lo, hi)| lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && lo < hi);
        if !spans_ok {
            return Err(PlotError::RangeOverflow { path: path() });
        }
        Ok(Layout {
            x,
            y,
            legend: legend_corner(chart.series, x, y),
            scale: scale_for(width, height),
        })
    }

    /// A length of `base` pixels at a 500-pixel chart, scaled to this chart.
    fn px(&self, base: f64) -> u32 {
        (base * self.scale).round().max(1.0) as u32
    }

    fn font(&self, base_size: f64) -> FontDesc<'static> {
        (FONT_FAMILY, base_size * self.scale).into_font()
    }
}

/// Multiplier for font sizes, line widths and margins of a chart this big
/// (1 at 500 pixels on the shorter side).
fn scale_for(width: u32, height: u32) -> f64 {
    (f64::from(width.min(height)) / 500.0).clamp(0.8, 4.0)
}

/// Gives a zero-width range (all values equal) some width so it can be drawn.
fn widen_if_degenerate(lo: f64, hi: f64) -> (f64, f64) {
    if lo < hi {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad, hi + pad)
    }
}

/// A corner of the plotting area (where the legend goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corner {
    UpperRight,
    LowerRight,
    UpperLeft,
    LowerLeft,
}

impl Corner {
    /// In tie-break order.
    const ALL: [Corner; 4] = [
        Corner::UpperRight,
        Corner::LowerRight,
        Corner::UpperLeft,
        Corner::LowerLeft,
    ];

    /// Whether the normalised point `(u, v)` (both in 0..=1 inside the plot)
    /// lies in this corner's box, which covers `size` of each axis.
    fn contains(self, (u, v): (f64, f64), size: f64) -> bool {
        let (right, upper) = match self {
            Corner::UpperRight => (true, true),
            Corner::LowerRight => (true, false),
            Corner::UpperLeft => (false, true),
            Corner::LowerLeft => (false, false),
        };
        let in_x = if right { u >= 1.0 - size } else { u <= size };
        let in_y = if upper { v >= 1.0 - size } else { v <= size };
        in_x && in_y
    }

    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// Picks the plot corner that the curves pass through least, so the legend
/// hides as little data as possible. Deterministic: ties go to upper right,
/// then lower right, upper left, lower left.
fn legend_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> Corner {
    // Fraction of each axis that a corner box covers, and samples per segment
    // (so that long straight segments through a corner count too).
    const BOX: f64 = 0.45;
    const SAMPLES: usize = 8;
    let norm = |(px, py): (f64, f64)| ((px - x.0) / (x.1 - x.0), (py - y.0) / (y.1 - y.0));
    let mut hits = [0usize; 4];
    let mut count = |p: (f64, f64)| {
        for (hit, corner) in hits.iter_mut().zip(Corner::ALL) {
            *hit += usize::from(corner.contains(p, BOX));
        }
    };
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().copied().map(norm).collect();
        if let Some(&first) = pts.first() {
            count(first);
        }
        for w in pts.windows(2) {
            let ((u0, v0), (u1, v1)) = (w[0], w[1]);
            for k in 1..=SAMPLES {
                let t = k as f64 / SAMPLES as f64;
                count((u0 + t * (u1 - u0), v0 + t * (v1 - v0)));
            }
        }
    }
    let best = (0..4).min_by_key(|&i| (hits[i], i)).unwrap_or(0);
    Corner::ALL[best]
}

/// Splits a polyline into the pieces that lie within `lo <= y <= hi`
/// (segments crossing a bound are cut where they cross it). A lone point
/// inside the range becomes a one-point piece.
fn clip_to_y_range(points: &[(f64, f64)], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    if let [p] = points {
        if (lo..=hi).contains(&p.1) {
            runs.push(vec![*p]);
        }
        return runs;
    }
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut flush = |run: &mut Vec<(f64, f64)>| {
        if !run.is_empty() {
            runs.push(std::mem::take(run));
        }
    };
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let dy = y1 - y0;
        // Parameter interval [enter, exit] of the segment inside the range.
        let (enter, exit) = if dy == 0.0 {
            if (lo..=hi).contains(&y0) {
                (0.0, 1.0)
            } else {
                (1.0, 0.0)
            }
        } else {
            let (ta, tb) = ((lo - y0) / dy, (hi - y0) / dy);
            (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
        };
        if enter > exit {
            flush(&mut run);
            continue;
        }
        let at = |t: f64| {
            if t == 1.0 {
                (x1, y1)
            } else {
                (x0 + t * (x1 - x0), (y0 + t * dy).clamp(lo, hi))
            }
        };
        // The run continues only if this piece starts at the shared point.
        if enter > 0.0 || run.is_empty() {
            flush(&mut run);
            run.push(at(enter));
        }
        run.push(at(exit));
        if exit < 1.0 {
            flush(&mut run);
        }
    }
    flush(&mut run);
    runs
}

/// Maximum number of labelled ticks per axis.
const TICKS: usize = 10;

/// A tick-label formatter for an axis spanning `range` that prints every
/// tick with the same, smallest sufficient number of decimals ("5", "10";
/// "0.0", "0.5", "1.0"). `None` (plotters' default formatting) for very large
/// or very small magnitudes.
fn tick_formatter(range: (f64, f64)) -> Option<impl Fn(&f64) -> String> {
    let ticks = plotters::coord::types::RangedCoordf64::from(range.0..range.1).key_points(TICKS);
    let step = match ticks.as_slice() {
        [a, b, ..] => (b - a).abs(),
        _ => return None,
    };
    let max_abs = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    if !(step > 1e-6 && max_abs < 1e7) {
        return None;
    }
    let decimals = (0..=9usize).find(|&d| {
        let scale = 10f64.powi(d as i32);
        ticks
            .iter()
            .all(|t| ((t * scale).round() / scale - t).abs() <= step * 1e-6)
    })?;
    let zero_below = step * 1e-9;
    Some(move |v: &f64| {
        let v = if v.abs() < zero_below { 0.0 } else { *v };
        format!("{v:.decimals$}")
    })
}

/// Draws the whole chart on `root`; errors are returned as text because the
/// plotters error type depends on the backend.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    layout: &Layout,
) -> Result<(), String> {
    if !ensure_font() {
        return Err("the embedded DejaVu Sans font could not be loaded".to_string());
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();

    root.fill(&WHITE).map_err(err)?;
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, layout.font(22.0))
        .margin(layout.px(14.0))
        .x_label_area_size(layout.px(48.0))
        .y_label_area_size(layout.px(68.0))
        .build_cartesian_2d(layout.x.0..layout.x.1, layout.y.0..layout.y.1)
        .map_err(err)?;

    let x_ticks = tick_formatter(layout.x);
    let y_ticks = tick_formatter(layout.y);
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_labels(TICKS)
        .y_labels(TICKS)
        .max_light_lines(4)
        .label_style(layout.font(14.0))
        .axis_desc_style(layout.font(16.0))
        .bold_line_style(RGBColor(0xd0, 0xd0, 0xd0).stroke_width(1))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0).stroke_width(1))
        .axis_style(RGBColor(0x40, 0x40, 0x40).stroke_width(1));
    if let Some(f) = &x_ticks {
        mesh.x_label_formatter(f);
    }
    if let Some(f) = &y_ticks {
        mesh.y_label_formatter(f);
    }
    mesh.draw().map_err(err)?;

    let stroke = layout.px(2.0);
    let marker = layout.px(3.5);
    let legend_len = layout.px(24.0) as i32;
    let mut any_label = false;
    for (i, series) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let line = color.stroke_width(stroke);
        let markers = series.points.len() <= MARKER_MAX_POINTS;
        // Plotters clamps out-of-range coordinates onto the plot border,
        // which would bend lines and misplace markers when a fixed y range
        // cuts through the data, so clip against the y range here.
        let (y_lo, y_hi) = layout.y;
        for run in clip_to_y_range(&series.points, y_lo, y_hi) {
            ctx.draw_series(LineSeries::new(run, line)).map_err(err)?;
        }
        if !series.label.is_empty() {
            // The legend entry hangs off an empty series so that it exists
            // even when the curve lies wholly outside a fixed y range.
            any_label = true;
            ctx.draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
                .map_err(err)?
                .label(series.label.as_str())
                .legend(move |(x, y)| {
                    let dot = if markers { marker } else { 0 };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (legend_len, 0)], line)
                        + Circle::new((legend_len / 2, 0), dot, color.filled())
                });
        }
        if markers {
            ctx.draw_series(
                series
                    .points
                    .iter()
                    .filter(|&&(_, y)| (y_lo..=y_hi).contains(&y))
                    .map(|&p| Circle::new(p, marker, color.filled())),
            )
            .map_err(err)?;
        }
    }

    if any_label {
        ctx.configure_series_labels()
            .position(layout.legend.position())
            .margin(layout.px(12.0))
            .legend_area_size(legend_len + layout.px(6.0) as i32)
            .label_font(layout.font(14.0))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0xa0, 0xa0, 0xa0))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Error-bar and scatter charts
// ---------------------------------------------------------------------------

/// Means with interval whiskers over categories: for every group (an x
/// category, e.g. a method set) one marker per series, side by side, with a
/// vertical whisker from `lo` to `hi` (e.g. a 95 % confidence interval).
///
/// Missing values (`None`) leave a gap. A non-finite mean skips that value;
/// a non-finite `lo` or `hi` shortens the whisker to the mean on that side;
/// `lo > hi` is read as `(hi, lo)`. The y axis covers every drawn whisker.
/// A series with fewer values than there are groups is missing the rest; one
/// with more is an error ([`PlotError::TooManyValues`]). Charts without
/// groups, series or finite values still render (as an empty frame).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorBarChart {
    pub title: String,
    pub y_label: String,
    /// Category names, left to right; drawn as the x tick labels (shrunk,
    /// wrapped or turned vertical when they do not fit side by side).
    pub groups: Vec<String>,
    pub series: Vec<BarSeries>,
}

/// One series of an [`ErrorBarChart`]: legend label and, per group,
/// `Some((mean, lo, hi))` or `None` when missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarSeries {
    /// Legend text; an empty label leaves the series out of the legend.
    pub label: String,
    pub values: Vec<Option<(f64, f64, f64)>>,
}

/// Labelled points coloured by series, e.g. reconstruction PSNR against
/// test accuracy with one point per method set or defence.
///
/// Every point is annotated with its label next to it (placed where it hides
/// the fewest other labels and points). Points with a non-finite coordinate
/// are left out; a point whose `series` has no entry in `series_names` is an
/// error ([`PlotError::UnknownSeries`]). A chart without points still
/// renders (as an empty frame).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScatterChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<ScatterPoint>,
    /// Legend names, indexed by [`ScatterPoint::series`]; an empty name
    /// leaves that series out of the legend.
    pub series_names: Vec<String>,
}

/// One point of a [`ScatterChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    /// Annotation drawn next to the point (may be empty).
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Index into [`ScatterChart::series_names`]; picks colour and marker.
    pub series: usize,
}

/// Marker shapes, cycled together with [`PALETTE`] so that series stay
/// distinguishable in greyscale print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkerShape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

impl MarkerShape {
    const ALL: [MarkerShape; 5] = [
        MarkerShape::Circle,
        MarkerShape::Square,
        MarkerShape::TriangleUp,
        MarkerShape::Diamond,
        MarkerShape::TriangleDown,
    ];
}

/// Colour and marker shape of series `index`.
fn series_style(index: usize) -> (RGBColor, MarkerShape) {
    (
        PALETTE[index % PALETTE.len()],
        MarkerShape::ALL[index % MarkerShape::ALL.len()],
    )
}

/// Draws a filled marker of radius `r` centred on the pixel `(x, y)` of
/// `area` (whose coordinates are its own pixels).
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    r: i32,
    color: RGBColor,
    shape: MarkerShape,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let fill = color.filled();
    match shape {
        MarkerShape::Circle => area.draw(&Circle::new((x, y), r.max(1) as u32, fill)),
        MarkerShape::Square => {
            let h = (f64::from(r) * 0.85).round().max(1.0) as i32;
            area.draw(&Rectangle::new([(x - h, y - h), (x + h, y + h)], fill))
        }
        MarkerShape::TriangleUp | MarkerShape::TriangleDown => {
            let s = if shape == MarkerShape::TriangleUp {
                1
            } else {
                -1
            };
            let (r, half) = (f64::from(r) * 1.15, f64::from(r) * 1.0);
            let tip = (x, y - s * r.round() as i32);
            let base_y = y + s * (r * 0.6).round() as i32;
            let h = half.round() as i32;
            area.draw(&Polygon::new(
                vec![tip, (x - h, base_y), (x + h, base_y)],
                fill,
            ))
        }
        MarkerShape::Diamond => {
            let d = (f64::from(r) * 1.2).round() as i32;
            area.draw(&Polygon::new(
                vec![(x, y - d), (x + d, y), (x, y + d), (x - d, y)],
                fill,
            ))
        }
    }
}

/// Size-dependent lengths and fonts of the error-bar and scatter charts.
#[derive(Debug, Clone, Copy)]
struct Scale(f64);

impl Scale {
    fn px(self, base: f64) -> u32 {
        (base * self.0).round().max(1.0) as u32
    }

    fn pxi(self, base: f64) -> i32 {
        self.px(base) as i32
    }

    fn font(self, base_size: f64) -> TextStyle<'static> {
        (FONT_FAMILY, base_size * self.0).into_font().into()
    }
}

/// Text colour of annotations and category labels.
const TEXT_GREY: RGBColor = RGBColor(0x30, 0x30, 0x30);

/// One entry of a legend row: colour and marker of series `index`, whether
/// the swatch gets a whisker, and its text.
struct LegendEntry<'a> {
    index: usize,
    whisker: bool,
    label: &'a str,
}

/// Lays out legend entries in centred rows no wider than the area, draws
/// them if `draw` is set, and returns the height they need (0 when there
/// are no entries).
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    s: Scale,
    draw: bool,
) -> Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
    if entries.is_empty() {
        return Ok(0);
    }
    let font = s.font(14.0);
    let (area_w, _) = area.dim_in_pixel();
    let swatch = s.pxi(22.0);
    let gap = s.pxi(6.0);
    let spacing = s.pxi(18.0);
    let mut widths = Vec::with_capacity(entries.len());
    let mut text_h = 0;
    for e in entries {
        let (w, h) = area.estimate_text_size(e.label, &font)?;
        widths.push(swatch + gap + w as i32);
        text_h = text_h.max(h as i32);
    }
    let row_h = text_h.max(s.pxi(12.0)) + s.pxi(6.0);
    // Greedy rows: entry indices of each row.
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    let mut used = 0;
    for (i, &w) in widths.iter().enumerate() {
        let row = rows.last_mut().expect("rows is never empty");
        let need = if row.is_empty() {
            w
        } else {
            used + spacing + w
        };
        if row.is_empty() || need <= area_w as i32 {
            row.push(i);
            used = need;
        } else {
            rows.push(vec![i]);
            used = w;
        }
    }
    if draw {
        let style = font.pos(Pos::new(HPos::Left, VPos::Center));
        for (r, row) in rows.iter().enumerate() {
            let row_w: i32 =
                row.iter().map(|&i| widths[i]).sum::<i32>() + spacing * (row.len() as i32 - 1);
            let mut x = ((area_w as i32 - row_w) / 2).max(0);
            let y = r as i32 * row_h + row_h / 2;
            for &i in row {
                let e = &entries[i];
                let (color, shape) = series_style(e.index);
                let cx = x + swatch / 2;
                if e.whisker {
                    let arm = s.pxi(7.0);
                    let cap = s.pxi(4.0);
                    let line = color.stroke_width(s.px(1.5));
                    area.draw(&PathElement::new(vec![(cx, y - arm), (cx, y + arm)], line))?;
                    for yy in [y - arm, y + arm] {
                        area.draw(&PathElement::new(
                            vec![(cx - cap, yy), (cx + cap, yy)],
                            line,
                        ))?;
                    }
                }
                draw_marker(area, (cx, y), s.pxi(4.5), color, shape)?;
                area.draw(&Text::new(e.label, (x + swatch + gap, y), style.clone()))?;
                x += widths[i] + spacing;
            }
        }
    }
    Ok(rows.len() as u32 * row_h as u32 + s.px(4.0))
}

/// Draws the margin, title and legend common to the error-bar and scatter
/// charts, and returns the area left for the axes and plot.
fn frame_with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    entries: &[LegendEntry],
    s: Scale,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let m = s.pxi(14.0);
    let body = root.margin(m, m, m, m);
    let body = if title.trim().is_empty() {
        body
    } else {
        body.titled(title, s.font(22.0))?
    };
    let legend_h = legend_rows(&body, entries, s, false)?;
    if legend_h == 0 {
        return Ok(body);
    }
    let (_, body_h) = body.dim_in_pixel();
    // Never let the legend take more than a third of the height.
    let legend_h = legend_h.min(body_h / 3);
    let (legend, rest) = body.split_vertically(legend_h);
    legend_rows(&legend, entries, s, true)?;
    Ok(rest)
}

/// Pads a `(lo, hi)` data range by `frac` of its width on both sides (after
/// giving an empty range some width); `(0, 1)` when there is no data.
fn padded_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if lo > hi {
        return (0.0, 1.0);
    }
    let (lo, hi) = widen_if_degenerate(lo, hi);
    let pad = frac * (hi - lo);
    (lo - pad, hi + pad)
}

fn range_ok((lo, hi): (f64, f64)) -> bool {
    lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && lo < hi
}

/// The drawable part of an error-bar value: `(mean, lo, hi)` with finite
/// numbers and `lo <= mean <= hi`, or `None` when the mean is not finite.
fn whisker((mean, lo, hi): (f64, f64, f64)) -> Option<(f64, f64, f64)> {
    if !mean.is_finite() {
        return None;
    }
    let lo = if lo.is_finite() { lo } else { mean };
    let hi = if hi.is_finite() { hi } else { mean };
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    Some((mean, lo.min(mean), hi.max(mean)))
}

impl ErrorBarChart {
    /// Validates the series and returns the y range.
    fn y_range(&self, path: &Path) -> Result<(f64, f64), PlotError> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for series in &self.series {
            if series.values.len() > self.groups.len() {
                return Err(PlotError::TooManyValues {
                    path: path.to_path_buf(),
                    label: series.label.clone(),
                    values: series.values.len(),
                    groups: self.groups.len(),
                });
            }
            for (_, l, h) in series.values.iter().flatten().copied().filter_map(whisker) {
                lo = lo.min(l);
                hi = hi.max(h);
            }
        }
        let y = padded_range(lo, hi, 0.06);
        if !range_ok(y) {
            return Err(PlotError::RangeOverflow {
                path: path.to_path_buf(),
            });
        }
        Ok(y)
    }
}

impl Chart for ErrorBarChart {
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let (width, height) = root.dim_in_pixel();
        check_size(path, width, height)?;
        let y = self.y_range(path)?;
        draw_error_bars(root, self, y).map_err(render_error(path))
    }
}

/// How the category labels under an error-bar chart are set.
#[derive(Debug, Clone, PartialEq)]
struct CategoryLabels {
    /// Font size (pixels).
    size: f64,
    /// Each label's lines (one or two), or for vertical labels the one line.
    lines: Vec<Vec<String>>,
    vertical: bool,
    /// Only every `stride`-th label is drawn (vertical labels too dense).
    stride: usize,
    /// Height of the label area below the plot, ticks included.
    height: u32,
}

/// Characters after which a category label may be wrapped.
const BREAK_AFTER: [char; 6] = [' ', '+', ',', '/', '-', '_'];

/// Splits `label` into two lines at the break point that makes the wider
/// line narrowest; `None` when it has no break point.
fn wrap_in_two(label: &str, width: &impl Fn(&str) -> u32) -> Option<(String, String)> {
    label
        .char_indices()
        .filter(|&(_, c)| BREAK_AFTER.contains(&c))
        .map(|(i, c)| {
            let cut = i + c.len_utf8();
            let (a, b) = (label[..cut].trim_end(), label[cut..].trim_start());
            (a.to_string(), b.to_string())
        })
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .min_by_key(|(a, b)| width(a).max(width(b)))
}

/// Cuts `label` (adding "…") until `width` of it is at most `max`.
fn truncate_to(label: &str, max: u32, width: &impl Fn(&str) -> u32) -> String {
    if width(label) <= max {
        return label.to_string();
    }
    let chars: Vec<char> = label.chars().collect();
    for keep in (1..chars.len()).rev() {
        let t: String = chars[..keep].iter().collect::<String>() + "…";
        if width(&t) <= max {
            return t;
        }
    }
    "…".to_string()
}

/// Picks how to set the category labels: horizontal at 14 down to 10 points,
/// then wrapped in two lines, then vertical (truncated to `max_vertical`
/// pixels, and thinned out when even vertical labels overlap). `measure`
/// gives a text's `(width, height)` at a font size in pixels.
fn layout_categories(
    groups: &[String],
    slot: f64,
    max_vertical: u32,
    s: Scale,
    measure: &impl Fn(&str, f64) -> (u32, u32),
) -> CategoryLabels {
    let tick = s.px(10.0);
    let avail = (slot * 0.94).max(1.0) as u32;
    let sizes: Vec<f64> = (10..=14).rev().map(|p| f64::from(p) * s.0).collect();
    for &size in &sizes {
        if groups.iter().all(|g| measure(g, size).0 <= avail) {
            let h = groups.iter().map(|g| measure(g, size).1).max().unwrap_or(0);
            return CategoryLabels {
                size,
                lines: groups.iter().map(|g| vec![g.clone()]).collect(),
                vertical: false,
                stride: 1,
                height: tick + h + s.px(4.0),
            };
        }
    }
    for &size in &sizes {
        let width = |t: &str| measure(t, size).0;
        let lines: Option<Vec<Vec<String>>> = groups
            .iter()
            .map(|g| {
                if width(g) <= avail {
                    Some(vec![g.clone()])
                } else {
                    wrap_in_two(g, &width)
                        .filter(|(a, b)| width(a) <= avail && width(b) <= avail)
                        .map(|(a, b)| vec![a, b])
                }
            })
            .collect();
        if let Some(lines) = lines {
            let h = groups.iter().map(|g| measure(g, size).1).max().unwrap_or(0);
            let line_h = (f64::from(h) * 1.2).ceil() as u32;
            return CategoryLabels {
                size,
                lines,
                vertical: false,
                stride: 1,
                height: tick + 2 * line_h + s.px(4.0),
            };
        }
    }
    // Vertical: the text height has to fit the slot.
    let size = (12.0 * s.0).min(slot * 0.9 * 1.24).max(8.0);
    let width = |t: &str| measure(t, size).0;
    let lines: Vec<Vec<String>> = groups
        .iter()
        .map(|g| vec![truncate_to(g, max_vertical, &width)])
        .collect();
    let text_h = f64::from(measure("Hg", size).1.max(1));
    let stride = ((text_h * 1.1) / slot.max(1e-9)).ceil().max(1.0) as usize;
    let longest = lines.iter().map(|l| width(&l[0])).max().unwrap_or(0);
    CategoryLabels {
        size,
        lines,
        vertical: true,
        stride,
        height: tick + longest + s.px(4.0),
    }
}

fn draw_error_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ErrorBarChart,
    y: (f64, f64),
) -> Result<(), String> {
    if !ensure_font() {
        return Err("the embedded DejaVu Sans font could not be loaded".to_string());
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (width, height) = root.dim_in_pixel();
    let s = Scale(scale_for(width, height));

    let entries: Vec<LegendEntry> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, series)| !series.label.is_empty())
        .map(|(index, series)| LegendEntry {
            index,
            whisker: true,
            label: &series.label,
        })
        .collect();
    let body = frame_with_legend(root, &chart.title, &entries, s).map_err(err)?;

    // Category label layout, from the width each group will get.
    let n = chart.groups.len().max(1);
    let y_area = s.px(68.0);
    let (body_w, body_h) = body.dim_in_pixel();
    let plot_w = body_w.saturating_sub(y_area).max(1);
    let slot = f64::from(plot_w) / n as f64;
    let measure = |t: &str, size: f64| {
        body.estimate_text_size(t, &(FONT_FAMILY, size).into_font().into())
            .unwrap_or((0, 0))
    };
    let cats = layout_categories(
        &chart.groups,
        slot,
        (f64::from(body_h) * 0.4) as u32,
        s,
        &measure,
    );

    let mut ctx = ChartBuilder::on(&body)
        .x_label_area_size(cats.height)
        .y_label_area_size(y_area)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, y.0..y.1)
        .map_err(err)?;
    let y_ticks = tick_formatter(y);
    let mut mesh = ctx.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(0)
        .y_desc(chart.y_label.as_str())
        .y_labels(TICKS)
        .max_light_lines(4)
        .label_style(s.font(14.0))
        .axis_desc_style(s.font(16.0))
        .bold_line_style(RGBColor(0xd0, 0xd0, 0xd0).stroke_width(1))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0).stroke_width(1))
        .axis_style(RGBColor(0x40, 0x40, 0x40).stroke_width(1));
    if let Some(f) = &y_ticks {
        mesh.y_label_formatter(f);
    }
    mesh.draw().map_err(err)?;

    let (px_range, py_range) = ctx.plotting_area().get_pixel_range();
    let bottom = py_range.end;
    // Light separators between groups.
    let sep = RGBColor(0xe4, 0xe4, 0xe4).stroke_width(1);
    for i in 1..n {
        let (x, _) = ctx.backend_coord(&(i as f64 - 0.5, y.0));
        root.draw(&PathElement::new(
            vec![(x, py_range.start), (x, bottom - 1)],
            sep,
        ))
        .map_err(err)?;
    }

    // Markers and whiskers; series side by side within 80 % of a slot.
    let k = chart.series.len().max(1);
    let member = 0.8 / k as f64;
    let member_px = slot * member;
    let cap = (member_px * 0.3).min(f64::from(s.px(6.0))).max(1.0) as i32;
    let r = (member_px * 0.3).min(f64::from(s.px(4.5))).max(2.0) as i32;
    let stroke = s.px(1.5);
    for (j, series) in chart.series.iter().enumerate() {
        let (color, shape) = series_style(j);
        let line = color.stroke_width(stroke);
        let offset = (j as f64 + 0.5) * member - 0.4;
        for (i, value) in series.values.iter().enumerate() {
            let Some((mean, lo, hi)) = value.and_then(whisker) else {
                continue;
            };
            let x = i as f64 + offset;
            let (px, p_mean) = ctx.backend_coord(&(x, mean));
            let (_, p_lo) = ctx.backend_coord(&(x, lo));
            let (_, p_hi) = ctx.backend_coord(&(x, hi));
            if p_lo != p_hi {
                root.draw(&PathElement::new(vec![(px, p_lo), (px, p_hi)], line))
                    .map_err(err)?;
                for p in [p_lo, p_hi] {
                    root.draw(&PathElement::new(vec![(px - cap, p), (px + cap, p)], line))
                        .map_err(err)?;
                }
            }
            draw_marker(root, (px, p_mean), r, color, shape).map_err(err)?;
        }
    }

    // Category ticks and labels.
    let axis = RGBColor(0x40, 0x40, 0x40).stroke_width(1);
    let tick_len = s.pxi(5.0);
    let label_top = bottom + s.pxi(10.0);
    let font = TextStyle::from((FONT_FAMILY, cats.size).into_font()).color(&TEXT_GREY);
    for (i, lines) in cats.lines.iter().enumerate() {
        let (x, _) = ctx.backend_coord(&(i as f64, y.0));
        root.draw(&PathElement::new(
            vec![(x, bottom), (x, bottom + tick_len)],
            axis,
        ))
        .map_err(err)?;
        if i % cats.stride != 0 {
            continue;
        }
        if cats.vertical {
            let style = font
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(lines[0].as_str(), (x, label_top), style))
                .map_err(err)?;
        } else {
            let style = font.pos(Pos::new(HPos::Center, VPos::Top));
            let line_h = (f64::from(measure("Hg", cats.size).1) * 1.2).ceil() as i32;
            for (l, text) in lines.iter().enumerate() {
                root.draw(&Text::new(
                    text.as_str(),
                    (x, label_top + l as i32 * line_h),
                    style.clone(),
                ))
                .map_err(err)?;
            }
        }
    }
    let _ = px_range;
    Ok(())
}

impl ScatterChart {
    /// Validates the points and returns the `(x, y)` axis ranges.
    fn ranges(&self, path: &Path) -> Result<[(f64, f64); 2], PlotError> {
        let (mut x_lo, mut x_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in &self.points {
            if p.series >= self.series_names.len() {
                return Err(PlotError::UnknownSeries {
                    path: path.to_path_buf(),
                    label: p.label.clone(),
                    series: p.series,
                    count: self.series_names.len(),
                });
            }
            if p.x.is_finite() && p.y.is_finite() {
                x_lo = x_lo.min(p.x);
                x_hi = x_hi.max(p.x);
                y_lo = y_lo.min(p.y);
                y_hi = y_hi.max(p.y);
            }
        }
        let x = padded_range(x_lo, x_hi, 0.06);
        let y = padded_range(y_lo, y_hi, 0.08);
        if !(range_ok(x) && range_ok(y)) {
            return Err(PlotError::RangeOverflow {
                path: path.to_path_buf(),
            });
        }
        Ok([x, y])
    }
}

impl Chart for ScatterChart {
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let (width, height) = root.dim_in_pixel();
        check_size(path, width, height)?;
        let [x, y] = self.ranges(path)?;
        draw_scatter(root, self, x, y).map_err(render_error(path))
    }
}

/// A pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PixelBox {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl PixelBox {
    fn overlap(&self, o: &PixelBox) -> i64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0);
        i64::from(w) * i64::from(h)
    }

    fn area(&self) -> i64 {
        i64::from(self.x1 - self.x0) * i64::from(self.y1 - self.y0)
    }
}

/// Places a `(width, height)` label next to each point (pixel coordinates)
/// and returns the top-left corner of each. Tries, in order, right, upper
/// right, lower right, left, upper left, lower left, above and below the
/// marker (radius `r`, gap `gap`), and takes the first position with the
/// least overlap with markers and earlier labels, counting any part outside
/// `bounds` as a heavy overlap. Deterministic.
fn place_labels(
    points: &[(i32, i32)],
    sizes: &[(u32, u32)],
    r: i32,
    gap: i32,
    bounds: PixelBox,
) -> Vec<(i32, i32)> {
    let markers: Vec<PixelBox> = points
        .iter()
        .map(|&(x, y)| PixelBox {
            x0: x - r,
            y0: y - r,
            x1: x + r + 1,
            y1: y + r + 1,
        })
        .collect();
    let mut placed: Vec<PixelBox> = Vec::with_capacity(points.len());
    let mut corners = Vec::with_capacity(points.len());
    for (i, (&(x, y), &(w, h))) in points.iter().zip(sizes).enumerate() {
        let (w, h) = (w as i32, h as i32);
        let d = r + gap;
        let diag = (f64::from(d) * 0.75).round() as i32;
        let candidates = [
            (x + d, y - h / 2),
            (x + diag, y - diag - h),
            (x + diag, y + diag),
            (x - d - w, y - h / 2),
            (x - diag - w, y - diag - h),
            (x - diag - w, y + diag),
            (x - w / 2, y - d - h),
            (x - w / 2, y + d),
        ];
        let cost = |&(cx, cy): &(i32, i32)| {
            let b = PixelBox {
                x0: cx,
                y0: cy,
                x1: cx + w,
                y1: cy + h,
            };
            let outside = b.area() - b.overlap(&bounds);
            let hidden: i64 = markers
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, m)| b.overlap(m))
                .chain(placed.iter().map(|p| b.overlap(p)))
                .sum();
            outside * 100 + hidden
        };
        let (mut cx, mut cy) = candidates
            .iter()
            .enumerate()
            .min_by_key(|(k, c)| (cost(c), *k))
            .map(|(_, c)| *c)
            .unwrap_or((x, y));
        // Keep the label on the image even when nothing fits.
        cx = cx.min(bounds.x1 - w).max(bounds.x0);
        cy = cy.min(bounds.y1 - h).max(bounds.y0);
        placed.push(PixelBox {
            x0: cx,
            y0: cy,
            x1: cx + w,
            y1: cy + h,
        });
        corners.push((cx, cy));
    }
    corners
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ScatterChart,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<(), String> {
    if !ensure_font() {
        return Err("the embedded DejaVu Sans font could not be loaded".to_string());
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (width, height) = root.dim_in_pixel();
    let s = Scale(scale_for(width, height));

    let entries: Vec<LegendEntry> = chart
        .series_names
        .iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .map(|(index, name)| LegendEntry {
            index,
            whisker: false,
            label: name,
        })
        .collect();
    let body = frame_with_legend(root, &chart.title, &entries, s).map_err(err)?;

    let mut ctx = ChartBuilder::on(&body)
        .x_label_area_size(s.px(48.0))
        .y_label_area_size(s.px(68.0))
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(err)?;
    let x_ticks = tick_formatter(x);
    let y_ticks = tick_formatter(y);
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(TICKS)
        .y_labels(TICKS)
        .max_light_lines(4)
        .label_style(s.font(14.0))
        .axis_desc_style(s.font(16.0))
        .bold_line_style(RGBColor(0xd0, 0xd0, 0xd0).stroke_width(1))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0).stroke_width(1))
        .axis_style(RGBColor(0x40, 0x40, 0x40).stroke_width(1));
    if let Some(f) = &x_ticks {
        mesh.x_label_formatter(f);
    }
    if let Some(f) = &y_ticks {
        mesh.y_label_formatter(f);
    }
    mesh.draw().map_err(err)?;

    let shown: Vec<&ScatterPoint> = chart
        .points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let pixels: Vec<(i32, i32)> = shown
        .iter()
        .map(|p| ctx.backend_coord(&(p.x, p.y)))
        .collect();
    let r = s.pxi(5.0);
    for (p, &at) in shown.iter().zip(&pixels) {
        let (color, shape) = series_style(p.series);
        draw_marker(root, at, r, color, shape).map_err(err)?;
    }

    let font = s.font(12.0).color(&TEXT_GREY);
    let sizes: Vec<(u32, u32)> = shown
        .iter()
        .map(|p| {
            if p.label.is_empty() {
                Ok((0, 0))
            } else {
                root.estimate_text_size(&p.label, &font)
            }
        })
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let (px_range, py_range) = ctx.plotting_area().get_pixel_range();
    let bounds = PixelBox {
        x0: px_range.start,
        y0: py_range.start,
        x1: px_range.end,
        y1: py_range.end,
    };
    let corners = place_labels(&pixels, &sizes, r, s.pxi(3.0), bounds);
    let style = font.pos(Pos::new(HPos::Left, VPos::Top));
    for (p, &corner) in shown.iter().zip(&corners) {
        if !p.label.is_empty() {
            root.draw(&Text::new(p.label.as_str(), corner, style.clone()))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(label: &str, n: usize, f: impl Fn(f64) -> f64) -> Series {
        Series {
            label: label.to_string(),
            points: (0..n).map(|i| (i as f64, f(i as f64))).collect(),
        }
    }

    fn sample_series() -> Vec<Series> {
        vec![
            curve("FedAvg", 30, |x| 0.95 - 0.85 * (-x / 6.0).exp()),
            curve("Synaptic σ=0.1", 12, |x| 0.3 + 0.04 * x),
        ]
    }

    fn chart(series: &[Series]) -> LineChart<'_> {
        LineChart {
            title: "Test accuracy per round",
            x_label: "round",
            y_label: "accuracy",
            series,
            y_range: Some((0.0, 1.0)),
        }
    }

    #[test]
    fn png_is_valid_and_has_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let series = sample_series();
        write_png(&chart(&series), &path, 640, 400).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 400));
        let first = *img.get_pixel(0, 0);
        assert!(img.pixels().any(|p| *p != first), "image is one colour");
        // The first palette colour (the first series) is actually drawn.
        let [r, g, b] = [PALETTE[0].0, PALETTE[0].1, PALETTE[0].2];
        assert!(img.pixels().any(|p| p.0 == [r, g, b]));
    }

    #[test]
    fn svg_contains_title_labels_and_series_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let series = vec![
            curve("FedAvg", 5, |x| x / 5.0),
            curve("a <b> & c", 5, |x| x / 10.0),
        ];
        write_svg(&chart(&series), &path, 640, 400).unwrap();

        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["Test accuracy per round", "round", "accuracy", "FedAvg"] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("a &lt;b&gt; &amp; c"), "label not escaped");
    }

    #[test]
    fn same_chart_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let series = sample_series();
        let chart = chart(&series);
        type Writer<'a> = fn(&LineChart<'a>, &Path, u32, u32) -> Result<(), PlotError>;
        let writers: [(&str, Writer); 2] = [("png", write_png), ("svg", write_svg)];
        for (ext, write) in writers {
            let a = dir.path().join(format!("a.{ext}"));
            let b = dir.path().join(format!("b.{ext}"));
            write(&chart, &a, 500, 300).unwrap();
            write(&chart, &b, 500, 300).unwrap();
            let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
            assert!(!a.is_empty());
            assert!(a == b, "{ext} output differs between runs");
        }
    }

    /// Asserts that both writers reject the chart, that the message names
    /// the path, and that no file is left behind.
    fn rejects(chart: &LineChart, check: impl Fn(&PlotError) -> bool) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["bad.png", "bad.svg"] {
            let path = dir.path().join(name);
            let err = if name.ends_with("png") {
                write_png(chart, &path, 400, 300)
            } else {
                write_svg(chart, &path, 400, 300)
            }
            .unwrap_err();
            assert!(check(&err), "unexpected error: {err:?}");
            assert!(
                err.to_string().contains(name),
                "{err} does not name the path"
            );
            assert!(!path.exists(), "a file was written despite the error");
        }
    }

    #[test]
    fn no_series_is_an_error() {
        rejects(&chart(&[]), |e| matches!(e, PlotError::NoSeries { .. }));
    }

    #[test]
    fn empty_series_is_an_error() {
        let series = vec![curve("ok", 3, |x| x), curve("hollow", 0, |x| x)];
        rejects(
            &chart(&series),
            |e| matches!(e, PlotError::EmptySeries { label, .. } if label == "hollow"),
        );
    }

    #[test]
    fn non_finite_values_are_an_error() {
        for bad in [
            (1.0, f64::NAN),
            (f64::INFINITY, 0.5),
            (2.0, f64::NEG_INFINITY),
        ] {
            let mut s = curve("loss", 4, |x| x / 4.0);
            s.points[2] = bad;
            rejects(
                &chart(std::slice::from_ref(&s)),
                |e| matches!(e, PlotError::NonFinite { label, index: 2, .. } if label == "loss"),
            );
        }
    }

    #[test]
    fn bad_y_range_and_size_are_errors() {
        let series = sample_series();
        for range in [
            (1.0, 1.0),
            (1.0, 0.0),
            (0.0, f64::NAN),
            (f64::NEG_INFINITY, 1.0),
        ] {
            let c = LineChart {
                y_range: Some(range),
                ..chart(&series)
            };
            rejects(&c, |e| matches!(e, PlotError::InvalidYRange { .. }));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.png");
        for (w, h) in [
            (0, 0),
            (MIN_WIDTH - 1, 300),
            (400, MIN_HEIGHT - 1),
            (MAX_SIDE + 1, 300),
        ] {
            let err = write_png(&chart(&series), &path, w, h).unwrap_err();
            assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
        }
        let huge = vec![Series {
            label: "huge".into(),
            points: vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
        }];
        let c = LineChart {
            y_range: None,
            ..chart(&huge)
        };
        rejects(&c, |e| matches!(e, PlotError::RangeOverflow { .. }));
    }

    #[test]
    fn unwritable_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("chart.png");
        let series = sample_series();
        let err = write_png(&chart(&series), &path, 400, 300).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing-dir"));
    }

    #[test]
    fn degenerate_and_out_of_range_data_still_render() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            vec![curve("one point", 1, |_| 0.5)],
            vec![curve("flat", 10, |_| 0.0)],
            vec![curve("", 3, |x| x)], // unlabelled: no legend
            vec![curve("above the fixed range", 5, |x| 2.0 + x)],
            vec![curve("crosses the range", 5, |x| x - 1.5)],
        ];
        for (i, series) in cases.iter().enumerate() {
            for y_range in [None, Some((0.0, 1.0))] {
                let c = LineChart {
                    y_range,
                    ..chart(series)
                };
                write_png(&c, &dir.path().join(format!("{i}.png")), 300, 200).unwrap();
                write_svg(&c, &dir.path().join(format!("{i}.svg")), 300, 200).unwrap();
            }
        }
        // More series than palette colours.
        let many: Vec<Series> = (0..PALETTE.len() + 3)
            .map(|k| curve(&format!("s{k}"), 50, move |x| x * k as f64))
            .collect();
        write_png(&chart(&many), &dir.path().join("many.png"), 800, 600).unwrap();
    }

    #[test]
    fn clipping_cuts_segments_at_the_bounds() {
        let pts = [(0.0, -0.5), (1.0, 0.5), (2.0, 1.5), (3.0, 0.5)];
        let runs = clip_to_y_range(&pts, 0.0, 1.0);
        assert_eq!(
            runs,
            vec![
                vec![(0.5, 0.0), (1.0, 0.5), (1.5, 1.0)],
                vec![(2.5, 1.0), (3.0, 0.5)]
            ]
        );
        assert!(clip_to_y_range(&[(0.0, 2.0), (1.0, 3.0)], 0.0, 1.0).is_empty());
        assert_eq!(
            clip_to_y_range(&[(0.0, 0.5)], 0.0, 1.0),
            vec![vec![(0.0, 0.5)]]
        );
        assert!(clip_to_y_range(&[(0.0, 5.0)], 0.0, 1.0).is_empty());
    }

    #[test]
    fn legend_avoids_the_data() {
        let rising = [curve("acc", 20, |x| x / 19.0)];
        let falling = [curve("loss", 20, |x| 1.0 - x / 19.0)];
        let r = ((0.0, 19.0), (0.0, 1.0));
        assert_eq!(legend_corner(&rising, r.0, r.1), Corner::LowerRight);
        assert_eq!(legend_corner(&falling, r.0, r.1), Corner::UpperRight);
    }

    #[test]
    fn tick_labels_use_consistent_decimals() {
        let f = tick_formatter((0.0, 29.0)).unwrap();
        assert_eq!((f(&5.0), f(&10.0)), ("5".to_string(), "10".to_string()));
        let f = tick_formatter((0.0, 1.0)).unwrap();
        assert_eq!(
            (f(&0.0), f(&0.5), f(&1.0)),
            ("0.0".into(), "0.5".into(), "1.0".into())
        );
        assert_eq!(f(&-1e-17), "0.0");
    }

    #[test]
    fn embedded_font_loads() {
        assert!(ensure_font());
    }
    // ----- error-bar and scatter charts -----

    /// Checks a PNG file: signature, size, more than one colour, and that
    /// every colour in `colors` is drawn.
    fn check_png(path: &Path, width: u32, height: u32, colors: &[RGBColor]) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (width, height));
        let first = *img.get_pixel(0, 0);
        assert!(img.pixels().any(|p| *p != first), "image is one colour");
        for c in colors {
            assert!(
                img.pixels().any(|p| p.0 == [c.0, c.1, c.2]),
                "colour {c:?} is not drawn"
            );
        }
    }

    /// The trimmed contents of every `<text>` element of an SVG document.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    fn psnr_chart() -> ErrorBarChart {
        ErrorBarChart {
            title: "Reconstruction PSNR by method set (95 % CI)".into(),
            y_label: "PSNR [dB]".into(),
            groups: ["none", "synaptic", "synaptic+dropout", "dp σ=0.1"]
                .map(String::from)
                .to_vec(),
            series: vec![
                BarSeries {
                    label: "mlp untrained".into(),
                    values: vec![
                        Some((31.2, 29.8, 32.5)),
                        Some((18.4, 16.9, 20.0)),
                        Some((14.1, 13.0, 15.3)),
                        Some((11.0, 10.2, 11.9)),
                    ],
                },
                BarSeries {
                    label: "mlp trained".into(),
                    values: vec![
                        Some((27.5, 25.0, 30.1)),
                        None,
                        Some((13.2, 12.5, 14.4)),
                        Some((10.1, 9.0, 11.5)),
                    ],
                },
                BarSeries {
                    label: "cnn untrained".into(),
                    values: vec![
                        Some((24.0, 22.2, 25.7)),
                        Some((16.0, 15.1, 17.2)),
                        Some((12.7, 11.1, 14.0)),
                        Some((9.8, 9.1, 10.4)),
                    ],
                },
            ],
        }
    }

    fn privacy_utility_chart() -> ScatterChart {
        let p = |label: &str, x: f64, y: f64, series: usize| ScatterPoint {
            label: label.into(),
            x,
            y,
            series,
        };
        ScatterChart {
            title: "Privacy–utility trade-off".into(),
            x_label: "test accuracy [%]".into(),
            y_label: "reconstruction PSNR [dB]".into(),
            points: vec![
                p("none", 97.9, 31.2, 0),
                p("synaptic", 97.1, 18.4, 0),
                p("synaptic+dropout", 96.4, 14.1, 0),
                p("dp σ=0.1", 91.5, 11.0, 1),
                p("dp σ=0.01", 96.8, 19.5, 1),
                p("prune 90%", 95.2, 17.9, 2),
                p("prune 50%", 97.4, 25.0, 2),
            ],
            series_names: vec![
                "synaptic".into(),
                "differential privacy".into(),
                "pruning".into(),
            ],
        }
    }

    #[test]
    fn error_bar_chart_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let chart = psnr_chart();
        let png = dir.path().join("psnr.png");
        write_png(&chart, &png, 800, 500).unwrap();
        check_png(&png, 800, 500, &PALETTE[..3]);

        let svg_path = dir.path().join("psnr.svg");
        write_svg(&chart, &svg_path, 800, 500).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "Reconstruction PSNR",
            "PSNR [dB]",
            "mlp untrained",
            "cnn untrained",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        let texts = svg_texts(&svg);
        for group in &chart.groups {
            assert!(
                texts.contains(group),
                "SVG lacks group {group:?} in {texts:?}"
            );
        }
    }

    #[test]
    fn scatter_chart_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let chart = privacy_utility_chart();
        let png = dir.path().join("tradeoff.png");
        write_png(&chart, &png, 800, 500).unwrap();
        check_png(&png, 800, 500, &PALETTE[..3]);

        let svg_path = dir.path().join("tradeoff.svg");
        write_svg(&chart, &svg_path, 800, 500).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        for text in [
            "Privacy–utility",
            "test accuracy [%]",
            "differential privacy",
            "pruning",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        let texts = svg_texts(&svg);
        for p in &chart.points {
            assert!(
                texts.contains(&p.label),
                "SVG lacks {:?} in {texts:?}",
                p.label
            );
        }
    }

    #[test]
    fn new_charts_give_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (bars, scatter) = (psnr_chart(), privacy_utility_chart());
        for name in ["a", "b"] {
            write_png(
                &bars,
                &dir.path().join(format!("{name}-bars.png")),
                600,
                400,
            )
            .unwrap();
            write_svg(
                &bars,
                &dir.path().join(format!("{name}-bars.svg")),
                600,
                400,
            )
            .unwrap();
            write_png(
                &scatter,
                &dir.path().join(format!("{name}-sc.png")),
                600,
                400,
            )
            .unwrap();
            write_svg(
                &scatter,
                &dir.path().join(format!("{name}-sc.svg")),
                600,
                400,
            )
            .unwrap();
        }
        for file in ["bars.png", "bars.svg", "sc.png", "sc.svg"] {
            let a = std::fs::read(dir.path().join(format!("a-{file}"))).unwrap();
            let b = std::fs::read(dir.path().join(format!("b-{file}"))).unwrap();
            assert!(a == b, "{file} differs between runs");
        }
    }

    #[test]
    fn degenerate_error_bar_charts_render() {
        let dir = tempfile::tempdir().unwrap();
        let one = |values: Vec<Option<(f64, f64, f64)>>| BarSeries {
            label: "s".into(),
            values,
        };
        let base = psnr_chart();
        let cases = vec![
            // One group, one value.
            ErrorBarChart {
                groups: vec!["only".into()],
                series: vec![one(vec![Some((3.0, 2.0, 4.0))])],
                ..base.clone()
            },
            // All values equal, no whiskers.
            ErrorBarChart {
                series: vec![one(vec![Some((5.0, 5.0, 5.0)); 4])],
                ..base.clone()
            },
            // All zero.
            ErrorBarChart {
                series: vec![one(vec![Some((0.0, 0.0, 0.0)); 4])],
                ..base.clone()
            },
            // NaN and infinite entries, inverted and non-finite bounds.
            ErrorBarChart {
                series: vec![one(vec![
                    Some((f64::NAN, 1.0, 2.0)),
                    Some((f64::INFINITY, 1.0, 2.0)),
                    Some((2.0, f64::NAN, f64::NEG_INFINITY)),
                    Some((1.5, 3.0, 0.5)),
                ])],
                ..base.clone()
            },
            // Nothing finite at all.
            ErrorBarChart {
                series: vec![one(vec![Some((f64::NAN, f64::NAN, f64::NAN)), None])],
                ..base.clone()
            },
            // No series, an empty series, no groups, empty labels and title.
            ErrorBarChart {
                series: vec![],
                ..base.clone()
            },
            ErrorBarChart {
                series: vec![one(vec![])],
                ..base.clone()
            },
            ErrorBarChart {
                title: String::new(),
                y_label: String::new(),
                groups: vec![],
                series: vec![BarSeries::default()],
            },
            // Many groups with long names (vertical labels) and many series.
            ErrorBarChart {
                groups: (0..40)
                    .map(|i| format!("method set number {i} with a long name"))
                    .collect(),
                series: (0..12)
                    .map(|j| BarSeries {
                        label: format!("series {j}"),
                        values: (0..40)
                            .map(|i| {
                                let m = (i * j) as f64;
                                Some((m, m - 1.0, m + 1.0))
                            })
                            .collect(),
                    })
                    .collect(),
                ..base.clone()
            },
        ];
        for (i, chart) in cases.iter().enumerate() {
            let png = dir.path().join(format!("{i}.png"));
            write_png(chart, &png, 400, 300).unwrap();
            check_png(&png, 400, 300, &[]);
            write_svg(chart, &dir.path().join(format!("{i}.svg")), 400, 300).unwrap();
        }
    }

    #[test]
    fn degenerate_scatter_charts_render() {
        let dir = tempfile::tempdir().unwrap();
        let base = privacy_utility_chart();
        let at = |x: f64, y: f64| ScatterPoint {
            label: format!("({x}, {y})"),
            x,
            y,
            series: 0,
        };
        let cases = [
            ScatterChart {
                points: vec![],
                ..base.clone()
            },
            ScatterChart {
                points: vec![],
                series_names: vec![],
                title: String::new(),
                ..base.clone()
            },
            ScatterChart {
                points: vec![at(1.0, 1.0)],
                ..base.clone()
            },
            ScatterChart {
                points: vec![at(2.0, 3.0); 5],
                ..base.clone()
            },
            ScatterChart {
                points: vec![at(f64::NAN, 1.0), at(1.0, f64::INFINITY), at(0.0, 0.0)],
                ..base.clone()
            },
            ScatterChart {
                points: vec![at(f64::NAN, f64::NAN)],
                ..base.clone()
            },
            ScatterChart {
                points: (0..60)
                    .map(|i| at(f64::from(i % 7), f64::from(i % 5)))
                    .collect(),
                ..base.clone()
            },
        ];
        for (i, chart) in cases.iter().enumerate() {
            let png = dir.path().join(format!("{i}.png"));
            write_png(chart, &png, 400, 300).unwrap();
            check_png(&png, 400, 300, &[]);
            write_svg(chart, &dir.path().join(format!("{i}.svg")), 400, 300).unwrap();
        }
    }

    /// Like [`rejects`], for any chart type.
    fn rejects_chart<C: Chart>(chart: &C, check: impl Fn(&PlotError) -> bool) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["bad.png", "bad.svg"] {
            let path = dir.path().join(name);
            let err = if name.ends_with("png") {
                write_png(chart, &path, 400, 300)
            } else {
                write_svg(chart, &path, 400, 300)
            }
            .unwrap_err();
            assert!(check(&err), "unexpected error: {err:?}");
            assert!(
                err.to_string().contains(name),
                "{err} does not name the path"
            );
            assert!(!path.exists(), "a file was written despite the error");
        }
    }

    #[test]
    fn new_charts_reject_inconsistent_data() {
        let mut bars = psnr_chart();
        bars.series[1].values.push(Some((1.0, 0.0, 2.0)));
        rejects_chart(
            &bars,
            |e| matches!(e, PlotError::TooManyValues { label, values: 5, groups: 4, .. } if label == "mlp trained"),
        );
        let mut huge = psnr_chart();
        huge.series[0].values[0] = Some((0.0, -f64::MAX, f64::MAX));
        rejects_chart(&huge, |e| matches!(e, PlotError::RangeOverflow { .. }));

        let mut scatter = privacy_utility_chart();
        scatter.points[2].series = 3;
        rejects_chart(
            &scatter,
            |e| matches!(e, PlotError::UnknownSeries { series: 3, count: 3, label, .. } if label == "synaptic+dropout"),
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.png");
        let err = write_png(&psnr_chart(), &path, 10, 10).unwrap_err();
        assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
        let err = write_svg(&privacy_utility_chart(), &path, 400, MAX_SIDE + 1).unwrap_err();
        assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
    }

    #[test]
    fn whiskers_are_sanitised() {
        assert_eq!(whisker((2.0, 1.0, 3.0)), Some((2.0, 1.0, 3.0)));
        assert_eq!(whisker((2.0, 3.0, 1.0)), Some((2.0, 1.0, 3.0)));
        assert_eq!(whisker((2.0, f64::NAN, 3.0)), Some((2.0, 2.0, 3.0)));
        assert_eq!(whisker((5.0, 1.0, 3.0)), Some((5.0, 1.0, 5.0)));
        assert_eq!(whisker((f64::NAN, 1.0, 3.0)), None);
        assert_eq!(whisker((f64::NEG_INFINITY, 1.0, 3.0)), None);
    }

    #[test]
    fn category_labels_shrink_wrap_then_turn() {
        // Fake metrics: 10 px per character at size 14, proportional.
        let measure = |t: &str, size: f64| {
            let w = t.chars().count() as f64 * size * 10.0 / 14.0;
            (w as u32, (size / 1.24) as u32)
        };
        let s = Scale(1.0);
        let groups = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let short = layout_categories(&groups(&["a", "bb"]), 100.0, 200, s, &measure);
        assert_eq!((short.size, short.vertical, short.stride), (14.0, false, 1));
        // 12 characters: 120 px at 14, 86 px at 10 — fits a 100 px slot only shrunk.
        let shrunk = layout_categories(&groups(&["abcdefghijkl"]), 100.0, 200, s, &measure);
        assert!(shrunk.size < 14.0 && !shrunk.vertical);
        let wrapped = layout_categories(
            &groups(&["synaptic+dropout+noise"]),
            100.0,
            200,
            s,
            &measure,
        );
        assert!(!wrapped.vertical);
        assert_eq!(wrapped.lines[0].len(), 2);
        assert_eq!(wrapped.lines[0].concat(), "synaptic+dropout+noise");
        let vertical =
            layout_categories(&groups(&["averyveryverylongname"]), 50.0, 60, s, &measure);
        assert!(vertical.vertical);
        assert!(vertical.lines[0][0].ends_with('…'));
        assert!(measure(&vertical.lines[0][0], vertical.size).0 <= 60);
        let dense = layout_categories(
            &groups(&vec!["xxxxxxxxxxxxxxxxxxx"; 100]),
            3.0,
            60,
            s,
            &measure,
        );
        assert!(dense.vertical && dense.stride > 1);
    }

    #[test]
    fn labels_avoid_each_other_and_stay_inside() {
        let bounds = PixelBox {
            x0: 0,
            y0: 0,
            x1: 400,
            y1: 300,
        };
        // Two points close together: their labels must not overlap.
        let points = [(100, 100), (100, 112)];
        let sizes = [(60, 12), (60, 12)];
        let at = place_labels(&points, &sizes, 5, 3, bounds);
        let boxes: Vec<PixelBox> = at
            .iter()
            .zip(&sizes)
            .map(|(&(x, y), &(w, h))| PixelBox {
                x0: x,
                y0: y,
                x1: x + w as i32,
                y1: y + h as i32,
            })
            .collect();
        assert_eq!(boxes[0].overlap(&boxes[1]), 0, "{boxes:?}");
        // A point at the right edge gets its label on the left.
        let at = place_labels(&[(395, 150)], &[(80, 12)], 5, 3, bounds);
        assert!(at[0].0 + 80 <= 400, "{at:?}");
        assert!(at[0].0 + 80 <= 395);
    }
}
