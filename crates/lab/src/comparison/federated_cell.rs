//! A cell of a privacy comparison: one federated run of the very same server, clients and tap
//! as `synfed simulate`. The tap captures K clients' updates in round 1 (the **untrained**
//! model) and, after R rounds of training, in round R + 1 (the **trained** model); the attacker
//! inverts each capture and scores it against the client's escrow. Every cell shares the seed,
//! the partition and the attacker's seed, so the K attacked batches are the same images in
//! every cell and two cells differ only in what is compared.
//!
//! The `imprint` attacker is a malicious server, another threat model: it runs federations of
//! its own ([`imprint_federations`]), the same as the honest ones up to the captured round, in
//! which the tapped clients are sent an imprinted model.

use super::applicability::split_applicable;
use super::cell_result::{finished_or_prepare, AttackRecord, CellResult, Skipped};
use super::config::{parse_defence, CompareConfig};
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use super::progress::ComparisonProgress;
use crate::pretraining::{pretrained, Pretraining};
use crate::simulation::{federate, Fleet};
use candle_core::{DType, Device};
use std::path::Path;
use std::time::Instant;
use synfed_attack::AttackKind;
use synfed_models::evaluate;
use synfed_server::config::TapMode;
use synfed_server::{read_rounds, RunConfig};

/// Runs one cell (or reads it if it is finished) into its folder under `out`.
pub(super) fn run(
    c: &CompareConfig,
    cell: &Cell,
    out: &Path,
    device: &Device,
    progress: &dyn ComparisonProgress,
) -> Result<CellResult> {
    let dir = cell.dir(out);
    // a restarted cell keeps its (partial) pretraining and its finished attacks; its
    // federations run again (deterministic: the same captures, which the attacks check)
    if let Some(done) = finished_or_prepare(&dir, &["pretraining", "attack"])? {
        return Ok(done);
    }
    let started = Instant::now();
    parse_defence(&cell.variant.defence)?;
    let fleet = Fleet::new(c.clients, c.split);
    let pretrained = if c.pretrain_epochs > 0 {
        Some(pretrain(c, cell, &dir, device, progress)?)
    } else {
        None
    };
    // (state, folder of its captures, the round captured, whether a malicious server ran it)
    let mut states: Vec<(&str, std::path::PathBuf, u64, bool)> = Vec::new();
    let mut trained_records = Vec::new();
    let mut first_run = None;
    for federation in federations(c, cell, &dir, pretrained.as_ref()) {
        let (records, captures) = federate_cell(cell, &federation, &fleet, device)?;
        for (state, round) in federation.states {
            states.push((state, captures.clone(), round, false));
            if state == "trained" {
                trained_records = records.clone();
            }
        }
        first_run.get_or_insert(federation.run);
    }
    let Some(run) = first_run else {
        return Err(ComparisonError::Invalid(
            "a cell without a federation".into(),
        ));
    };
    let (runs, skipped) = {
        let (_, captures, round, _) = &states[0];
        applicable(
            c,
            &captures.join(synfed_wire::capture_file_name(*round, &Fleet::name(0))),
            device,
        )?
    };
    // a malicious server's federations of the same cell: the clients it targets get an
    // imprinted model in the captured round
    if runs.contains(&AttackKind::Imprint) {
        for federation in imprint_federations(c, cell, &dir, pretrained.as_ref()) {
            let (_, captures) = federate_cell(cell, &federation, &fleet, device)?;
            for (state, round) in federation.states {
                states.push((state, captures.clone(), round, true));
            }
        }
    }
    let attacked = |malicious: bool| -> Vec<AttackKind> {
        runs.iter()
            .copied()
            .filter(|a| a.is_malicious() == malicious)
            .collect()
    };
    let total: usize = states
        .iter()
        .map(|(_, _, _, malicious)| c.batches * attacked(*malicious).len())
        .sum();
    let work = progress.cell_work(cell, total as u64, "attacks");
    let mut attacks = Vec::new();
    for (state, captures, round, malicious) in states {
        for k in 0..c.batches {
            let client = Fleet::name(k);
            let capture = captures.join(synfed_wire::capture_file_name(round, &client));
            let escrow = captures.join(synfed_wire::escrow_file_name(round, &client));
            for attack in attacked(malicious) {
                let target = c
                    .attack_root(&dir, attack)
                    .join(format!("{state}-{client}"));
                let described = serde_json::json!({
                    "comparison": c,
                    "model": cell.model,
                    "variant": cell.variant,
                    "capture": capture,
                });
                let outcome = crate::finished_attack::attack_files_or_reuse(
                    &c.attack_options(attack),
                    &capture,
                    &escrow,
                    &target,
                    device,
                    &described,
                    |_, _, _| {},
                )
                .map_err(|e| ComparisonError::Attack {
                    capture: capture.clone(),
                    source: Box::new(e),
                })?;
                attacks.push(AttackRecord::of(state, client.clone(), attack, &outcome));
                work.step();
            }
        }
    }
    drop(work);
    let accuracy_curve: Vec<(u64, f64)> = trained_records
        .iter()
        .map(|r| (r.round, r.test_accuracy))
        .collect();
    // the trained state's model: after round R, or the pretrained model itself when R = 0
    let test_accuracy = match (&pretrained, c.rounds) {
        (Some(p), 0) => Some(p.accuracy),
        (_, 0) => None,
        (_, rounds) => trained_records
            .iter()
            .find(|r| r.round == rounds)
            .map(|r| r.test_accuracy),
    };
    let result = CellResult {
        model: cell.model.clone(),
        variant: cell.variant.clone(),
        width: run.model.width,
        attacks,
        test_accuracy,
        untrained_accuracy: None,
        accuracy_curve,
        same_as: None,
        training_seconds: pretrained.as_ref().and_then(|p| p.seconds),
        seconds: started.elapsed().as_secs_f64(),
        skipped,
    };
    result.finish(&dir)?;
    Ok(result)
}

