//! The report's charts (PNG beside SVG, written by synfed-report): attack success by variant
//! with bootstrap whiskers, privacy against utility, and each model's test accuracy over the
//! federation's rounds.

use super::measures::{bootstrap95, psnr_values};
use crate::comparison::collect::Located;
use crate::comparison::config::{CompareConfig, ModelEntry};
use crate::comparison::error::Result;
use crate::statistics::Spread;
use std::path::Path;
use synfed_report::{
    write_png, write_svg, BarSeries, ErrorBarChart, LineChart, ScatterChart, ScatterPoint, Series,
};

/// The PSNR-by-variant chart (bootstrap 95 % interval whiskers) and the privacy–utility chart;
/// returns their markdown. `worst_case`: `cells` hold the worst case per image over several
/// attacks, which the titles and captions say.
pub fn plots(
    config: &CompareConfig,
    cells: &[Located],
    pictures: &Path,
    worst_case: bool,
) -> Result<String> {
    let of = if worst_case {
        ", worst case over the attacks"
    } else {
        ""
    };
    let variants: Vec<String> = super::measures::variant_labels(cells)
        .into_iter()
        .map(String::from)
        .collect();
    let mut series = Vec::new();
    for m in &config.models {
        for state in config.states() {
            let values = variants
                .iter()
                .map(|v| {
                    cells
                        .iter()
                        .find(|l| &l.result.variant.label == v && l.result.model.slug() == m.slug())
                        .and_then(|l| {
                            // whiskers: the bootstrap interval of the mean, which stays within
                            // the observed values (a t-interval of bimodal PSNR reached below 0)
                            let psnr = psnr_values(&l.result, state);
                            let i = bootstrap95(&psnr, config.seed)?;
                            Some((Spread::of(&psnr)?.mean, i.lo, i.hi))
                        })
                })
                .collect();
            series.push(BarSeries {
                label: format!("{} {state}", m.slug()),
                values,
            });
        }
    }
    let psnr = ErrorBarChart {
        title: format!("Attack success by variant (mean, bootstrap 95 % interval{of})"),
        y_label: "reconstruction PSNR [dB]".into(),
        groups: variants.clone(),
        series,
    };
    write_png(&psnr, &pictures.join("psnr.png"), 1100, 620)?;
    write_svg(&psnr, &pictures.join("psnr.svg"), 1100, 620)?;
    let mut points = Vec::new();
    for (i, m) in config.models.iter().enumerate() {
        for l in cells.iter().filter(|l| l.result.model.slug() == m.slug()) {
            if let Some(acc) = l.result.test_accuracy {
                points.push(ScatterPoint {
                    label: l.result.variant.label.clone(),
                    x: 100.0 * acc,
                    y: l.result.estimate("trained", |a| a.psnr).mean,
                    series: i,
                });
            }
        }
    }
    let utility = ScatterChart {
        title: format!("Privacy against utility (trained models{of})"),
        x_label: "test accuracy [%]".into(),
        y_label: "reconstruction PSNR [dB] (lower = more private)".into(),
        points,
        series_names: config.models.iter().map(|m| m.slug()).collect(),
    };
    write_png(&utility, &pictures.join("privacy_utility.png"), 1000, 700)?;
    write_svg(&utility, &pictures.join("privacy_utility.svg"), 1000, 700)?;
    let caption = if worst_case {
        "Both plots show the worst case per image: per attacked image, the highest PSNR any \
         of the attacks achieved.\n\n"
    } else {
        ""
    };
    Ok(format!("## Plots\n\n{caption}![PSNR by variant](pictures/psnr.png)\n\n![privacy against utility](pictures/privacy_utility.png)\n\n"))
}

/// The test accuracy over rounds of every variant's federation of `m`, as
/// `pictures/accuracy-<model>.png|svg`; returns its markdown.
pub fn accuracy_over_rounds(m: &ModelEntry, cells: &[Located], pictures: &Path) -> Result<String> {
    let name = format!("accuracy-{}", m.slug());
    let series: Vec<Series> = cells
        .iter()
        .filter(|l| l.result.model.slug() == m.slug())
        .map(|l| Series {
            label: l.result.variant.label.clone(),
            points: l
                .result
                .accuracy_curve
                .iter()
                .map(|&(r, a)| (r as f64, 100.0 * a))
                .collect(),
        })
        .collect();
    let title = format!("{}: test accuracy over rounds", m.slug());
    let chart = LineChart {
        title: &title,
        x_label: "round",
        y_label: "test accuracy [%]",
        series: &series,
        y_range: Some((0.0, 100.0)),
    };
    write_png(&chart, &pictures.join(format!("{name}.png")), 900, 560)?;
    write_svg(&chart, &pictures.join(format!("{name}.svg")), 900, 560)?;
    Ok(format!("![{name}](pictures/{name}.png)\n\n"))
}
