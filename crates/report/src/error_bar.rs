//! Means with confidence whiskers per category ([`ErrorBarChart`], e.g. reconstruction PSNR
//! by method set): the chart and its [`BarSeries`], how missing and non-finite values are read
//! (left out, since a comparison may lack a cell), and the drawing of markers, whiskers and
//! category ticks.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{draw_axes, padded_range, range_ok};
use crate::categories::layout_categories;
use crate::error::PlotError;
use crate::legend::frame_with_legend;
use crate::output::{check_area, render_error, Chart};
use crate::style::{draw_marker, require_font, series_style, AXIS_GREY, FONT_FAMILY, TEXT_GREY};

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
        check_area(root, path)?;
        let y = self.y_range(path)?;
        draw_error_bars(root, self, y).map_err(render_error(path))
    }
}

/// Draws the whole chart on `root` with the validated y range; errors are returned as text
/// (see [`render_error`]).
fn draw_error_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ErrorBarChart,
    y: (f64, f64),
) -> Result<(), String> {
    require_font()?;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (body, s) = frame_with_legend(
        root,
        &chart.title,
        chart.series.iter().map(|series| series.label.as_str()),
        true,
    )
    .map_err(err)?;

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
    draw_axes(&mut ctx, None, (chart.y_label.as_str(), y), s).map_err(err)?;

    let (_, py_range) = ctx.plotting_area().get_pixel_range();
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
    let axis = AXIS_GREY.stroke_width(1);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::PALETTE;
    use crate::test_support::{assert_svg_has, psnr_chart, write_and_check};

    #[test]
    fn error_bar_chart_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let chart = psnr_chart();
        let svg = write_and_check(&chart, dir.path(), "psnr", (800, 500), &PALETTE[..3]);
        let groups: Vec<&str> = chart.groups.iter().map(String::as_str).collect();
        assert_svg_has(
            &svg,
            &[
                "Reconstruction PSNR",
                "PSNR [dB]",
                "mlp untrained",
                "cnn untrained",
            ],
            &groups,
        );
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
            write_and_check(chart, dir.path(), &i.to_string(), (400, 300), &[]);
        }
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
}
