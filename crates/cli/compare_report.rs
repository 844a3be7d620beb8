//! The outputs of `synfed compare`: `results.csv`, `results.json`, `report.md` (Table-3-style
//! attack tables, an accuracy table, the command and seeds), comparison grids (the same
//! attacked batch reconstructed under every variant) and plots.

use crate::compare::epsilon_of;
use crate::compare::{CellResult, CompareConfig, Kind};
use crate::compare_stats::Estimate;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use synfed_lab::statistics::{
    bootstrap_mean_interval, holm, wilcoxon_signed_rank, Interval, Spread, SuccessRate,
};
use synfed_report::{
    write_png, write_svg, BarSeries, ErrorBarChart, ImageGrid, LineChart, ScatterChart,
    ScatterPoint, Series,
};

/// A finished cell and the folder it was computed in.
pub struct Located {
    pub result: CellResult,
    /// The variant's folder.
    pub dir: PathBuf,
    /// `--kind inversion`: each state's folder (they may come from different shards).
    pub state_dirs: Vec<(String, PathBuf)>,
}

impl Located {
    /// The folder of the attack on the first batch (client 0) in `state`.
    fn first_attack_dir(&self, state: &str) -> PathBuf {
        match self.state_dirs.iter().find(|(s, _)| s == state) {
            Some((_, dir)) => dir.join("attack").join("batch-0"),
            None => self.dir.join("attack").join(format!("{state}-client-0")),
        }
    }
}

/// One row of `results.csv`: a variant × model × state.
#[derive(Serialize)]
struct Row<'a> {
    variant: &'a str,
    role: &'a str,
    methods: String,
    defence: &'a str,
    lr: f64,
    model: String,
    width: Option<usize>,
    state: &'a str,
    k: usize,
    psnr: Estimate,
    mse: Estimate,
    ssim: Estimate,
    mse_normalized: Estimate,
    label_accuracy: Estimate,
    /// Median and quartiles of the per-batch PSNR (exact reconstructions at the ceiling).
    psnr_spread: Option<Spread>,
    /// Percentile-bootstrap 95 % interval of the mean PSNR (2,000 resamples, the run's seed).
    psnr_bootstrap: Option<Interval>,
    /// Attacks with SSIM ≥ [`SUCCESS_SSIM`].
    success: Option<SuccessRate>,
    test_accuracy: Option<f64>,
}

/// Resamples of the bootstrap intervals in the result files.
const BOOTSTRAP_RESAMPLES: usize = 2000;

fn states(config: &CompareConfig) -> Vec<&'static str> {
    config.states()
}

fn rows<'a>(config: &CompareConfig, cells: &'a [Located]) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for l in cells {
        let c = &l.result;
        for state in states(config) {
            let psnr = psnr_values(c, state);
            let ssim: Vec<f64> = c
                .attacks
                .iter()
                .filter(|a| a.state == state)
                .map(|a| a.ssim)
                .collect();
            out.push(Row {
                variant: &c.variant.label,
                role: &c.variant.role,
                methods: c.variant.methods.to_string(),
                defence: &c.variant.defence,
                lr: c.variant.lr,
                model: c.model.slug(),
                width: c.width,
                state,
                k: c.attacks.iter().filter(|a| a.state == state).count(),
                psnr: c.estimate(state, |a| a.psnr),
                mse: c.estimate(state, |a| a.mse),
                ssim: c.estimate(state, |a| a.ssim),
                mse_normalized: c.estimate(state, |a| a.mse_normalized),
                label_accuracy: c.estimate(state, |a| a.label_accuracy),
                psnr_spread: Spread::of(&psnr),
                psnr_bootstrap: bootstrap95(&psnr, config.seed),
                success: SuccessRate::of(&ssim, SUCCESS_SSIM),
                test_accuracy: c.test_accuracy,
            });
        }
    }
    out
}

