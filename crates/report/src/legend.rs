//! Legends. A line chart's legend goes into the plot corner its curves pass through least
//! ([`legend_corner`]); error-bar and scatter charts, whose points may lie anywhere, get centred
//! legend rows between the title and the plot instead ([`frame_with_legend`]), so there the
//! legend never hides data.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::line::Series;
use crate::style::{draw_marker, series_style, Scale};

/// A corner of the plotting area (where the legend goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corner {
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

    pub(crate) fn position(self) -> SeriesLabelPosition {
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
pub(crate) fn legend_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> Corner {
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

/// One entry of a legend row: colour and marker of series `index`, whether
/// the swatch gets a whisker, and its text.
struct LegendEntry<'a> {
    index: usize,
    whisker: bool,
    label: &'a str,
}

/// The legend entries of series named `names` (see [`frame_with_legend`]).
fn legend_entries<'a>(
    names: impl IntoIterator<Item = &'a str>,
    whisker: bool,
) -> Vec<LegendEntry<'a>> {
    names
        .into_iter()
        .enumerate()
        .filter(|(_, label)| !label.is_empty())
        .map(|(index, label)| LegendEntry {
            index,
            whisker,
            label,
        })
        .collect()
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

/// The area left for the axes and plot below a title and legend, and the chart's scale.
type Framed<DB> = (DrawingArea<DB, Shift>, Scale);

/// Draws the margin, title and legend common to the error-bar and scatter charts, and returns
/// the area left for the axes and plot, with the chart's scale. The legend has an entry for
/// series `index` named `names[index]`, unless that name is empty; `whisker` gives the swatches
/// a whisker (error-bar charts).
pub(crate) fn frame_with_legend<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    names: impl IntoIterator<Item = &'a str>,
    whisker: bool,
) -> Result<Framed<DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, height) = root.dim_in_pixel();
    let s = Scale::for_size(width, height);
    let entries = &legend_entries(names, whisker);
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
        return Ok((body, s));
    }
    let (_, body_h) = body.dim_in_pixel();
    // Never let the legend take more than a third of the height.
    let legend_h = legend_h.min(body_h / 3);
    let (legend, rest) = body.split_vertically(legend_h);
    legend_rows(&legend, entries, s, true)?;
    Ok((rest, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::curve;

    #[test]
    fn legend_avoids_the_data() {
        let rising = [curve("acc", 20, |x| x / 19.0)];
        let falling = [curve("loss", 20, |x| 1.0 - x / 19.0)];
        let r = ((0.0, 19.0), (0.0, 1.0));
        assert_eq!(legend_corner(&rising, r.0, r.1), Corner::LowerRight);
        assert_eq!(legend_corner(&falling, r.0, r.1), Corner::UpperRight);
    }
}
