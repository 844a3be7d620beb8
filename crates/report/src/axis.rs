//! Axes of every chart kind: data ranges and their padding, tick labels with consistent
//! decimals, the shared look of the axes and grid, and clipping a curve to a fixed y range.
//! Kept together because they decide what part of the data is shown and how it is read off.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::style::{Scale, AXIS_GREY, GRID_BOLD, GRID_LIGHT};

/// Maximum number of labelled ticks per axis.
pub(crate) const TICKS: usize = 10;

/// Gives a zero-width range (all values equal) some width so it can be drawn.
fn widen_if_degenerate(lo: f64, hi: f64) -> (f64, f64) {
    if lo < hi {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad, hi + pad)
    }
}

/// Pads a `(lo, hi)` data range by `frac` of its width on both sides (after
/// giving an empty range some width); `(0, 1)` when there is no data.
pub(crate) fn padded_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if lo > hi {
        return (0.0, 1.0);
    }
    let (lo, hi) = widen_if_degenerate(lo, hi);
    let pad = frac * (hi - lo);
    (lo - pad, hi + pad)
}

/// Whether an axis range is drawable: finite bounds, a finite width, `lo < hi`.
pub(crate) fn range_ok((lo, hi): (f64, f64)) -> bool {
    lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && lo < hi
}

/// Splits a polyline into the pieces that lie within `lo <= y <= hi`
/// (segments crossing a bound are cut where they cross it). A lone point
/// inside the range becomes a one-point piece.
pub(crate) fn clip_to_y_range(points: &[(f64, f64)], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
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

/// A tick-label formatter for an axis spanning `range` that prints every
/// tick with the same, smallest sufficient number of decimals ("5", "10";
/// "0.0", "0.5", "1.0"). `None` (plotters' default formatting) for very large
/// or very small magnitudes.
fn tick_formatter(range: (f64, f64)) -> Option<impl Fn(&f64) -> String> {
    let ticks = RangedCoordf64::from(range.0..range.1).key_points(TICKS);
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

/// Draws the axes, their descriptions, tick labels and the grid of a chart over `f64 × f64`.
/// `x` is the x axis's description and range, or `None` for a category axis whose ticks and
/// labels the chart draws itself (no vertical grid lines, no x tick labels); `y` is the y
/// axis's description and range.
pub(crate) fn draw_axes<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x: Option<(&str, (f64, f64))>,
    (y_desc, y_range): (&str, (f64, f64)),
    s: Scale,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let x_ticks = x.and_then(|(_, range)| tick_formatter(range));
    let y_ticks = tick_formatter(y_range);
    let mut mesh = ctx.configure_mesh();
    match x {
        Some((x_desc, _)) => mesh.x_desc(x_desc).x_labels(TICKS),
        None => mesh.disable_x_mesh().x_labels(0),
    };
    mesh.y_desc(y_desc)
        .y_labels(TICKS)
        .max_light_lines(4)
        .label_style(s.font(14.0))
        .axis_desc_style(s.font(16.0))
        .bold_line_style(GRID_BOLD.stroke_width(1))
        .light_line_style(GRID_LIGHT.stroke_width(1))
        .axis_style(AXIS_GREY.stroke_width(1));
    if let Some(f) = &x_ticks {
        mesh.x_label_formatter(f);
    }
    if let Some(f) = &y_ticks {
        mesh.y_label_formatter(f);
    }
    mesh.draw()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