fn csv_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn write_csv(rows: &[Row], path: &Path) -> Result<()> {
    let mut text = String::from("variant,role,methods,defence,lr,model,width,state,k,psnr_mean,psnr_ci95,mse_mean,mse_ci95,ssim_mean,ssim_ci95,mse_normalized_mean,mse_normalized_ci95,label_accuracy_mean,label_accuracy_ci95,psnr_median,psnr_q1,psnr_q3,psnr_bootstrap_lo,psnr_bootstrap_hi,success_rate,test_accuracy\n");
    for r in rows {
        let e = |e: &Estimate| format!("{},{}", csv_number(e.mean), csv_number(e.ci95));
        writeln!(
            text,
            "\"{}\",{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.variant,
            r.role,
            r.methods,
            r.defence,
            r.lr,
            r.model,
            r.width.map(|w| w.to_string()).unwrap_or_default(),
            r.state,
            r.k,
            e(&r.psnr),
            e(&r.mse),
            e(&r.ssim),
            e(&r.mse_normalized),
            e(&r.label_accuracy),
            r.psnr_spread.map_or(",,".into(), |s| format!(
                "{},{},{}",
                csv_number(s.median),
                csv_number(s.q1),
                csv_number(s.q3)
            )),
            r.psnr_bootstrap.map_or(",".into(), |i| format!(
                "{},{}",
                csv_number(i.lo),
                csv_number(i.hi)
            )),
            r.success.map(|s| csv_number(s.rate)).unwrap_or_default(),
            r.test_accuracy.map(csv_number).unwrap_or_default()
        )?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// PSNR above which a reconstruction counts as exact (an infinite PSNR, MSE 0, is set to it for
/// the paired tests and medians).
const PSNR_CEILING: f64 = 100.0;
/// SSIM at or above which an attack counts as a success.
pub const SUCCESS_SSIM: f64 = 0.5;
/// Family-wise level of the paired tests (Holm-adjusted over the rows of a table).
const ALPHA: f64 = 0.05;

/// Per-batch PSNR of `cell` in `state`, by client, exact reconstructions at the ceiling.
fn psnr_by_client<'a>(cell: &'a CellResult, state: &str) -> Vec<(&'a str, f64)> {
    cell.attacks
        .iter()
        .filter(|a| a.state == state)
        .map(|a| {
            let psnr = if a.psnr.is_nan() {
                f64::NAN
            } else {
                a.psnr.min(PSNR_CEILING)
            };
            (a.client.as_str(), psnr)
        })
        .collect()
}

/// The per-batch PSNR values of `cell` in `state` ([`psnr_by_client`] without the clients).
fn psnr_values(cell: &CellResult, state: &str) -> Vec<f64> {
    psnr_by_client(cell, state)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The bootstrap 95 % interval of the mean of `values` that the result files and the PSNR
/// chart report ([`BOOTSTRAP_RESAMPLES`] resamples from the comparison's seed).
fn bootstrap95(values: &[f64], seed: u64) -> Option<Interval> {
    bootstrap_mean_interval(values, 0.95, BOOTSTRAP_RESAMPLES, seed)
}

/// `(variant, model, state)` of the cells whose PSNR differs from `none`'s significantly.
type Significant = HashSet<(String, String, &'static str)>;

/// The paired tests of every variant against `none` on the same batches, one table per model
/// and state: median PSNR with quartiles, attack success rate (SSIM ≥ [`SUCCESS_SSIM`]), the
/// median paired PSNR difference, Wilcoxon's two-sided p and its Holm adjustment over the
/// table's rows, and the verdict. Then every splitting set against its matched controls
/// (`none lr×Γ`, `none width/Γ`), which tell a mechanism's effect from a changed effective
/// learning rate or number of distinct units. Returns the markdown and the cells significant
/// against `none`.
fn paired_tests(config: &CompareConfig, cells: &[Located]) -> (String, Significant) {
    let mut md = String::new();
    let mut significant = Significant::new();
    for model in &config.models {
        let slug = model.slug();
        let of_model: Vec<&CellResult> = cells
            .iter()
            .map(|l| &l.result)
            .filter(|c| c.model.slug() == slug)
            .collect();
        let Some(baseline) = of_model.iter().find(|c| c.variant.label == "none") else {
            continue;
        };
        for state in states(config) {
            let others: Vec<&CellResult> = of_model
                .iter()
                .filter(|c| c.variant.label != "none")
                .copied()
                .collect();
            for label in paired_table(&mut md, &slug, state, baseline, &others) {
                significant.insert((label, slug.clone(), state));
            }
        }
    }
    let mut controls_md = String::new();
    for model in &config.models {
        let slug = model.slug();
        let of_model: Vec<&CellResult> = cells
            .iter()
            .map(|l| &l.result)
            .filter(|c| c.model.slug() == slug)
            .collect();
        let matched = of_model.iter().filter(|c| {
            c.variant.role == "width-control"
                || (c.variant.role == "lr-control"
                    && (c.variant.lr - config.lr * config.gamma as f64).abs()
                        <= 1e-12 * c.variant.lr.abs())
        });
        let splitting: Vec<&CellResult> = of_model
            .iter()
            .filter(|c| c.variant.role == "method" && c.variant.methods.splitting)
            .copied()
            .collect();
        if splitting.is_empty() {
            continue;
        }
        for control in matched {
            for state in states(config) {
                paired_table(&mut controls_md, &slug, state, control, &splitting);
            }
        }
    }
    if !controls_md.is_empty() {
        md.push_str(
            "### Against the matched controls\n\nWeight splitting makes the Γ replicas of a \
             connection receive the same gradient, so a split unit moves Γ× faster, and a split \
             model has 1/Γ as many distinct units: each splitting set is also compared, batch by \
             batch, with `none` at lr × Γ and at width / Γ. A difference from `none` that \
             vanishes here is the changed learning rate or width, not the mechanism.\n\n",
        );
        md.push_str(&controls_md);
    }
    (md, significant)
}

/// One table of paired tests: every cell of `others` against `baseline` on the same batches
/// in `state`; returns the labels whose difference is significant after Holm's correction.
fn paired_table(
    md: &mut String,
    slug: &str,
    state: &'static str,
    baseline: &CellResult,
    others: &[&CellResult],
) -> Vec<String> {
    let base = psnr_by_client(baseline, state);
    let mut lines = Vec::new();
    for cell in others {
        let ours = psnr_by_client(cell, state);
        // pairs: the same client's batch under both variants
        let (x, y): (Vec<f64>, Vec<f64>) = ours
            .iter()
            .filter_map(|(client, v)| {
                base.iter()
                    .find(|(b, _)| b == client)
                    .map(|(_, w)| (*v, *w))
            })
            .unzip();
        let ssim: Vec<f64> = cell
            .attacks
            .iter()
            .filter(|a| a.state == state)
            .map(|a| a.ssim)
            .collect();
        let values: Vec<f64> = ours.iter().map(|(_, v)| *v).collect();
        lines.push((
            cell.variant.label.clone(),
            Spread::of(&values),
            SuccessRate::of(&ssim, SUCCESS_SSIM),
            wilcoxon_signed_rank(&x, &y),
        ));
    }
    let mut significant = Vec::new();
    if lines.is_empty() {
        return significant;
    }
    let p: Vec<f64> = lines
        .iter()
        .map(|l| l.3.map_or(f64::NAN, |w| w.p_value))
        .collect();
    let adjusted = holm(&p);
    let _ = writeln!(
        md,
        "### {slug} {state}: against `{}` on the same batches\n\n\
         | variant | PSNR median [quartiles] | success (SSIM ≥ {SUCCESS_SSIM}) | \
         median ΔPSNR | pairs | p | p (Holm) | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---|",
        baseline.variant.label
    );
    for ((label, spread, success, test), adj) in lines.iter().zip(&adjusted) {
        let spread = spread.map_or("—".into(), |s| {
            format!("{:.2} [{:.2}, {:.2}]", s.median, s.q1, s.q3)
        });
        let success = success.map_or("—".into(), |r| {
            format!(
                "{}/{} ({:.0}–{:.0} %)",
                r.successes,
                r.n,
                100.0 * r.interval.lo,
                100.0 * r.interval.hi
            )
        });
        let verdict = match test {
            Some(w) if *adj < ALPHA => {
                significant.push(label.clone());
                if w.median_difference < 0.0 {
                    "**harder to invert**"
                } else {
                    "**easier to invert**"
                }
            }
            Some(_) => "no detectable difference",
            None => "—",
        };
        let _ = writeln!(
            md,
            "| {label} | {spread} | {success} | {} | {} | {} | {} | {verdict} |",
            test.map_or("—".into(), |w| format!("{:+.2}", w.median_difference)),
            test.map_or("—".into(), |w| w.n.to_string()),
            test.map_or("—".into(), |w| format!("{:.3}", w.p_value)),
            if adj.is_finite() {
                format!("{adj:.3}")
            } else {
                "—".into()
            },
        );
    }
    md.push('\n');
    significant
}

/// A Table-3-style table: rows = variants, columns = model × state, `metric` per cell; the most
/// private value per column (lowest PSNR/SSIM, highest MSE) in bold only where that variant's
/// PSNR differs from `none`'s significantly (`significant`, from [`paired_tests`]).
fn attack_table(
    config: &CompareConfig,
    cells: &[Located],
    significant: &Significant,
    title: &str,
    metric: &dyn Fn(&CellResult, &str) -> Estimate,
    lower_is_private: bool,
    digits: usize,
) -> String {
    let models: Vec<String> = config.models.iter().map(|m| m.slug()).collect();
    let columns: Vec<(String, &str)> = models
        .iter()
        .flat_map(|m| states(config).into_iter().map(move |s| (m.clone(), s)))
        .collect();
    let mut variants: Vec<&str> = Vec::new();
    for l in cells {
        if !variants.contains(&l.result.variant.label.as_str()) {
            variants.push(&l.result.variant.label);
        }
    }
    let value = |variant: &str, (model, state): &(String, &str)| {
        cells
            .iter()
            .find(|l| l.result.variant.label == variant && l.result.model.slug() == *model)
            .map(|l| metric(&l.result, state))
    };
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|col| {
            let vals = variants
                .iter()
                .filter_map(|v| value(v, col))
                .map(|e| e.mean)
                .filter(|m| m.is_finite());
            if lower_is_private {
                vals.reduce(f64::min)
            } else {
                vals.reduce(f64::max)
            }
        })
        .collect();
    let mut t = format!("### {title}\n\n| variant |");
    for (m, s) in &columns {
        let _ = write!(t, " {m} {s} |");
    }
    t.push_str("\n|---|");
    for _ in &columns {
        t.push_str("---:|");
    }
    t.push('\n');
    for v in &variants {
        let _ = write!(t, "| {v} |");
        for (col, b) in columns.iter().zip(&best) {
            let detectable = significant.contains(&(v.to_string(), col.0.clone(), col.1));
            match value(v, col) {
                Some(e) if Some(e.mean) == *b && detectable => {
                    let _ = write!(t, " **{}** |", e.display(digits));
                }
                Some(e) => {
                    let _ = write!(t, " {} |", e.display(digits));
                }
                None => t.push_str(" — |"),
            }
        }
        t.push('\n');
    }
    t
}

/// Writes every output of a finished privacy comparison into `out`.
pub fn write(
    config: &CompareConfig,
    cells: &[Located],
    missing: &[String],
    out: &Path,
    command: &str,
    train_examples: usize,
) -> Result<()> {
    let rows = rows(config, cells);
    write_csv(&rows, &out.join("results.csv"))?;
    let json = serde_json::json!({ "config": config, "command": command, "rows": rows });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )
    .with_context(|| format!("writing {}", out.join("results.json").display()))?;
    let pictures = out.join("pictures");
    std::fs::create_dir_all(&pictures)
        .with_context(|| format!("creating {}", pictures.display()))?;

    let mut md = String::from("# synfed compare: privacy of method combinations\n\n");
    let _ = writeln!(md, "Command: `{command}`\n");
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "**Interim report: {} cells are not finished** ({}); the tables below hold the \
             finished ones.\n",
            missing.len(),
            missing.join(", ")
        );
    }
    md.push_str(&protocol(config));
    let (paired, significant) = paired_tests(config, cells);
    md.push_str("## Attack success\n\n");
    md.push_str(&attack_table(
        config,
        cells,
        &significant,
        "PSNR of the reconstructions (dB; lower = more private)",
        &|c, s| c.estimate(s, |a| a.psnr),
        true,
        2,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        &significant,
        "MSE of the reconstructions (images in [0, 1]; higher = more private)",
        &|c, s| c.estimate(s, |a| a.mse),
        false,
        4,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        &significant,
        "MSE in the normalised input space (the paper's Table 3 quantity; higher = more private)",
        &|c, s| c.estimate(s, |a| a.mse_normalized),
        false,
        3,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        &significant,
        "SSIM (lower = more private)",
        &|c, s| c.estimate(s, |a| a.ssim),
        true,
        3,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        &significant,
        "Label accuracy of the attacker (lower = more private)",
        &|c, s| c.estimate(s, |a| a.label_accuracy),
        true,
        2,
    ));
    md.push('\n');

    md.push_str(
        "## Paired tests\n\nEvery variant attacks the same batches as `none`, so each variant is \
         compared with `none` batch by batch: Wilcoxon's signed-rank test of the per-batch PSNR \
         (exact reconstructions at 100 dB), two-sided, Holm-adjusted over the rows of each table; \
         a verdict only where the adjusted p < 0.05, otherwise \"no detectable difference\". \
         Attack success: SSIM ≥ 0.5, with Wilson's 95 % interval. The tables above bold a most \
         private value only where it is such a significant difference.\n\n",
    );
    md.push_str(&paired);
    md.push_str(&convergence(cells));
    if config.paper_table3 {
        md.push_str(&crate::paper_table3::side_by_side(config, cells));
    }
    if config.kind == Kind::Inversion {
        md.push_str(&held_out_accuracy(config, cells));
    }
    if config.kind == Kind::Privacy && config.rounds > 0 {
        let _ = writeln!(
            md,
            "## Utility: test accuracy after {} rounds\n",
            config.rounds
        );
        md.push_str("| variant |");
        for m in &config.models {
            let _ = write!(md, " {} |", m.slug());
        }
        let _ = write!(md, " ε at δ = {} |", crate::compare::DELTA);
        md.push_str("\n|---|");
        for _ in &config.models {
            md.push_str("---:|");
        }
        md.push_str("---:|\n");
        let mut seen: Vec<&str> = Vec::new();
        for l in cells {
            let v = l.result.variant.label.as_str();
            if seen.contains(&v) {
                continue;
            }
            seen.push(v);
            let _ = write!(md, "| {v} |");
            for m in &config.models {
                let acc = cells
                    .iter()
                    .find(|x| x.result.variant.label == v && x.result.model.slug() == m.slug())
                    .and_then(|x| x.result.test_accuracy);
                match acc {
                    Some(a) => {
                        let _ = write!(md, " {:.2} % |", 100.0 * a);
                    }
                    None => md.push_str(" — |"),
                }
            }
            let defence = &l.result.variant.defence;
            match epsilon_of(config, defence, train_examples) {
                Some(eps) => {
                    let _ = writeln!(md, " {eps:.2} |");
                }
                None => md.push_str(" — |\n"),
            }
        }
        md.push_str("\nε: Rényi-DP accountant of the sampled Gaussian mechanism, for per-example clipping and noise only (a client's batch is sampled from its share each round); other variants give no record-level guarantee.\n\n");
        md.push_str(&plots(config, cells, &pictures)?);
    }

    md.push_str("## Pictures\n\nThe batch of client 0 (top row, labelled `truth`) and its reconstruction under each variant (one row below it per variant, labelled with the variant; for batches of one image: one labelled column each, the truth first).\n\n");
    for m in &config.models {
        for state in states(config) {
            let name = format!("grid-{}-{state}.png", m.slug());
            let model_cells: Vec<&Located> = cells
                .iter()
                .filter(|l| l.result.model.slug() == m.slug())
                .collect();
            if compose_grid(&model_cells, state, &pictures.join(&name))? {
                let _ = writeln!(
                    md,
                    "**{} {state}**\n\n![{name}](pictures/{name})\n",
                    m.slug()
                );
            }
        }
        if config.kind == Kind::Privacy && config.rounds > 0 {
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
            let _ = writeln!(md, "![{name}](pictures/{name}.png)\n");
        }
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))
}

