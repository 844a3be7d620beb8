//! Line charts of learning curves (accuracy, loss, attack success … per round): the
//! [`LineChart`] and its [`Series`], their validation (bad data is an error here, since a
//! curve with a hole or a NaN would silently mislead), and their drawing.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::axis::{clip_to_y_range, draw_axes, padded_range, range_ok};
use crate::error::PlotError;
use crate::legend::{legend_corner, Corner};
use crate::output::{check_area, render_error, Chart};
use crate::style::{require_font, Scale, PALETTE};

/// Series with at most this many points get a marker at every point.
pub const MARKER_MAX_POINTS: usize = 40;

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

impl Chart for LineChart<'_> {
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let (width, height) = check_area(root, path)?;
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
    scale: Scale,
}

impl Layout {
    fn new(chart: &LineChart, path: &Path, width: u32, height: u32) -> Result<Self, PlotError> {
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
        // A little room left and right so edge markers are not cut in half.
        let x = padded_range(x_lo, x_hi, 0.02);
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
            None => padded_range(y_lo, y_hi, 0.05),
        };
        if !(range_ok(x) && range_ok(y)) {
            return Err(PlotError::RangeOverflow { path: path() });
        }
        Ok(Layout {
            x,
            y,
            legend: legend_corner(chart.series, x, y),
            scale: Scale::for_size(width, height),
        })
    }
}

/// Draws the whole chart on `root`; errors are returned as text because the
/// plotters error type depends on the backend.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    layout: &Layout,
) -> Result<(), String> {
    require_font()?;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let s = layout.scale;

    root.fill(&WHITE).map_err(err)?;
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, s.font(22.0))
        .margin(s.px(14.0))
        .x_label_area_size(s.px(48.0))
        .y_label_area_size(s.px(68.0))
        .build_cartesian_2d(layout.x.0..layout.x.1, layout.y.0..layout.y.1)
        .map_err(err)?;

    draw_axes(
        &mut ctx,
        Some((chart.x_label, layout.x)),
        (chart.y_label, layout.y),
        s,
    )
    .map_err(err)?;

    let stroke = s.px(2.0);
    let marker = s.px(3.5);
    let legend_len = s.pxi(24.0);
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
            .margin(s.px(12.0))
            .legend_area_size(legend_len + s.pxi(6.0))
            .label_font(s.font(14.0))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0xa0, 0xa0, 0xa0))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{MAX_SIDE, MIN_HEIGHT, MIN_WIDTH};
    use crate::test_support::{accuracy_chart, curve, rejects, sample_series};
    use crate::{write_png, write_svg};

    #[test]
    fn png_is_valid_and_has_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let series = sample_series();
        write_png(&accuracy_chart(&series), &path, 640, 400).unwrap();

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
        write_svg(&accuracy_chart(&series), &path, 640, 400).unwrap();

        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["Test accuracy per round", "round", "accuracy", "FedAvg"] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("a &lt;b&gt; &amp; c"), "label not escaped");
    }

    #[test]
    fn no_series_is_an_error() {
        rejects(&accuracy_chart(&[]), |e| {
            matches!(e, PlotError::NoSeries { .. })
        });
    }

    #[test]
    fn empty_series_is_an_error() {
        let series = vec![curve("ok", 3, |x| x), curve("hollow", 0, |x| x)];
        rejects(
            &accuracy_chart(&series),
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
                &accuracy_chart(std::slice::from_ref(&s)),
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
                ..accuracy_chart(&series)
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
            let err = write_png(&accuracy_chart(&series), &path, w, h).unwrap_err();
            assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
        }
        let huge = vec![Series {
            label: "huge".into(),
            points: vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
        }];
        let c = LineChart {
            y_range: None,
            ..accuracy_chart(&huge)
        };
        rejects(&c, |e| matches!(e, PlotError::RangeOverflow { .. }));
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
                    ..accuracy_chart(series)
                };
                write_png(&c, &dir.path().join(format!("{i}.png")), 300, 200).unwrap();
                write_svg(&c, &dir.path().join(format!("{i}.svg")), 300, 200).unwrap();
            }
        }
        // More series than palette colours.
        let many: Vec<Series> = (0..PALETTE.len() + 3)
            .map(|k| curve(&format!("s{k}"), 50, move |x| x * k as f64))
            .collect();
        write_png(
            &accuracy_chart(&many),
            &dir.path().join("many.png"),
            800,
            600,
        )
        .unwrap();
    }
}
