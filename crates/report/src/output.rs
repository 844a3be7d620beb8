//! From a chart to bytes and to a file: the [`Chart`] trait every chart kind implements, the
//! accepted image sizes, rendering to PNG bytes or an SVG document in memory, and writing the
//! result atomically. Kept apart from the chart kinds so that all of them get the same size
//! checks, the same deterministic encoding and the same file handling.

use std::io::Write;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::PlotError;

/// Smallest accepted image width in pixels.
pub const MIN_WIDTH: u32 = 200;
/// Smallest accepted image height in pixels.
pub const MIN_HEIGHT: u32 = 150;
/// Largest accepted width or height in pixels.
pub const MAX_SIDE: u32 = 8192;

/// A chart that can be written with [`write_png`] and [`write_svg`]:
/// [`LineChart`](crate::LineChart), [`ErrorBarChart`](crate::ErrorBarChart),
/// [`ScatterChart`](crate::ScatterChart) and [`ImageGrid`](crate::ImageGrid).
pub trait Chart {
    /// Checks the chart's data and draws it onto `root`, the whole image.
    /// Errors name `path`, the file the chart is meant for; nothing is
    /// written to it here.
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        path: &Path,
    ) -> Result<(), PlotError>;
}

/// Writes the chart as PNG (width × height pixels) to `path`, atomically.
pub fn write_png<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    let bytes = render_png(chart, path, width, height)?;
    write_file(path, &bytes)
}

/// Writes the chart as SVG (width × height user units) to `path`, atomically.
pub fn write_svg<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    let svg = render_svg(chart, path, width, height)?;
    write_file(path, svg.as_bytes())
}

/// Renders the chart to PNG bytes; `path` is only used in error messages.
pub fn render_png<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, PlotError> {
    check_size(path, width, height)?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        chart.render(&root, path)?;
        root.present()
            .map_err(|e| render_error(path)(e.to_string()))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(png)
}

/// Renders the chart to an SVG document; `path` is only used in error messages.
pub fn render_svg<C: Chart>(
    chart: &C,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<String, PlotError> {
    check_size(path, width, height)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        chart.render(&root, path)?;
        root.present()
            .map_err(|e| render_error(path)(e.to_string()))?;
    }
    Ok(svg)
}

/// Rejects image sizes outside `MIN_WIDTH × MIN_HEIGHT ..= MAX_SIDE × MAX_SIDE`.
fn check_size(path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
    if !(MIN_WIDTH..=MAX_SIDE).contains(&width) || !(MIN_HEIGHT..=MAX_SIDE).contains(&height) {
        return Err(PlotError::InvalidSize {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}

/// [`check_size`] for the whole image `root`; returns its size.
pub(crate) fn check_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    path: &Path,
) -> Result<(u32, u32), PlotError> {
    let (width, height) = root.dim_in_pixel();
    check_size(path, width, height)?;
    Ok((width, height))
}

/// Wraps a drawing error's text (plotters' error type depends on the backend, so the chart
/// kinds' drawing functions return text) as a [`PlotError`].
pub(crate) fn render_error(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError::Render {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `bytes` to `path` atomically: into a new temporary file in the same folder (so that
/// the rename stays on one file system), flushed to disk, then renamed over `path`. A reader
/// never sees a half-written chart; on failure the temporary file is removed and `path` is
/// left as it was.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    let io = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = tempfile::Builder::new();
    temporary.prefix(".chart-").suffix(".partial");
    // Permissions as `std::fs::write` gives them (the umask decides), not owner-only.
    #[cfg(unix)]
    temporary.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut file = temporary.tempfile_in(folder).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{accuracy_chart, privacy_utility_chart, psnr_chart, sample_series};
    use crate::LineChart;

    #[test]
    fn unwritable_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("chart.png");
        let series = sample_series();
        let err = write_png(&accuracy_chart(&series), &path, 400, 300).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing-dir"));
    }

    #[test]
    fn writing_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        std::fs::write(&path, "an older chart").unwrap();
        let series = sample_series();
        let chart = accuracy_chart(&series);
        write_svg(&chart, &path, 400, 300).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, render_svg(&chart, &path, 400, 300).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["chart.svg"]);
    }

    #[cfg(unix)]
    #[test]
    fn written_files_get_the_permissions_of_std_fs_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (chart_path, plain_path) = (dir.path().join("chart.png"), dir.path().join("plain"));
        let series = sample_series();
        write_png(&accuracy_chart(&series), &chart_path, 400, 300).unwrap();
        std::fs::write(&plain_path, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&chart_path), mode(&plain_path));
    }

    #[test]
    fn same_chart_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let series = sample_series();
        let chart = accuracy_chart(&series);
        type Writer<'a> = fn(&LineChart<'a>, &Path, u32, u32) -> Result<(), PlotError>;
        let writers: [(&str, Writer); 2] = [("png", write_png), ("svg", write_svg)];
        for (ext, write) in writers {
            let a = dir.path().join(format!("a.{ext}"));
            let b = dir.path().join(format!("b.{ext}"));
            write(&chart, &a, 500, 300).unwrap();
            write(&chart, &b, 500, 300).unwrap();
            let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
            assert!(!a.is_empty());
            assert!(a == b, "{ext} output differs between runs");
        }
    }

    #[test]
    fn new_charts_give_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (bars, scatter) = (psnr_chart(), privacy_utility_chart());
        for name in ["a", "b"] {
            write_png(
                &bars,
                &dir.path().join(format!("{name}-bars.png")),
                600,
                400,
            )
            .unwrap();
            write_svg(
                &bars,
                &dir.path().join(format!("{name}-bars.svg")),
                600,
                400,
            )
            .unwrap();
            write_png(
                &scatter,
                &dir.path().join(format!("{name}-sc.png")),
                600,
                400,
            )
            .unwrap();
            write_svg(
                &scatter,
                &dir.path().join(format!("{name}-sc.svg")),
                600,
                400,
            )
            .unwrap();
        }
        for file in ["bars.png", "bars.svg", "sc.png", "sc.svg"] {
            let a = std::fs::read(dir.path().join(format!("a-{file}"))).unwrap();
            let b = std::fs::read(dir.path().join(format!("b-{file}"))).unwrap();
            assert!(a == b, "{file} differs between runs");
        }
    }

    #[test]
    fn new_charts_reject_inconsistent_data() {
        use crate::test_support::rejects;
        let mut bars = psnr_chart();
        bars.series[1].values.push(Some((1.0, 0.0, 2.0)));
        rejects(
            &bars,
            |e| matches!(e, PlotError::TooManyValues { label, values: 5, groups: 4, .. } if label == "mlp trained"),
        );
        let mut huge = psnr_chart();
        huge.series[0].values[0] = Some((0.0, -f64::MAX, f64::MAX));
        rejects(&huge, |e| matches!(e, PlotError::RangeOverflow { .. }));

        let mut scatter = privacy_utility_chart();
        scatter.points[2].series = 3;
        rejects(
            &scatter,
            |e| matches!(e, PlotError::UnknownSeries { series: 3, count: 3, label, .. } if label == "synaptic+dropout"),
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.png");
        let err = write_png(&psnr_chart(), &path, 10, 10).unwrap_err();
        assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
        let err = write_svg(&privacy_utility_chart(), &path, 400, MAX_SIDE + 1).unwrap_err();
        assert!(matches!(err, PlotError::InvalidSize { .. }), "{err:?}");
    }
}