/// The paragraph that says how the cells were computed.
fn protocol(config: &CompareConfig) -> String {
    let values = format!(
        "Values: mean ± 95 % confidence half-width over the K = {} attacked batches \\n         (Student's t); the paired tests below say which differences are real. Bold: the most \\n         private value per column where it differs significantly from `none`.",
        config.batches
    );
    match config.kind {
        Kind::Inversion => {
            let data = match config.held_out {
                Some(n) => format!(
                    "the test split of `{}` only: its images 0 … {} are held out (attacked and \\n                     tested on, never trained on), the rest is the training split",
                    config.data,
                    n - 1
                ),
                None => format!("`{}`", config.data),
            };
            let trained = if config.pretrain_epochs > 0 {
                format!(
                    "and after {} epochs of centralized training (SGD with the variant's \\n                     mechanisms, lr {} × the variant's factor, batch {}; **trained**)",
                    config.pretrain_epochs, config.learning.lr, config.learning.batch_size
                )
            } else {
                String::new()
            };
            format!(
                "Protocol of the paper's Table 3 (no federation): data {data}. Each model is \\n                 built from seed {} with the variant's methods and attacked freshly \\n                 initialised (**untrained**) {trained}: the FedSGD gradient of each of K = {} \\n                 consecutive held-out batches of {} images (images 0 … {}) is computed with \\n                 BatchNorm in `{}` mode (`eval` = running statistics, the reference attack's \\n                 protocol; `train` = batch statistics, what federated clients compute), labels \\n                 {}, and inverted ({} iterations, {} restart(s), the reference settings). \\n                 Untrained rows that differ from an earlier row only by I, II or the \
                 learning rate reuse that row's attacks: before the first step their model, \
                 gradient and attack are bit-identical (I and II act on optimizer steps). \
                 {values}\n\n",
                config.seed,
                config.batches,
                config.batch_size,
                config.batches * config.batch_size - 1,
                config.bn_mode,
                if config.expose_labels {
                    "given to the attacker"
                } else {
                    "recovered by the attacker"
                },
                config.attack_iterations,
                config.attack_restarts,
            )
        }
        _ => format!(
            "Data `{}`, {} clients ({} split), {} federation, lr {}, batch {}; seed {} for every \\n             cell (model initialisation, partition, batches, attacker). Each cell is a \\n             federation whose tap captures clients 0 … {} in round 1 (**untrained**) and, \\n             after {} rounds, in round {} (**trained**); clients compute with BatchNorm in \\n             `{}` mode; every capture is attacked ({} iterations, {} restart(s)) and scored \\n             against the client's true batch. {values}\n\n",
            config.data,
            config.clients,
            config.split,
            config.algorithm,
            config.lr,
            config.batch_size,
            config.seed,
            config.batches - 1,
            config.rounds,
            config.rounds + 1,
            config.bn_mode,
            config.attack_iterations,
            config.attack_restarts,
        ),
    }
}

