//! Labelled grids of equally sized images ([`ImageGrid`], e.g. an attacked batch and its
//! reconstruction under every variant, one labelled row each): checking the tiles, choosing
//! the integer upscale, placing tiles, labels and title ([`Arrangement`]), and drawing them.
//! Unlike the charts, a grid's image size follows from its content: [`ImageGrid::size`].

use std::path::Path;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::categories::truncate_to;
use crate::error::PlotError;
use crate::output::{check_area, render_error, Chart, MAX_SIDE, MIN_HEIGHT, MIN_WIDTH};
use crate::style::{require_font, FONT_FAMILY, TEXT_GREY};

/// Tiles are upscaled by the smallest integer factor that makes their longer side at least
/// this many pixels (at most 16×, and less when the grid would exceed the image).
pub const MIN_TILE_SIDE: u32 = 64;
/// Widest label column (or, in [`GridLayout::Columns`], widest label above a column) in
/// pixels; longer labels are shrunk (down to 9 px type), then cut short with "…".
pub const MAX_LABEL_WIDTH: u32 = 240;
/// Pixels between neighbouring tiles.
pub const TILE_GAP: u32 = 4;

/// Largest upscale factor.
const MAX_SCALE: u32 = 16;
/// White border around the grid.
const MARGIN: i32 = 12;
/// Space between a label and its tiles, and below the title.
const LABEL_GAP: i32 = 8;
/// Label type size in pixels, and the smallest a long label is shrunk to.
const LABEL_FONT: f64 = 15.0;
const MIN_LABEL_FONT: f64 = 9.0;
const TITLE_FONT: f64 = 18.0;
/// Titles wider than this are cut short with "…".
const MAX_TITLE_WIDTH: u32 = 1200;

/// How an [`ImageGrid`]'s rows are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GridLayout {
    /// Each row across, its label in a column left of its tiles (right-aligned, vertically
    /// centred on the row).
    #[default]
    Rows,
    /// Transposed: each row set as a column, its label centred above its tiles. Suits rows of
    /// one image each (e.g. batches of one image: the truth and every reconstruction side by
    /// side).
    Columns,
}

/// Labelled rows of equally sized RGB images on a white background, e.g. a client's batch and
/// its reconstruction under every variant. Tiles are upscaled by an integer factor with nearest
/// neighbour sampling (every source pixel becomes a square block, so the pixels stay crisp) so
/// that they are at least [`MIN_TILE_SIDE`] pixels, and separated by [`TILE_GAP`] pixels.
///
/// Write it with [`write_png`](crate::write_png) / [`write_svg`](crate::write_svg) at
/// [`ImageGrid::size`]; a larger image centres the grid, a smaller one lowers the upscale (and
/// is an error, [`PlotError::AreaTooSmall`], when even 1× does not fit). A grid without rows, a
/// row without images and tiles of different (or zero) size are errors
/// ([`PlotError::NoRows`], [`PlotError::EmptyRow`], [`PlotError::TileSize`]). Rows may hold
/// different numbers of images; an empty label leaves its row unlabelled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageGrid {
    /// Drawn centred above the grid (none when blank).
    pub title: String,
    /// The rows, top to bottom (in [`GridLayout::Columns`], the columns, left to right): a
    /// label and its images.
    pub rows: Vec<(String, Vec<RgbImage>)>,
    pub layout: GridLayout,
}

impl ImageGrid {
    /// A grid of labelled rows ([`GridLayout::Rows`]).
    pub fn new(title: impl Into<String>, rows: Vec<(String, Vec<RgbImage>)>) -> Self {
        ImageGrid {
            title: title.into(),
            rows,
            layout: GridLayout::Rows,
        }
    }

    /// A grid of labelled columns ([`GridLayout::Columns`]), each label above its images.
    pub fn columns(title: impl Into<String>, columns: Vec<(String, Vec<RgbImage>)>) -> Self {
        ImageGrid {
            title: title.into(),
            rows: columns,
            layout: GridLayout::Columns,
        }
    }

