//! The look every chart shares: the embedded font, the fixed palette, marker shapes, text
//! colour and the size-dependent scale of fonts, lines and margins. Kept in one place so that
//! all chart kinds look alike and stay deterministic (nothing here depends on the machine).

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Fixed series palette (Tableau 10), cycled when there are more series.
pub(crate) const PALETTE: [RGBColor; 10] = [
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

/// Text colour of annotations and category labels.
pub(crate) const TEXT_GREY: RGBColor = RGBColor(0x30, 0x30, 0x30);
/// Colour of the axes and their ticks.
pub(crate) const AXIS_GREY: RGBColor = RGBColor(0x40, 0x40, 0x40);
/// Grid lines at labelled ticks.
pub(crate) const GRID_BOLD: RGBColor = RGBColor(0xd0, 0xd0, 0xd0);
/// Grid lines between labelled ticks.
pub(crate) const GRID_LIGHT: RGBColor = RGBColor(0xf0, 0xf0, 0xf0);

/// Family name the embedded font is registered under; it is also plotters'
/// default family, so every piece of text uses the embedded font.
pub(crate) const FONT_FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters exactly once per process.
/// Returns whether the font is available.
fn ensure_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    })
}

/// Registers the embedded font (see [`ensure_font`]); the error is a drawing error's text.
pub(crate) fn require_font() -> Result<(), String> {
    if ensure_font() {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be loaded".to_string())
    }
}

/// Size-dependent lengths and fonts: the multiplier is 1 at 500 pixels on the shorter side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale(pub(crate) f64);

impl Scale {
    /// The scale of a chart this big.
    pub(crate) fn for_size(width: u32, height: u32) -> Self {
        Scale((f64::from(width.min(height)) / 500.0).clamp(0.8, 4.0))
    }

    /// A length of `base` pixels at a 500-pixel chart, scaled to this chart.
    pub(crate) fn px(self, base: f64) -> u32 {
        (base * self.0).round().max(1.0) as u32
    }

    pub(crate) fn pxi(self, base: f64) -> i32 {
        self.px(base) as i32
    }

    pub(crate) fn font(self, base_size: f64) -> TextStyle<'static> {
        (FONT_FAMILY, base_size * self.0).into_font().into()
    }
}

/// Marker shapes, cycled together with [`PALETTE`] so that series stay
/// distinguishable in greyscale print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerShape {
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
pub(crate) fn series_style(index: usize) -> (RGBColor, MarkerShape) {
    (
        PALETTE[index % PALETTE.len()],
        MarkerShape::ALL[index % MarkerShape::ALL.len()],
    )
}

/// Draws a filled marker of radius `r` centred on the pixel `(x, y)` of
/// `area` (whose coordinates are its own pixels).
pub(crate) fn draw_marker<DB: DrawingBackend>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_loads() {
        assert!(ensure_font());
    }
}