/// Cells whose attacks ended with the objective still falling (more iterations might have
/// reconstructed more).
fn convergence(cells: &[Located]) -> String {
    let mut lines = Vec::new();
    let mut recorded = 0;
    for l in cells {
        let c = &l.result;
        recorded += c.attacks.iter().filter(|a| a.converged.is_some()).count();
        let falling: Vec<String> = c
            .attacks
            .iter()
            .filter(|a| a.converged == Some(false))
            .map(|a| {
                format!(
                    "{} {} ({:.1} %)",
                    a.state,
                    a.client,
                    100.0 * a.final_descent.unwrap_or(f64::NAN)
                )
            })
            .collect();
        if !falling.is_empty() {
            lines.push(format!(
                "| {} | {} | {} of {} | {} |",
                c.model.slug(),
                c.variant.label,
                falling.len(),
                c.attacks.len(),
                falling.join(", ")
            ));
        }
    }
    let mut md = String::from("## Convergence of the attacks\n\n");
    if recorded == 0 {
        md.push_str("Not recorded for these cells.\n\n");
        return md;
    }
    let _ = writeln!(
        md,
        "An attack counts as not converged when its objective still fell by more than {:.0} % \\n         over its last quarter of iterations (median of the last 5 % against the 5 % before \\n         that quarter).\n",
        100.0 * synfed_attack::inversion::STILL_FALLING
    );
    if lines.is_empty() {
        md.push_str("Every attack converged.\n\n");
    } else {
        md.push_str("| model | variant | not converged | attacks (fall over the last quarter) |\n|---|---|---:|---|\n");
        for line in lines {
            md.push_str(&line);
            md.push('\n');
        }
        md.push('\n');
    }
    md
}