    /// The grid's natural image size in pixels (at the chosen upscale, never below
    /// [`MIN_WIDTH`] × [`MIN_HEIGHT`]): the size to pass to [`write_png`](crate::write_png).
    /// Bigger than [`MAX_SIDE`] (and so refused by the writers) only when the grid does not
    /// fit even at 1×. For an invalid grid, a size at which rendering reports the problem.
    pub fn size(&self) -> (u32, u32) {
        let tile = self
            .rows
            .iter()
            .flat_map(|(_, images)| images.first())
            .map(RgbImage::dimensions)
            .find(|&(w, h)| w > 0 && h > 0)
            .unwrap_or((MIN_TILE_SIDE, MIN_TILE_SIDE));
        let (w, h) = self.arrange(tile, (MAX_SIDE, MAX_SIDE)).size;
        (w.max(MIN_WIDTH), h.max(MIN_HEIGHT))
    }

    /// Checks the rows and returns the tiles' common size.
    fn check(&self, path: &Path) -> Result<(u32, u32), PlotError> {
        if self.rows.is_empty() {
            return Err(PlotError::NoRows {
                path: path.to_path_buf(),
            });
        }
        let mut expected = None;
        for (label, images) in &self.rows {
            if images.is_empty() {
                return Err(PlotError::EmptyRow {
                    path: path.to_path_buf(),
                    label: label.clone(),
                });
            }
            for (index, image) in images.iter().enumerate() {
                let (width, height) = image.dimensions();
                let (expected_width, expected_height) = *expected.get_or_insert((width, height));
                if (width, height) != (expected_width, expected_height) || width == 0 || height == 0
                {
                    return Err(PlotError::TileSize {
                        path: path.to_path_buf(),
                        label: label.clone(),
                        index,
                        width,
                        height,
                        expected_width,
                        expected_height,
                    });
                }
            }
        }
        Ok(expected.unwrap_or((1, 1)))
    }

    /// The arrangement at the largest upscale up to the preferred one (see [`MIN_TILE_SIDE`])
    /// whose natural size fits `limit`; at 1× when none does.
    pub(crate) fn arrange(&self, tile: (u32, u32), limit: (u32, u32)) -> Arrangement {
        let preferred = MIN_TILE_SIDE
            .div_ceil(tile.0.max(tile.1).max(1))
            .clamp(1, MAX_SCALE);
        (1..=preferred)
            .rev()
            .map(|scale| self.arrange_at(tile, scale))
            .find(|a| a.size.0 <= limit.0 && a.size.1 <= limit.1)
            .unwrap_or_else(|| self.arrange_at(tile, 1))
    }

