//! The paper's Table 3 (reconstruction MSE in percent, CIFAR-100, batches of eight), so that a
//! `--kind inversion` report can set synfed's values beside it.
//!
//! The paper's text lost the table's check marks. Its rows are read in the order of its Table 1
//! (none, III, II, II+III, I, I+III, I+II, I+II+III — [`MethodSet::paper_order`]): that order
//! fits the text's "weight splitting alone improves the MSE" (MLP 3.47 → 30.21 %) and the
//! all-methods maximum (ResNet32 135.35 / 155.43 %). Two inconsistencies remain and are stated
//! in every report: under this mapping the I row (55.53 % on the untrained MLP) contradicts the
//! text's "fuzzy learning rates alone do not improve the MSE without training", and the II and
//! I+II rows give ResNet20 the same two values (59.07, 62.21).

use super::cell_result::CellResult;
use super::collect::Located;
use super::config::CompareConfig;
use std::fmt::Write as _;
use synfed_models::Arch;
use synfed_synapse::MethodSet;

/// The paper's architectures, in its column order.
const MODELS: [Arch; 4] = [Arch::Mlp, Arch::AlexNet, Arch::ResNet20, Arch::ResNet32];

/// MSE [%] per row of [`MethodSet::paper_order`]: (untrained, trained 100 epochs) for MLP,
/// AlexNet, ResNet20, ResNet32.
const VALUES: [[(f64, f64); 4]; 8] = [
    [(3.47, 3.62), (0.22, 0.20), (62.20, 73.65), (70.78, 79.61)],
    [
        (30.21, 31.26),
        (28.30, 30.33),
        (88.76, 89.19),
        (94.31, 94.71),
    ],
    [(3.06, 4.31), (0.26, 0.21), (59.07, 62.21), (70.58, 81.14)],
    [
        (41.42, 45.04),
        (28.38, 39.06),
        (75.93, 85.49),
        (81.34, 84.37),
    ],
    [
        (55.53, 60.05),
        (42.11, 46.96),
        (49.93, 50.05),
        (75.47, 78.71),
    ],
    [
        (42.70, 58.73),
        (94.47, 96.85),
        (81.68, 86.74),
        (97.31, 102.43),
    ],
    [
        (47.74, 55.30),
        (35.43, 53.60),
        (59.07, 62.21),
        (94.52, 107.36),
    ],
    [
        (49.65, 64.84),
        (101.79, 112.85),
        (124.21, 132.17),
        (135.35, 155.43),
    ],
];

/// The paper's MSE [%] for `methods` on `arch` in `state`, if the table has it.
pub fn paper_value(arch: Arch, methods: MethodSet, state: &str) -> Option<f64> {
    let column = MODELS.iter().position(|a| *a == arch)?;
    let row = MethodSet::paper_order()
        .iter()
        .position(|m| *m == methods)?;
    let (untrained, trained) = VALUES[row][column];
    match state {
        "untrained" => Some(untrained),
        "trained" => Some(trained),
        _ => None,
    }
}

/// synfed's value in the paper's unit: the mean over the attacked batches of the MSE in the
/// normalised input space, in percent.
pub fn synfed_value(cell: &CellResult, state: &str) -> Option<f64> {
    let values: Vec<f64> = cell
        .attacks
        .iter()
        .filter(|a| a.state == state)
        .map(|a| a.mse_normalized)
        .collect();
    (!values.is_empty()).then(|| 100.0 * values.iter().sum::<f64>() / values.len() as f64)
}

/// Whether synfed and the paper move the same way from `none` (1 = up, −1 = down; a change
/// under 1 % of the baseline's value counts as none, 0).
fn direction(value: f64, baseline: f64) -> i8 {
    let change = value - baseline;
    if change.abs() <= 0.01 * baseline.abs() {
        0
    } else if change > 0.0 {
        1
    } else {
        -1
    }
}

