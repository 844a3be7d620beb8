//! The category labels under an error-bar chart. Method-set names are long and many, so they
//! are set horizontally if they fit side by side, else shrunk, else wrapped in two lines, else
//! turned vertical (truncated, and thinned out when even vertical labels overlap); this file
//! decides which, from measured text sizes.

use crate::style::Scale;

/// How the category labels under an error-bar chart are set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CategoryLabels {
    /// Font size (pixels).
    pub(crate) size: f64,
    /// Each label's lines (one or two), or for vertical labels the one line.
    pub(crate) lines: Vec<Vec<String>>,
    pub(crate) vertical: bool,
    /// Only every `stride`-th label is drawn (vertical labels too dense).
    pub(crate) stride: usize,
    /// Height of the label area below the plot, ticks included.
    pub(crate) height: u32,
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
pub(crate) fn truncate_to(label: &str, max: u32, width: &impl Fn(&str) -> u32) -> String {
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
pub(crate) fn layout_categories(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