    /// Where everything goes at upscale `scale`, within the natural size.
    fn arrange_at(&self, (w, h): (u32, u32), scale: u32) -> Arrangement {
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let (tw, th) = (
            to_i32(w.saturating_mul(scale)),
            to_i32(h.saturating_mul(scale)),
        );
        let count = self.rows.len();
        let longest = self.rows.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
        let title = (!self.title.trim().is_empty()).then(|| {
            let text = truncate_to(self.title.trim(), MAX_TITLE_WIDTH, &|t| {
                measure(t, TITLE_FONT).0
            });
            let (width, height) = measure(&text, TITLE_FONT);
            (text, to_i32(width), to_i32(height))
        });
        let top = MARGIN + title.as_ref().map_or(0, |(_, _, h)| h + LABEL_GAP);
        let widest = self
            .rows
            .iter()
            .map(|(label, _)| measure(label, LABEL_FONT).0)
            .max()
            .unwrap_or(0)
            .min(MAX_LABEL_WIDTH);
        let widest = to_i32(widest);

        let mut labels = Vec::with_capacity(count);
        let mut label_boxes = Vec::with_capacity(count);
        let mut tiles = Vec::with_capacity(count);
        let (content_w, height) = match self.layout {
            GridLayout::Rows => {
                let left = MARGIN + if widest > 0 { widest + LABEL_GAP } else { 0 };
                for (r, (label, images)) in self.rows.iter().enumerate() {
                    let y = top + r as i32 * (th + TILE_GAP as i32);
                    labels.push(fit_label(
                        label,
                        widest,
                        (MARGIN + widest, y + th / 2),
                        Pos::new(HPos::Right, VPos::Center),
                    ));
                    label_boxes.push([0, y, left, y + th]);
                    tiles.push(
                        (0..images.len())
                            .map(|c| (left + c as i32 * (tw + TILE_GAP as i32), y))
                            .collect(),
                    );
                }
                (
                    left + span(longest, tw) + MARGIN,
                    top + span(count, th) + MARGIN,
                )
            }
            GridLayout::Columns => {
                let column_w = tw.max(widest);
                let any_label = self.rows.iter().any(|(l, _)| !l.is_empty());
                let label_h = if any_label {
                    (LABEL_FONT * 1.3).ceil() as i32
                } else {
                    0
                };
                let band = if any_label { label_h + LABEL_GAP } else { 0 };
                for (c, (label, images)) in self.rows.iter().enumerate() {
                    let x = MARGIN + c as i32 * (column_w + TILE_GAP as i32);
                    labels.push(fit_label(
                        label,
                        column_w,
                        (x + column_w / 2, top + label_h),
                        Pos::new(HPos::Center, VPos::Bottom),
                    ));
                    label_boxes.push([x, top, x + column_w, top + band]);
                    let tile_x = x + (column_w - tw) / 2;
                    tiles.push(
                        (0..images.len())
                            .map(|k| (tile_x, top + band + k as i32 * (th + TILE_GAP as i32)))
                            .collect(),
                    );
                }
                (
                    MARGIN + span(count, column_w) + MARGIN,
                    top + band + span(longest, th) + MARGIN,
                )
            }
        };
        let width = content_w.max(title.as_ref().map_or(0, |(_, w, _)| w + 2 * MARGIN));
        let mut arrangement = Arrangement {
            size: (width.max(0) as u32, height.max(0) as u32),
            scale,
            title: title.map(|(text, _, _)| PlacedText {
                text,
                size: TITLE_FONT,
                at: (width / 2, MARGIN),
                pos: Pos::new(HPos::Center, VPos::Top),
            }),
            labels,
            label_boxes,
            tiles,
        };
        // a title wider than the tiles: centre the tiles under it
        arrangement.shift((width - content_w) / 2, 0, false);
        arrangement
    }

    /// The arrangement for an image of `area` pixels, centred in it, or `None` when the grid
    /// does not fit even at 1×.
    pub(crate) fn place(&self, tile: (u32, u32), area: (u32, u32)) -> Option<Arrangement> {
        let mut a = self.arrange(tile, area);
        if a.size.0 > area.0 || a.size.1 > area.1 {
            return None;
        }
        let dx = ((area.0 - a.size.0) / 2) as i32;
        let dy = ((area.1 - a.size.1) / 2) as i32;
        a.shift(dx, dy, true);
        Some(a)
    }
}

/// Width of `count` tiles (or columns) of side `side` with gaps between them.
fn span(count: usize, side: i32) -> i32 {
    if count == 0 {
        0
    } else {
        count as i32 * side + (count as i32 - 1) * TILE_GAP as i32
    }
}

/// Size of `text` in the embedded font at `size` pixels (the same on every backend, so the
/// layout does not depend on the output format).
fn measure(text: &str, size: f64) -> (u32, u32) {
    if text.is_empty() {
        return (0, 0);
    }
    // Registers the font; when it fails, rendering reports it and this estimate is unused.
    let _ = require_font();
    (FONT_FAMILY, size)
        .into_font()
        .box_size(text)
        .unwrap_or_else(|_| {
            let width = text.chars().count() as f64 * size * 0.6;
            (width.ceil() as u32, size.ceil() as u32)
        })
}