/// Runs one federation of `cell`; returns its rounds and the folder of its captures.
fn federate_cell(
    cell: &Cell,
    federation: &Federation,
    fleet: &Fleet,
    device: &Device,
) -> Result<(Vec<synfed_server::RoundRecord>, std::path::PathBuf)> {
    tracing::info!(
        "cell {} / {}: federating ({}{})",
        cell.model.slug(),
        cell.variant.label,
        federation
            .states
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(", "),
        if federation.run.tap.mode == TapMode::Imprint {
            ", malicious server"
        } else {
            ""
        }
    );
    // no shutdown of its own: an interrupted comparison is resumed, and this cell redone
    let summary = federate(
        federation.run.clone(),
        fleet,
        device,
        std::future::pending(),
    )?;
    if !summary.complete {
        return Err(ComparisonError::Stopped);
    }
    let records =
        read_rounds(&federation.run.out.join("rounds.csv")).map_err(crate::LabError::from)?;
    Ok((records, federation.run.out.join("captures")))
}

/// The comparison's attacks that apply to the model of the capture `first` (in the
/// comparison's order), and those that do not, with the reason.
fn applicable(
    c: &CompareConfig,
    first: &Path,
    device: &Device,
) -> Result<(Vec<AttackKind>, Vec<Skipped>)> {
    let model = synfed_wire::Capture::load(first, device)
        .and_then(|capture| capture.model(DType::F32, device))
        .map_err(|e| ComparisonError::Attack {
            capture: first.to_path_buf(),
            source: Box::new(crate::LabError::from(e)),
        })?;
    Ok(split_applicable(c, &model))
}

