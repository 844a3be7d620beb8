//! Where the annotation of each point of a scatter chart goes: next to its marker, on the side
//! where it hides the fewest other markers and labels, and inside the plot. Pure pixel
//! geometry, so it is tested without drawing.

/// A pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelBox {
    pub(crate) x0: i32,
    pub(crate) y0: i32,
    pub(crate) x1: i32,
    pub(crate) y1: i32,
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
pub(crate) fn place_labels(
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

#[cfg(test)]
mod tests {
    use super::*;

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