/// `label` at the largest type size from [`LABEL_FONT`] down to [`MIN_LABEL_FONT`] at which
/// it is at most `max_width` wide, cut short with "…" if it is wider even at the smallest;
/// `None` for an empty label.
fn fit_label(label: &str, max_width: i32, at: (i32, i32), pos: Pos) -> Option<PlacedText> {
    if label.is_empty() {
        return None;
    }
    let max_width = max_width.max(1) as u32;
    let mut size = LABEL_FONT;
    while size > MIN_LABEL_FONT && measure(label, size).0 > max_width {
        size -= 1.0;
    }
    let text = truncate_to(label, max_width, &|t| measure(t, size).0);
    Some(PlacedText {
        text,
        size,
        at,
        pos,
    })
}

/// A piece of text and where it goes.
#[derive(Clone)]
pub(crate) struct PlacedText {
    pub(crate) text: String,
    /// Type size in pixels.
    pub(crate) size: f64,
    /// The anchor point, and which point of the text it is.
    pub(crate) at: (i32, i32),
    pub(crate) pos: Pos,
}

/// Where an [`ImageGrid`]'s parts go, in pixels of the image.
#[derive(Clone)]
pub(crate) struct Arrangement {
    /// The natural size (before padding to the smallest image size).
    pub(crate) size: (u32, u32),
    /// Each source pixel becomes a `scale × scale` block.
    pub(crate) scale: u32,
    pub(crate) title: Option<PlacedText>,
    /// Each row's label (`None` when empty).
    pub(crate) labels: Vec<Option<PlacedText>>,
    /// Each row's label area `[x0, y0, x1, y1)` (the part of a row left of its tiles; in
    /// columns, the band above the column).
    pub(crate) label_boxes: Vec<[i32; 4]>,
    /// The upper left corner of each row's tiles.
    pub(crate) tiles: Vec<Vec<(i32, i32)>>,
}

impl Arrangement {
    /// Moves the labels and tiles (and the title too if `title`) by `(dx, dy)`.
    fn shift(&mut self, dx: i32, dy: i32, title: bool) {
        let labels = self.labels.iter_mut().flatten();
        let title = self.title.as_mut().filter(|_| title);
        for text in labels.chain(title) {
            text.at = (text.at.0 + dx, text.at.1 + dy);
        }
        for b in &mut self.label_boxes {
            *b = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy];
        }
        for (x, y) in self.tiles.iter_mut().flatten() {
            *x += dx;
            *y += dy;
        }
    }
}

impl Chart for ImageGrid {
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError> {
        let (width, height) = check_area(root, path)?;
        let tile = self.check(path)?;
        require_font().map_err(render_error(path))?;
        let Some(arrangement) = self.place(tile, (width, height)) else {
            let needed = self.arrange(tile, (0, 0)).size;
            return Err(PlotError::AreaTooSmall {
                path: path.to_path_buf(),
                width,
                height,
                needed_width: needed.0,
                needed_height: needed.1,
            });
        };
        draw_grid(root, self, &arrangement).map_err(render_error(path))
    }
}

/// Draws the grid as arranged; errors are returned as text (see [`render_error`]).
fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    grid: &ImageGrid,
    a: &Arrangement,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let title = a.title.iter().map(|t| (t, BLACK));
    let labels = a.labels.iter().flatten().map(|t| (t, TEXT_GREY));
    for (text, color) in title.chain(labels) {
        let style = (FONT_FAMILY, text.size)
            .into_font()
            .color(&color)
            .pos(text.pos);
        root.draw(&Text::new(text.text.as_str(), text.at, style))
            .map_err(err)?;
    }
    for ((_, images), corners) in grid.rows.iter().zip(&a.tiles) {
        for (image, &corner) in images.iter().zip(corners) {
            draw_tile(root, image, corner, a.scale as i32).map_err(err)?;
        }
    }
    Ok(())
}

