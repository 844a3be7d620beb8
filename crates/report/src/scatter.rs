//! Labelled scatter plots ([`ScatterChart`], e.g. reconstruction PSNR against test accuracy
//! with one point per method set or defence): the chart and its [`ScatterPoint`]s, how
//! non-finite points are read (left out), and the drawing of markers and annotations.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::annotation::{place_labels, PixelBox};
use crate::axis::{draw_axes, padded_range, range_ok};
use crate::error::PlotError;
use crate::legend::frame_with_legend;
use crate::output::{check_area, render_error, Chart};
use crate::style::{draw_marker, require_font, series_style, TEXT_GREY};

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
        check_area(root, path)?;
        let [x, y] = self.ranges(path)?;
        draw_scatter(root, self, x, y).map_err(render_error(path))
    }
}

/// Draws the whole chart on `root` with the validated axis ranges; errors are returned as
/// text (see [`render_error`]).
fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ScatterChart,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<(), String> {
    require_font()?;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (body, s) = frame_with_legend(
        root,
        &chart.title,
        chart.series_names.iter().map(String::as_str),
        false,
    )
    .map_err(err)?;

    let mut ctx = ChartBuilder::on(&body)
        .x_label_area_size(s.px(48.0))
        .y_label_area_size(s.px(68.0))
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(err)?;
    draw_axes(
        &mut ctx,
        Some((chart.x_label.as_str(), x)),
        (chart.y_label.as_str(), y),
        s,
    )
    .map_err(err)?;

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
    use crate::style::PALETTE;
    use crate::test_support::{assert_svg_has, privacy_utility_chart, write_and_check};

    #[test]
    fn scatter_chart_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let chart = privacy_utility_chart();
        let svg = write_and_check(&chart, dir.path(), "tradeoff", (800, 500), &PALETTE[..3]);
        let labels: Vec<&str> = chart.points.iter().map(|p| p.label.as_str()).collect();
        assert_svg_has(
            &svg,
            &[
                "Privacy–utility",
                "test accuracy [%]",
                "differential privacy",
                "pruning",
            ],
            &labels,
        );
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
            write_and_check(chart, dir.path(), &i.to_string(), (400, 300), &[]);
        }
    }
}