/// The side-by-side section of the report: per model and state, synfed's value, the paper's,
/// and whether the direction of the effect against `none` agrees.
pub fn side_by_side(config: &CompareConfig, cells: &[Located]) -> String {
    let mut md = String::from("## The paper's Table 3 beside synfed\n\n");
    md.push_str(
        "MSE of the reconstruction in the normalised input space, in percent (the paper's \
         measure), mean over the attacked batches. synfed matches each reconstruction to the \
         true image it resembles most before scoring (the reference scores in label order; \
         with the labels given and distinct, the two agree). ↑/↓/= : the change from `none` \
         in the same column (a change under 1 % of `none`'s value is =); ✓ where synfed's \
         direction equals the paper's, ✗ where it does not.\n\n\
         The paper's rows are read in its Table 1 order (none, III, II, II+III, I, I+III, \
         I+II, I+II+III), which fits its text on III and on all methods; under that reading \
         its I row (55.53 % on the untrained MLP) contradicts the text's \"fuzzy learning \
         rates alone do not improve the MSE without training\", and its II and I+II rows give \
         ResNet20 identical values (59.07, 62.21). Note also that I (fuzzy learning rates) \
         and II (rejuvenation) act on optimizer steps: an untrained model's FedSGD gradient \
         is the same with or without them, so synfed's untrained I, II and I+II rows equal \
         `none` up to the attack's own randomness, while the paper's differ — which needs \
         another cause (a different initialisation per run, for instance).\n\n",
    );
    let arrow = |d: i8| match d {
        1 => "↑",
        -1 => "↓",
        _ => "=",
    };
    for state in config.states() {
        let models: Vec<_> = config
            .models
            .iter()
            .filter(|m| MODELS.contains(&m.arch) && m.width.is_none())
            .collect();
        if models.is_empty() {
            continue;
        }
        let _ = write!(md, "### {state}\n\n| methods |");
        for m in &models {
            let _ = write!(md, " {} synfed | {} paper |", m.slug(), m.slug());
        }
        md.push_str("\n|---|");
        for _ in &models {
            md.push_str("---:|---:|");
        }
        md.push('\n');
        let (mut agree, mut compared) = (0usize, 0usize);
        for methods in MethodSet::paper_order() {
            let _ = write!(md, "| {methods} |");
            for m in &models {
                let find = |methods: MethodSet| {
                    cells.iter().find(|l| {
                        l.result.model == **m
                            && l.result.variant.role == "method"
                            && l.result.variant.methods == methods
                    })
                };
                let ours = find(methods).and_then(|l| synfed_value(&l.result, state));
                let base = find(MethodSet::NONE).and_then(|l| synfed_value(&l.result, state));
                let paper = paper_value(m.arch, methods, state);
                let paper_base = paper_value(m.arch, MethodSet::NONE, state);
                let ours_text = match (ours, base) {
                    (Some(v), Some(b)) if methods != MethodSet::NONE => {
                        format!("{v:.2} {}", arrow(direction(v, b)))
                    }
                    (Some(v), _) => format!("{v:.2}"),
                    (None, _) => "—".into(),
                };
                let paper_text = match (paper, paper_base, ours, base) {
                    (Some(p), Some(pb), Some(v), Some(b)) if methods != MethodSet::NONE => {
                        let same = direction(p, pb) == direction(v, b);
                        compared += 1;
                        agree += usize::from(same);
                        format!(
                            "{p:.2} {} {}",
                            arrow(direction(p, pb)),
                            if same { "✓" } else { "✗" }
                        )
                    }
                    (Some(p), _, _, _) => format!("{p:.2}"),
                    (None, ..) => "—".into(),
                };
                let _ = write!(md, " {ours_text} | {paper_text} |");
            }
            md.push('\n');
        }
        let _ = writeln!(
            md,
            "\nDirection of the effect against `none` agrees in {agree} of {compared} compared \
             cells ({state}).\n"
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_in_table_1_order() {
        let set = |s: &str| s.parse::<MethodSet>().unwrap();
        assert_eq!(
            paper_value(Arch::Mlp, MethodSet::NONE, "untrained"),
            Some(3.47)
        );
        assert_eq!(paper_value(Arch::Mlp, set("III"), "untrained"), Some(30.21));
        assert_eq!(paper_value(Arch::Mlp, set("I"), "untrained"), Some(55.53));
        assert_eq!(
            paper_value(Arch::AlexNet, MethodSet::NONE, "trained"),
            Some(0.20)
        );
        assert_eq!(
            paper_value(Arch::ResNet32, set("I+II+III"), "untrained"),
            Some(135.35)
        );
        assert_eq!(
            paper_value(Arch::ResNet32, set("I+II+III"), "trained"),
            Some(155.43)
        );
        assert_eq!(
            paper_value(Arch::ResNet20, set("II+III"), "trained"),
            Some(85.49)
        );
        assert_eq!(paper_value(Arch::ConvNet, MethodSet::NONE, "trained"), None);
        assert_eq!(paper_value(Arch::Mlp, MethodSet::NONE, "halfway"), None);
    }

    #[test]
    fn directions_ignore_changes_under_one_percent() {
        assert_eq!(direction(30.21, 3.47), 1);
        assert_eq!(direction(3.06, 3.47), -1);
        assert_eq!(direction(3.48, 3.47), 0);
        assert_eq!(direction(100.5, 100.0), 0);
        assert_eq!(direction(98.0, 100.0), -1);
    }
}