/// Draws `image` with its upper left corner at `(x0, y0)`, each pixel a `scale × scale`
/// square; runs of equal pixels in a row become one rectangle, white ones none (the
/// background is white).
fn draw_tile<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    image: &RgbImage,
    (x0, y0): (i32, i32),
    scale: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (py, row) in image.rows().enumerate() {
        let pixels: Vec<[u8; 3]> = row.map(|p| p.0).collect();
        let y = y0 + py as i32 * scale;
        let mut start = 0;
        while start < pixels.len() {
            let end = start
                + pixels[start..]
                    .iter()
                    .take_while(|&&p| p == pixels[start])
                    .count();
            let [r, g, b] = pixels[start];
            if [r, g, b] != [255, 255, 255] {
                // Rectangles fill [x0, x1) × [y0, y1) on both backends.
                root.draw(&Rectangle::new(
                    [
                        (x0 + start as i32 * scale, y),
                        (x0 + end as i32 * scale, y + scale),
                    ],
                    RGBColor(r, g, b).filled(),
                ))?;
            }
            start = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_svg_has, rejects};
    use crate::{render_png, render_svg, write_png};

    const WHITE_PIXEL: [u8; 3] = [255, 255, 255];

    /// A `w × h` tile whose every pixel differs from its neighbours and from other tiles'
    /// (`k` tells tiles apart); never white.
    fn tile(w: u32, h: u32, k: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 9 + k * 37) % 250) as u8,
                ((y * 7 + k * 11) % 250) as u8,
                ((x * y + k * 53) % 250) as u8,
            ])
        })
    }

    fn row(label: &str, n: u32, side: u32, k: u32) -> (String, Vec<RgbImage>) {
        (
            label.to_string(),
            (0..n).map(|i| tile(side, side, k * 10 + i)).collect(),
        )
    }

    /// The grid of a batch of three 28-px images: the truth, two reconstructions (one of them
    /// cut short), and an unlabelled row.
    fn batch_grid() -> ImageGrid {
        ImageGrid::new(
            "mlp trained",
            vec![
                row("truth", 3, 28, 0),
                row("synaptic+dropout", 3, 28, 1),
                row("none", 2, 28, 2),
                row("", 3, 28, 3),
            ],
        )
    }

    fn decode(png: &[u8]) -> RgbImage {
        image::load_from_memory(png).unwrap().to_rgb8()
    }

    /// Renders `grid` as PNG at `size` and returns the image and the arrangement used.
    fn rendered(grid: &ImageGrid, size: (u32, u32)) -> (RgbImage, Arrangement) {
        let path = Path::new("grid.png");
        let png = render_png(grid, path, size.0, size.1).unwrap();
        let image = decode(&png);
        assert_eq!(image.dimensions(), size);
        let tile = grid.check(path).unwrap();
        (image, grid.place(tile, size).unwrap())
    }

    /// Asserts that every tile of `grid` appears at its place in `image`, each source pixel
    /// as an exact `scale × scale` block, with white gaps to its right and below.
    fn assert_tiles(grid: &ImageGrid, image: &RgbImage, a: &Arrangement) {
        let s = a.scale;
        for ((label, images), corners) in grid.rows.iter().zip(&a.tiles) {
            assert_eq!(images.len(), corners.len());
            for (k, (tile, &(x0, y0))) in images.iter().zip(corners).enumerate() {
                let (x0, y0) = (x0 as u32, y0 as u32);
                let (w, h) = tile.dimensions();
                for y in 0..h * s {
                    for x in 0..w * s {
                        assert_eq!(
                            image.get_pixel(x0 + x, y0 + y).0,
                            tile.get_pixel(x / s, y / s).0,
                            "row {label:?}, tile {k}, pixel ({x}, {y})"
                        );
                    }
                    assert_eq!(image.get_pixel(x0 + w * s, y0 + y).0, WHITE_PIXEL);
                }
                for x in 0..w * s {
                    assert_eq!(image.get_pixel(x0 + x, y0 + h * s).0, WHITE_PIXEL);
                }
            }
        }
    }

    /// Whether any pixel in `[x0, x1) × [y0, y1)` is not white.
    fn inked(image: &RgbImage, [x0, y0, x1, y1]: [i32; 4]) -> bool {
        (y0.max(0)..y1)
            .any(|y| (x0.max(0)..x1).any(|x| image.get_pixel(x as u32, y as u32).0 != WHITE_PIXEL))
    }

    #[test]
    fn the_upscale_follows_the_tile_size_and_the_image_limit() {
        let one = |side: u32| ImageGrid::new("", vec![row("a", 1, side, 0)]);
        let scale = |g: &ImageGrid, side: u32| g.arrange((side, side), (MAX_SIDE, MAX_SIDE)).scale;
        for (side, expected) in [(28, 3), (32, 2), (8, 8), (64, 1), (100, 1), (1, MAX_SCALE)] {
            assert_eq!(scale(&one(side), side), expected, "side {side}");
        }
        // 120 tiles of 28 px: 3× would be 120 · 88 px wide, over the limit; 2× fits
        let wide = ImageGrid::new("", vec![row("a", 120, 28, 0)]);
        assert_eq!(scale(&wide, 28), 2);
        assert!(wide.size().0 <= MAX_SIDE);
    }

    #[test]
    fn tiles_are_upscaled_exactly_and_labels_drawn_beside_their_rows() {
        let grid = batch_grid();
        let size = grid.size();
        let (image, a) = rendered(&grid, size);
        assert_eq!(a.scale, 3);
        assert_eq!(a.size, size, "the natural size is the image size");
        assert_tiles(&grid, &image, &a);
        // rows are one tile and a gap apart, tiles in a row too, all rows start at one x
        let step = 28 * 3 + TILE_GAP as i32;
        for (r, corners) in a.tiles.iter().enumerate() {
            assert_eq!(
                corners[0],
                (a.tiles[0][0].0, a.tiles[0][0].1 + r as i32 * step)
            );
            for pair in corners.windows(2) {
                assert_eq!(pair[1], (pair[0].0 + step, pair[0].1));
            }
        }
        // a label left of each labelled row, vertically within it; nothing left of the
        // unlabelled row
        for ((label, _), b) in grid.rows.iter().zip(&a.label_boxes) {
            assert_eq!(
                b[2], a.tiles[0][0].0,
                "the label area ends where the tiles begin"
            );
            assert_eq!(inked(&image, *b), !label.is_empty(), "row {label:?}");
        }
        // the title above the first row
        let first_row = a.tiles[0][0].1;
        assert!(inked(&image, [0, 0, size.0 as i32, first_row]));
        // a bigger image centres the same grid
        let (image, moved) = rendered(&grid, (size.0 + 101, size.1 + 60));
        assert_eq!(
            moved.tiles[0][0],
            (a.tiles[0][0].0 + 50, a.tiles[0][0].1 + 30)
        );
        assert_tiles(&grid, &image, &moved);
    }

    #[test]
    fn long_labels_are_shrunk_or_cut_to_the_label_column() {
        let long = "synaptic+dropout + differential privacy σ=0.1 + pruning 90 % lr×10";
        let grid = ImageGrid::new("", vec![row("a", 2, 28, 0), row(long, 2, 28, 1)]);
        let (image, a) = rendered(&grid, grid.size());
        let short = a.labels[0].as_ref().unwrap();
        assert_eq!((short.text.as_str(), short.size), ("a", LABEL_FONT));
        let fitted = a.labels[1].as_ref().unwrap();
        assert_eq!(fitted.size, MIN_LABEL_FONT);
        assert!(fitted.text.ends_with('…') && fitted.text.len() < long.len());
        assert!(measure(&fitted.text, fitted.size).0 <= MAX_LABEL_WIDTH);
        let b = a.label_boxes[1];
        assert_eq!(b[2] - b[0], MARGIN + MAX_LABEL_WIDTH as i32 + LABEL_GAP);
        assert!(inked(&image, b));
        // nothing spills into the margin left of the label column
        assert!(!inked(&image, [0, 0, MARGIN - 1, image.height() as i32]));
        assert_tiles(&grid, &image, &a);
    }

    #[test]
    fn columns_put_each_label_above_its_tile() {
        let grid = ImageGrid::columns(
            "",
            vec![
                row("truth", 1, 32, 0),
                row("none", 1, 32, 1),
                row("", 1, 32, 2),
                row("synaptic+dropout + dp σ=0.1", 1, 32, 3),
            ],
        );
        let (image, a) = rendered(&grid, grid.size());
        assert_eq!(a.scale, 2);
        assert_tiles(&grid, &image, &a);
        let first = a.tiles[0][0];
        for ((label, _), (b, corners)) in grid.rows.iter().zip(a.label_boxes.iter().zip(&a.tiles)) {
            assert_eq!(corners[0].1, first.1, "tiles side by side");
            assert!(b[3] <= corners[0].1, "label band above the tile");
            assert!(b[0] <= corners[0].0 && corners[0].0 + 64 <= b[2]);
            assert_eq!(inked(&image, *b), !label.is_empty(), "column {label:?}");
        }
        for text in a.labels.iter().flatten() {
            assert!(measure(&text.text, text.size).0 <= MAX_LABEL_WIDTH);
        }
        // transposing a grid of several images per row stacks them in the columns
        let tall = ImageGrid::columns("t", vec![row("a", 3, 28, 0), row("b", 2, 28, 1)]);
        let (image, a) = rendered(&tall, tall.size());
        assert_tiles(&tall, &image, &a);
        assert_eq!(a.tiles[0][1].0, a.tiles[0][0].0);
        assert!(a.tiles[0][1].1 > a.tiles[0][0].1);
    }

    #[test]
    fn the_same_grid_renders_to_the_same_bytes() {
        let grid = batch_grid();
        let (w, h) = grid.size();
        let path = Path::new("grid.png");
        let png = render_png(&grid, path, w, h).unwrap();
        assert!(png == render_png(&grid.clone(), path, w, h).unwrap());
        let svg = render_svg(&grid, path, w, h).unwrap();
        assert!(svg == render_svg(&grid, path, w, h).unwrap());
        assert_svg_has(
            &svg,
            &[],
            &["mlp trained", "truth", "synaptic+dropout", "none"],
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("grid.png");
        write_png(&grid, &file, w, h).unwrap();
        assert!(std::fs::read(&file).unwrap() == png);
    }

    #[test]
    fn bad_grids_are_errors_naming_the_problem() {
        rejects(&ImageGrid::new("t", vec![]), |e| {
            matches!(e, PlotError::NoRows { .. })
        });
        let empty = ImageGrid::new("t", vec![row("a", 1, 8, 0), ("recon".into(), vec![])]);
        rejects(
            &empty,
            |e| matches!(e, PlotError::EmptyRow { label, .. } if label == "recon"),
        );
        let mut mixed = ImageGrid::columns("t", vec![row("a", 2, 8, 0), row("b", 2, 8, 1)]);
        mixed.rows[1].1.push(tile(9, 8, 5));
        rejects(&mixed, |e| {
            matches!(
                e,
                PlotError::TileSize { label, index: 2, width: 9, height: 8, expected_width: 8, expected_height: 8, .. }
                    if label == "b"
            )
        });
        let blank = ImageGrid::new("t", vec![("a".into(), vec![RgbImage::new(0, 0)])]);
        rejects(&blank, |e| {
            matches!(e, PlotError::TileSize { width: 0, .. })
        });
        // ten 64-px tiles do not fit 400 px even at 1×
        let wide = ImageGrid::new("t", vec![row("a", 10, 64, 0)]);
        rejects(
            &wide,
            |e| matches!(e, PlotError::AreaTooSmall { width: 400, needed_width, .. } if *needed_width > 400),
        );
        assert!(PlotError::EmptyRow {
            path: "g.png".into(),
            label: "recon".into()
        }
        .to_string()
        .contains("\"recon\""));
    }
}
