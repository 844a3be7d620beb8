//! Fixtures and checks shared by the tests of several files: sample charts of every kind, the
//! check that a chart is rejected without a file being written, and PNG/SVG inspection.

use std::path::Path;

use plotters::prelude::RGBColor;

use crate::{
    write_png, write_svg, BarSeries, Chart, ErrorBarChart, LineChart, PlotError, ScatterChart,
    ScatterPoint, Series,
};

/// A series of `n` points `(i, f(i))`.
pub(crate) fn curve(label: &str, n: usize, f: impl Fn(f64) -> f64) -> Series {
    Series {
        label: label.to_string(),
        points: (0..n).map(|i| (i as f64, f(i as f64))).collect(),
    }
}

/// Two learning curves of different lengths.
pub(crate) fn sample_series() -> Vec<Series> {
    vec![
        curve("FedAvg", 30, |x| 0.95 - 0.85 * (-x / 6.0).exp()),
        curve("Synaptic σ=0.1", 12, |x| 0.3 + 0.04 * x),
    ]
}

/// The line chart of the line-chart tests: test accuracy per round on a fixed 0..=1 axis.
pub(crate) fn accuracy_chart(series: &[Series]) -> LineChart<'_> {
    LineChart {
        title: "Test accuracy per round",
        x_label: "round",
        y_label: "accuracy",
        series,
        y_range: Some((0.0, 1.0)),
    }
}

/// Asserts that both writers reject the chart, that the message names
/// the path, and that no file is left behind.
pub(crate) fn rejects<C: Chart>(chart: &C, check: impl Fn(&PlotError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bad.png", "bad.svg"] {
        let path = dir.path().join(name);
        let err = if name.ends_with("png") {
            write_png(chart, &path, 400, 300)
        } else {
            write_svg(chart, &path, 400, 300)
        }
        .unwrap_err();
        assert!(check(&err), "unexpected error: {err:?}");
        assert!(
            err.to_string().contains(name),
            "{err} does not name the path"
        );
        assert!(!path.exists(), "a file was written despite the error");
    }
}

/// Checks a PNG file: signature, size, more than one colour, and that
/// every colour in `colors` is drawn.
fn check_png(path: &Path, width: u32, height: u32, colors: &[RGBColor]) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (width, height));
    let first = *img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| *p != first), "image is one colour");
    for c in colors {
        assert!(
            img.pixels().any(|p| p.0 == [c.0, c.1, c.2]),
            "colour {c:?} is not drawn"
        );
    }
}

/// The trimmed contents of every `<text>` element of an SVG document.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// An error-bar chart like `synfed compare`'s PSNR chart, with one missing value.
pub(crate) fn psnr_chart() -> ErrorBarChart {
    ErrorBarChart {
        title: "Reconstruction PSNR by method set (95 % CI)".into(),
        y_label: "PSNR [dB]".into(),
        groups: ["none", "synaptic", "synaptic+dropout", "dp σ=0.1"]
            .map(String::from)
            .to_vec(),
        series: vec![
            BarSeries {
                label: "mlp untrained".into(),
                values: vec![
                    Some((31.2, 29.8, 32.5)),
                    Some((18.4, 16.9, 20.0)),
                    Some((14.1, 13.0, 15.3)),
                    Some((11.0, 10.2, 11.9)),
                ],
            },
            BarSeries {
                label: "mlp trained".into(),
                values: vec![
                    Some((27.5, 25.0, 30.1)),
                    None,
                    Some((13.2, 12.5, 14.4)),
                    Some((10.1, 9.0, 11.5)),
                ],
            },
            BarSeries {
                label: "cnn untrained".into(),
                values: vec![
                    Some((24.0, 22.2, 25.7)),
                    Some((16.0, 15.1, 17.2)),
                    Some((12.7, 11.1, 14.0)),
                    Some((9.8, 9.1, 10.4)),
                ],
            },
        ],
    }
}

/// A scatter chart like `synfed compare`'s privacy–utility plot, three series.
pub(crate) fn privacy_utility_chart() -> ScatterChart {
    let p = |label: &str, x: f64, y: f64, series: usize| ScatterPoint {
        label: label.into(),
        x,
        y,
        series,
    };
    ScatterChart {
        title: "Privacy–utility trade-off".into(),
        x_label: "test accuracy [%]".into(),
        y_label: "reconstruction PSNR [dB]".into(),
        points: vec![
            p("none", 97.9, 31.2, 0),
            p("synaptic", 97.1, 18.4, 0),
            p("synaptic+dropout", 96.4, 14.1, 0),
            p("dp σ=0.1", 91.5, 11.0, 1),
            p("dp σ=0.01", 96.8, 19.5, 1),
            p("prune 90%", 95.2, 17.9, 2),
            p("prune 50%", 97.4, 25.0, 2),
        ],
        series_names: vec![
            "synaptic".into(),
            "differential privacy".into(),
            "pruning".into(),
        ],
    }
}

/// Writes `chart` as `name.png` and `name.svg` in `dir` (`width × height`), checks the PNG with
/// [`check_png`] (every colour in `colors` drawn) and that the SVG is one whole document, and
/// returns the SVG.
pub(crate) fn write_and_check<C: Chart>(
    chart: &C,
    dir: &Path,
    name: &str,
    (width, height): (u32, u32),
    colors: &[RGBColor],
) -> String {
    let png = dir.join(format!("{name}.png"));
    write_png(chart, &png, width, height).unwrap();
    check_png(&png, width, height, colors);
    let svg_path = dir.join(format!("{name}.svg"));
    write_svg(chart, &svg_path, width, height).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    svg
}

/// Asserts that `svg` contains every string of `contains` and has a `<text>` element reading
/// exactly each of `texts`.
pub(crate) fn assert_svg_has(svg: &str, contains: &[&str], texts: &[&str]) {
    for text in contains {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    let elements = svg_texts(svg);
    for text in texts {
        assert!(
            elements.iter().any(|e| e == text),
            "SVG lacks {text:?} in {elements:?}"
        );
    }
}
