//! What the compared variants cost and guarantee besides their privacy against the attack:
//! the federations' test accuracy after training, with ε of the record-level DP defences, and
//! (`--kind inversion`) the attacked models' accuracy on the held-out images.

use crate::comparison::collect::Located;
use crate::comparison::config::CompareConfig;
use std::fmt::Write as _;
use synfed_defence::Defence;

/// The test accuracy of the trained state's model per variant and model — after `rounds`
/// rounds, from a model pretrained for `pretrain_epochs` epochs when there is one — and ε of
/// each variant's defence (`train_examples`: size of the training split the clients share).
pub fn after_rounds(config: &CompareConfig, cells: &[Located], train_examples: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Utility: {}\n", trained_state(config));
    md.push_str("| variant |");
    for m in &config.models {
        let _ = write!(md, " {} |", m.slug());
    }
    let _ = write!(md, " ε at δ = {DELTA} |");
    md.push_str("\n|---|");
    for _ in &config.models {
        md.push_str("---:|");
    }
    md.push_str("---:|\n");
    for v in super::measures::variant_labels(cells) {
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
        let defence = cells
            .iter()
            .find(|x| x.result.variant.label == v)
            .map_or("none", |x| x.result.variant.defence.as_str());
        match epsilon_of(config, defence, train_examples) {
            Some(eps) => {
                let _ = writeln!(md, " {eps:.2} |");
            }
            None => md.push_str(" — |\n"),
        }
    }
    md.push_str("\nε: Rényi-DP accountant of the sampled Gaussian mechanism, for per-example clipping and noise only (a client's batch is sampled from its share each round); other variants give no record-level guarantee.\n\n");
    md
}

/// What the test accuracy of a privacy comparison's trained state measures.
fn trained_state(config: &CompareConfig) -> String {
    match (config.pretrain_epochs, config.rounds) {
        (0, rounds) => format!("test accuracy after {rounds} rounds"),
        (epochs, 0) => format!(
            "test accuracy of the trained state (the model pretrained for {epochs} centralized \
             epochs that the trained federation starts from; the defences act on the \
             federation's updates, not on the pretraining)"
        ),
        (epochs, rounds) => format!(
            "test accuracy after {epochs} centralized epochs of pretraining and {rounds} rounds \
             (the defences act on the federation's updates, not on the pretraining)"
        ),
    }
}

/// `--kind inversion`: the attacked models' accuracy on the held-out images.
pub fn held_out_accuracy(config: &CompareConfig, cells: &[Located]) -> String {
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
    for v in super::measures::variant_labels(cells) {
        let _ = write!(md, "| {v} |");
        let mut training = Some(0.0);
        for m in &config.models {
            let cell = cells
                .iter()
                .find(|x| x.result.variant.label == v && x.result.model.slug() == m.slug());
            if let Some(x) = cell {
                // a cell whose training time is unknown (a reused model without its record)
                training = training.zip(x.result.training_seconds).map(|(a, b)| a + b);
            }
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
        match training {
            Some(t) => {
                let _ = writeln!(md, " {t:.0} s |");
            }
            None => md.push_str(" — |\n"),
        }
    }
    md.push('\n');
    md
}

/// δ of the (ε, δ) guarantees reported for DP defences.
pub const DELTA: f64 = 1e-5;

/// ε at [`DELTA`] of a record-level DP defence (per-example clipping and noise) in a cell:
/// each round a client's gradient uses a batch of `batch_size` of its ~n/clients examples
/// (sampling rate q), over the run's rounds. `None` for other defences, which give no
/// record-level guarantee (per-batch clipping bounds a whole batch, not one example).
pub fn epsilon_of(c: &CompareConfig, defence: &str, train_examples: usize) -> Option<f64> {
    let dp = defence.parse::<Defence>().ok()?.dp?;
    if !dp.per_example || dp.sigma <= 0.0 {
        return None;
    }
    let share = (train_examples / c.clients.max(1)).max(1);
    let q = (c.batch_size as f64 / share as f64).min(1.0);
    let steps = if c.rounds > 0 { c.rounds + 1 } else { 1 };
    synfed_defence::accountant::epsilon(q, dp.sigma, steps, DELTA)
        .ok()
        .map(|(eps, _)| eps)
}
