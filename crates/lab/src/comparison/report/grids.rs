//! The report's picture grids: the batch of client 0 (or batch 0) as the truth, and its
//! reconstruction under every variant, one labelled row each, from the cells' attack PNGs.

use crate::comparison::collect::Located;
use crate::comparison::error::Result;
use std::path::{Path, PathBuf};
use synfed_report::{write_png, ImageGrid};

/// The labelled grid of client 0's batch in `state`: a `truth` row, then one row per cell
/// labelled with its variant, from the cells' attack PNGs (for batches of one image: one
/// labelled column each instead). Rows without pictures and pictures of another size than the
/// first are left out. Returns false when there is nothing to show.
pub fn compose_grid(cells: &[&Located], state: &str, path: &Path) -> Result<bool> {
    let load = |p: PathBuf| -> Option<image::RgbImage> { image::open(p).ok().map(|i| i.to_rgb8()) };
    let row_of = |dir: &Path, prefix: &str| -> Vec<image::RgbImage> {
        (0..)
            .map(|k| dir.join(format!("{prefix}_{k:02}.png")))
            .take_while(|p| p.exists())
            .filter_map(load)
            .collect()
    };
    let Some(first) = cells.first() else {
        return Ok(false);
    };
    let attack_dir = |l: &Located| l.first_attack_dir(state);
    let mut rows = vec![("truth".to_string(), row_of(&attack_dir(first), "truth"))];
    for l in cells {
        rows.push((
            l.result.variant.label.clone(),
            row_of(&attack_dir(l), "recon"),
        ));
    }
    let Some(size) = rows
        .iter()
        .flat_map(|(_, r)| r.first())
        .map(|i| i.dimensions())
        .next()
    else {
        return Ok(false);
    };
    for (_, row) in &mut rows {
        row.retain(|i| i.dimensions() == size);
    }
    rows.retain(|(_, row)| !row.is_empty());
    let title = format!("{} {state}", first.result.model.slug());
    // batches of one image: one row of labelled columns (truth, then each variant) reads better
    let grid = if rows.iter().all(|(_, r)| r.len() == 1) {
        ImageGrid::columns(title, rows)
    } else {
        ImageGrid::new(title, rows)
    };
    let (width, height) = grid.size();
    write_png(&grid, path, width, height)?;
    Ok(true)
}