/// `--kind inversion`: the attacked models' accuracy on the held-out images.
fn held_out_accuracy(config: &CompareConfig, cells: &[Located]) -> String {
    let mut md = String::from("## Utility: test accuracy of the attacked models\n\n");
    md.push_str(
        "On the test split (the held-out images); untrained models sit at chance.\n\n| variant |",
    );
    let states = config.states();
    for m in &config.models {
        for state in &states {
            let _ = write!(md, " {} {state} |", m.slug());
        }
    }
    md.push_str(" training time |\n|---|");
    for _ in 0..config.models.len() * states.len() {
        md.push_str("---:|");
    }
    md.push_str("---:|\n");
    let mut seen: Vec<&str> = Vec::new();
    for l in cells {
        let v = l.result.variant.label.as_str();
        if seen.contains(&v) {
            continue;
        }
        seen.push(v);
        let _ = write!(md, "| {v} |");
        let mut training = 0.0;
        for m in &config.models {
            let cell = cells
                .iter()
                .find(|x| x.result.variant.label == v && x.result.model.slug() == m.slug());
            training += cell.and_then(|x| x.result.training_seconds).unwrap_or(0.0);
            for state in &states {
                let acc = cell.and_then(|x| match *state {
                    "untrained" => x.result.untrained_accuracy,
                    _ => x.result.test_accuracy,
                });
                match acc {
                    Some(a) => {
                        let _ = write!(md, " {:.2} % |", 100.0 * a);
                    }
                    None => md.push_str(" — |"),
                }
            }
        }
        let _ = writeln!(md, " {:.0} s |", training);
    }
    md.push('\n');
    md
}