/// One federation of a cell: its run configuration and the states it captures (state, round).
struct Federation {
    run: RunConfig,
    states: Vec<(&'static str, u64)>,
}

/// The federations of a cell. Without pretraining one: the untrained state captured in round
/// 1, the trained one in round R + 1 after R rounds. With pretraining two: a fresh model's
/// round 1 (untrained, in `run/`), and a federation started from the pretrained model
/// (`initial_model`) whose round R + 1 is captured (trained, in `run-trained/`).
fn federations(
    c: &CompareConfig,
    cell: &Cell,
    dir: &Path,
    pretrained: Option<&Pretrained>,
) -> Vec<Federation> {
    let Some(p) = pretrained else {
        let mut run = run_config(c, cell, &dir.join("run"), c.rounds);
        let mut states = vec![("untrained", 1)];
        if c.rounds > 0 {
            states.push(("trained", c.rounds + 1));
        }
        run.tap.rounds = states.iter().map(|(_, r)| *r).collect();
        return vec![Federation { run, states }];
    };
    let mut fresh = run_config(c, cell, &dir.join("run"), 0);
    fresh.tap.rounds = vec![1];
    let mut trained = run_config(c, cell, &dir.join("run-trained"), c.rounds);
    trained.initial_model = Some(p.path.clone());
    trained.tap.rounds = vec![c.rounds + 1];
    vec![
        Federation {
            run: fresh,
            states: vec![("untrained", 1)],
        },
        Federation {
            run: trained,
            states: vec![("trained", c.rounds + 1)],
        },
    ]
}

/// The federations of a cell's malicious server (attack `imprint`), one per state so that each
/// is the honest federation up to the captured round: the untrained state's round 1 (in
/// `run-imprint/`) and, where the cell has a trained state, the trained state's round R + 1
/// (in `run-trained-imprint/`, from the pretrained model when there is one). In the captured
/// round the tapped clients are sent the imprinted model (`[tap] mode = "imprint"`); their
/// updates are left out of that round's aggregate, which no later round sees.
fn imprint_federations(
    c: &CompareConfig,
    cell: &Cell,
    dir: &Path,
    pretrained: Option<&Pretrained>,
) -> Vec<Federation> {
    let malicious = |mut run: RunConfig, round: u64| {
        run.tap.rounds = vec![round];
        run.tap.mode = TapMode::Imprint;
        run
    };
    let mut out = vec![Federation {
        run: malicious(run_config(c, cell, &dir.join("run-imprint"), 0), 1),
        states: vec![("untrained", 1)],
    }];
    if c.rounds > 0 || pretrained.is_some() {
        let mut trained = run_config(c, cell, &dir.join("run-trained-imprint"), c.rounds);
        trained.initial_model = pretrained.map(|p| p.path.clone());
        out.push(Federation {
            run: malicious(trained, c.rounds + 1),
            states: vec![("trained", c.rounds + 1)],
        });
    }
    out
}

/// A cell's pretrained model: where it is saved, its test accuracy (on the run's evaluation
/// images) and the seconds its training took.
struct Pretrained {
    path: std::path::PathBuf,
    accuracy: f64,
    seconds: Option<f64>,
}

/// Trains the cell's model centrally for `pretrain_epochs` on the data set's training split
/// (the clients' data; lr `learning.lr` × the variant's factor, batch `learning.batch_size`),
/// or reuses the model an earlier run of the cell saved.
fn pretrain(
    c: &CompareConfig,
    cell: &Cell,
    dir: &Path,
    device: &Device,
    progress: &dyn ComparisonProgress,
) -> Result<Pretrained> {
    let splits =
        synfed_data::load(&c.data, c.data_dir.as_deref()).map_err(crate::LabError::from)?;
    let shape = splits.train.shape();
    let run = run_config(c, cell, &dir.join("run-trained"), c.rounds);
    let spec = run.model_spec(
        synfed_models::InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
    );
    let schedule = Pretraining {
        epochs: c.pretrain_epochs,
        lr: c.learning.lr * cell.variant.lr / c.lr,
        batch_size: c.learning.batch_size,
    };
    let folder = dir.join("pretraining");
    let work = progress.cell_work(cell, c.pretrain_epochs as u64, "epochs");
    let (model, seconds) = pretrained(
        &spec,
        &schedule,
        &splits,
        &folder,
        device,
        &mut |epoch, loss| {
            work.step();
            tracing::info!("epoch {epoch}: train loss {loss:.4}");
        },
    )?;
    drop(work);
    let shown: Vec<usize> = (0..splits.test.len().min(c.eval_limit)).collect();
    let accuracy = evaluate(&model, &splits.test, &shown, &splits.normalization, 250)
        .map_err(crate::LabError::from)?
        .accuracy();
    tracing::info!(
        "cell {} / {}: pretrained to {:.2} % test accuracy",
        cell.model.slug(),
        cell.variant.label,
        100.0 * accuracy
    );
    Ok(Pretrained {
        path: folder.join("trained.safetensors"),
        accuracy,
        seconds,
    })
}

/// The run configuration of a cell's federation into `out`: R + 1 rounds (the last one only
/// to capture the trained model's updates; 1 when R = 0), every client registered before
/// round 1, the tap on clients 0 … K−1 (its rounds are the caller's).
fn run_config(c: &CompareConfig, cell: &Cell, out: &Path, rounds: u64) -> RunConfig {
    let mut run = RunConfig {
        seed: c.seed,
        rounds: rounds + 1,
        algorithm: c.algorithm,
        out: out.to_path_buf(),
        ..RunConfig::default()
    };
    run.model = c.variant_model(&cell.model, &cell.variant);
    run.data.name = c.data.clone();
    run.data.dir = c.data_dir.clone();
    run.data.eval_limit = Some(c.eval_limit);
    run.training.lr = cell.variant.lr;
    run.training.batch_size = c.batch_size;
    run.training.bn_mode = c.bn_mode;
    run.training.fuzzy_at = cell.variant.fuzzy_at;
    run.training.defence = cell.variant.defence.clone();
    run.sampling.min_clients = c.clients;
    run.sampling.min_updates = 1;
    run.timing.pull_timeout_s = 2.0;
    run.timing.linger_s = 1.0;
    run.tap.clients = (0..c.batches).map(Fleet::name).collect();
    run
}
