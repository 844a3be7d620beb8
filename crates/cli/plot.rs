//! Line charts of learning curves (accuracy, loss, attack success … per
//! round), written as PNG or SVG.
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
//! * **Bad data is an error, not a panic.** A chart with no series, a series
//!   with no points, a NaN or infinite coordinate, an empty or inverted
//!   `y_range` or an unusable image size is reported as a [`PlotError`] that
//!   names the output path, and nothing is written.
//!
//! Points of a series are joined in the order given (sort them by x first if
//! they are not already); series with at most [`MARKER_MAX_POINTS`] points
//! also get a dot at every point so that sparse curves stay readable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

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

/// Writes the chart as PNG (width × height pixels) to `path`.
pub fn write_png(chart: &LineChart, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
    let bytes = render_png(chart, path, width, height)?;
    write_file(path, &bytes)
}

/// Writes the chart as SVG to `path`.
pub fn write_svg(chart: &LineChart, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
    let svg = render_svg(chart, path, width, height)?;
    write_file(path, svg.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    std::fs::write(path, bytes).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Renders the chart to PNG bytes; `path` is only used in error messages.
fn render_png(
    chart: &LineChart,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, PlotError> {
    let layout = Layout::new(chart, path, width, height)?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let backend = BitMapBackend::with_buffer(&mut rgb, (width, height));
        draw(backend.into_drawing_area(), chart, &layout).map_err(|message| PlotError::Render {
            path: path.to_path_buf(),
            message,
        })?;
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
fn render_svg(
    chart: &LineChart,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<String, PlotError> {
    let layout = Layout::new(chart, path, width, height)?;
    let mut svg = String::new();
    {
        let backend = SVGBackend::with_string(&mut svg, (width, height));
        draw(backend.into_drawing_area(), chart, &layout).map_err(|message| PlotError::Render {
            path: path.to_path_buf(),
            message,
        })?;
    }
    Ok(svg)
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
        let path = || path.to_path_buf();
        if !(MIN_WIDTH..=MAX_SIDE).contains(&width) || !(MIN_HEIGHT..=MAX_SIDE).contains(&height) {
            return Err(PlotError::InvalidSize {
                path: path(),
                width,
                height,
            });
        }
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
            scale: (f64::from(width.min(height)) / 500.0).clamp(0.8, 4.0),
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
    root: DrawingArea<DB, Shift>,
    chart: &LineChart,
    layout: &Layout,
) -> Result<(), String> {
    if !ensure_font() {
        return Err("the embedded DejaVu Sans font could not be loaded".to_string());
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();

    root.fill(&WHITE).map_err(err)?;
    let mut ctx = ChartBuilder::on(&root)
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
    root.present().map_err(err)?;
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
        for (ext, write) in [
            (
                "png",
                write_png as fn(&LineChart, &Path, u32, u32) -> Result<(), PlotError>,
            ),
            ("svg", write_svg),
        ] {
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
}