/// The PSNR-by-variant chart (bootstrap 95 % interval whiskers) and the privacy–utility chart;
/// returns their markdown.
fn plots(config: &CompareConfig, cells: &[Located], pictures: &Path) -> Result<String> {
    let mut variants: Vec<String> = Vec::new();
    for l in cells {
        if !variants.contains(&l.result.variant.label) {
            variants.push(l.result.variant.label.clone());
        }
    }
    let mut series = Vec::new();
    for m in &config.models {
        for state in states(config) {
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
        title: "Attack success by variant (mean, bootstrap 95 % interval)".into(),
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
        title: "Privacy against utility (trained models)".into(),
        x_label: "test accuracy [%]".into(),
        y_label: "reconstruction PSNR [dB] (lower = more private)".into(),
        points,
        series_names: config.models.iter().map(|m| m.slug()).collect(),
    };
    write_png(&utility, &pictures.join("privacy_utility.png"), 1000, 700)?;
    write_svg(&utility, &pictures.join("privacy_utility.svg"), 1000, 700)?;
    Ok("## Plots\n\n![PSNR by variant](pictures/psnr.png)\n\n![privacy against utility](pictures/privacy_utility.png)\n\n".into())
}

/// The labelled grid of client 0's batch in `state`: a `truth` row, then one row per cell
/// labelled with its variant, from the cells' attack PNGs (for batches of one image: one
/// labelled column each instead). Rows without pictures and pictures of another size than the
/// first are left out. Returns false when there is nothing to show.
fn compose_grid(cells: &[&Located], state: &str, path: &Path) -> Result<bool> {
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

/// One row of the learning comparison.
#[derive(Serialize)]
pub struct LearningRow {
    pub model: String,
    pub methods: String,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub epoch_mean: f64,
    pub epoch_std: f64,
}

/// Writes `results.csv`, `results.json` and `report.md` of `--kind learning`.
pub fn write_learning(
    config: &CompareConfig,
    rows: &[LearningRow],
    out: &Path,
    command: &str,
) -> Result<()> {
    let mut csv =
        String::from("model,methods,test_accuracy_mean,test_accuracy_std,epoch_mean,epoch_std\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            r.model, r.methods, r.accuracy_mean, r.accuracy_std, r.epoch_mean, r.epoch_std
        );
    }
    std::fs::write(out.join("results.csv"), csv)?;
    let json = serde_json::json!({ "config": config, "command": command, "rows": rows });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let l = &config.learning;
    let mut md = String::from("# synfed compare: learning (paper Tables 1–2)\n\n");
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "Centralized training on `{}`, {} folds × at most {} epochs, lr {}, batch {}, early stopping \
         with patience {}; seed {}. Test accuracy at the early-stopping epoch and that epoch, mean ± \
         standard deviation over the folds.\n",
        config.data, l.folds, l.epochs, l.lr, l.batch_size, l.patience, config.seed
    );
    md.push_str(
        "| model | methods | test accuracy (%) | early-stopping epoch |\n|---|---|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} ± {:.2} | {:.1} ± {:.1} |",
            r.model,
            r.methods,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std,
            r.epoch_mean,
            r.epoch_std
        );
    }
    std::fs::write(out.join("report.md"), md)?;
    Ok(())
}
