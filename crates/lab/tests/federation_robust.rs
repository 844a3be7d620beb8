//! One Byzantine client of five against the aggregation rules, end to end over real gRPC.
//!
//! Four honest clients (`synfed_client::run`) and one hand-driven attacker, `mallory`, train
//! the width-16 MLP on the embedded MNIST subset for 12 FedAvg rounds of 10 local steps (one
//! round moves the model further than a FedSGD step, so a few rounds separate a working rule
//! from a broken one within seconds). Mallory computes its honest update on its share, like
//! the others, and then sends valid messages (finite values, the right tensors) carrying one
//! of four attacks: every value 1e38, its honest update sign-flipped and ×100, its update
//! sign-flipped with an inflated example count (after the server refused a registration of
//! 2^64 − 1 examples), or Gaussian noise.
//!
//! The plain mean is shown to break under the 1e38 attacker, which is the point of the option.
//! Every robust rule under every attack must end within [`MARGIN`] of the test accuracy of the
//! same rule's honest run (five honest clients) and above [`FLOOR`]. The example-weight cap
//! alone keeps even the plain mean within the margin against the inflated count. The runs are
//! deterministic (same seed, same bytes), so the margins are not a matter of luck.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use synfed_client::compute::{fedavg, LocalData};
use synfed_models::{InputShape, Model};
use synfed_server::{Algorithm, RoundRecord, Rule, RunConfig};
use synfed_synapse::Mode;
use synfed_wire::chunks::{Assembler, EncodedTensor, TensorLayout};
use synfed_wire::proto::{
    pull_task_reply, FetchModelRequest, LeaveRequest, PullTaskRequest, Task, TaskRef,
};
use tokio::sync::OnceCell;
use tonic::Code;

/// Clients per round: four honest, one attacker (f = 1).
const CLIENTS: usize = 5;
const ROUNDS: u64 = 12;
/// A robust rule under attack must end within this much test accuracy of its honest run.
const MARGIN: f64 = 0.10;
/// ... and above this (chance is 0.1; the broken mean ends below 0.2).
const FLOOR: f64 = 0.6;
/// The norm bound of the norm-bounded mean's runs: below the honest updates' norms (1.0–1.8
/// here), so every update counts at most as much as an honest one.
const NORM_BOUND: f64 = 1.0;
const LR: f64 = 0.1;
const LOCAL_STEPS: u32 = 10;
/// Σ of the round's example weights: five clients, each capped at batch size 8 × local steps.
const EXAMPLES_PER_ROUND: u64 = CLIENTS as u64 * 8 * LOCAL_STEPS as u64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    /// Every value 1e38 (finite as f32).
    Huge,
    /// The attacker's honest update × −100.
    SignFlip,
    /// The honest update × −1, claiming every example of the training split.
    Inflated,
    /// N(0, 1) in every value.
    Noise,
}

const ATTACKS: [Attack; 4] = [
    Attack::Huge,
    Attack::SignFlip,
    Attack::Inflated,
    Attack::Noise,
];

/// The run: FedAvg, `ROUNDS` rounds, five clients per round, evaluated on the whole test set.
fn config(dir: &std::path::Path, rule: Rule, norm_bound: Option<f64>) -> RunConfig {
    let mut c = small_config(dir, ROUNDS, CLIENTS);
    c.data.eval_limit = None;
    c.algorithm = Algorithm::FedAvg;
    c.training.lr = LR;
    c.training.local_epochs = 0;
    c.training.local_steps = LOCAL_STEPS;
    c.timing.linger_s = 0.5;
    c.aggregation.rule = rule;
    c.aggregation.norm_bound = norm_bound;
    c.aggregation.trim = 0.2;
    c.aggregation.byzantine = 1;
    c.sampling.min_updates = CLIENTS;
    c
}

/// Pulls until a task arrives; `None` once the run is over.
async fn next_task(raw: &mut RawClient) -> Option<Task> {
    loop {
        let reply = raw
            .api
            .pull_task(raw.request(PullTaskRequest {
                run_id: raw.run_id.clone(),
                client_id: raw.name.clone(),
            }))
            .await
            .ok()?
            .into_inner();
        match reply.reply? {
            pull_task_reply::Reply::Task(task) => return Some(task),
            pull_task_reply::Reply::Idle(_) => continue,
            pull_task_reply::Reply::Finished(_) | pull_task_reply::Reply::Stopped(_) => {
                return None
            }
        }
    }
}

/// Loads the task's global model into `model`.
async fn fetch(raw: &mut RawClient, task: &TaskRef, model: &Model) {
    let layout: Vec<TensorLayout> = model
        .params()
        .tensors()
        .iter()
        .map(|(n, t)| TensorLayout::of(n.clone(), t))
        .collect();
    let mut stream = raw
        .api
        .fetch_model(raw.request(FetchModelRequest {
            client_id: raw.name.clone(),
            r#ref: Some(task.clone()),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut assembler = Assembler::new(layout);
    while let Some(message) = stream.message().await.unwrap() {
        assembler.push(message.chunk.unwrap()).unwrap();
    }
    for (name, tensor) in assembler.finish(&Device::Cpu).unwrap() {
        model.params().set(&name, &tensor).unwrap();
    }
}

/// Mallory: registers, then answers every task with `attack`; returns the statuses of its
/// pushes.
async fn mallory(url: String, attack: Attack, spec: synfed_models::ModelSpec) -> Vec<Code> {
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let train_len = splits.train.len() as u64;
    let share = synfed_data::partition(
        splits.train.labels(),
        CLIENTS,
        &synfed_data::Partition::Iid,
        7,
    )
    .unwrap()
    .swap_remove(CLIENTS - 1);
    let data = Arc::new(LocalData {
        train: splits.train.clone(),
        normalization: splits.normalization.clone(),
        indices: share,
    });
    let model = Arc::new(Model::build(&spec, DType::F32, &Device::Cpu).unwrap());
    let mut raw = RawClient::connect(&url, "mallory", None).await;
    let registered = if attack == Attack::Inflated {
        let refused = raw.register(u64::MAX).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains("training split"), "{refused}");
        raw.register(train_len).await.unwrap();
        train_len
    } else {
        raw.register(data.indices.len() as u64).await.unwrap();
        data.indices.len() as u64
    };
    let mut codes = Vec::new();
    let mut noise = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    while let Some(task) = next_task(&mut raw).await {
        let task_ref = task.r#ref.clone().unwrap();
        fetch(&mut raw, &task_ref, &model).await;
        let batch = task.batch_size as usize;
        let honest = {
            let (model, data) = (Arc::clone(&model), Arc::clone(&data));
            let seed = task.seed;
            tokio::task::spawn_blocking(move || {
                fedavg(
                    &model,
                    &data,
                    batch,
                    0,
                    LOCAL_STEPS,
                    LR,
                    seed,
                    Mode::Train,
                    &None,
                )
                .unwrap()
            })
            .await
            .unwrap()
        };
        let (update, examples): (Vec<(String, Tensor)>, u64) = match attack {
            Attack::Huge => (
                honest
                    .update
                    .named()
                    .iter()
                    .map(|(n, t)| (n.clone(), (t.ones_like().unwrap() * 1e38).unwrap()))
                    .collect(),
                honest.examples,
            ),
            Attack::SignFlip | Attack::Inflated => {
                let k = if attack == Attack::SignFlip {
                    -100.0
                } else {
                    -1.0
                };
                let claim = if attack == Attack::Inflated {
                    registered
                } else {
                    honest.examples
                };
                (
                    honest
                        .update
                        .named()
                        .iter()
                        .map(|(n, t)| (n.clone(), (t * k).unwrap()))
                        .collect(),
                    claim,
                )
            }
            Attack::Noise => (
                honest
                    .update
                    .named()
                    .iter()
                    .map(|(n, t)| {
                        let values: Vec<f32> = (0..t.elem_count())
                            .map(|_| {
                                // Box–Muller
                                let (u, v): (f64, f64) = (noise.random(), noise.random());
                                ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos())
                                    as f32
                            })
                            .collect();
                        let t = Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
                        (n.clone(), t)
                    })
                    .collect(),
                honest.examples,
            ),
        };
        let encoded: Vec<EncodedTensor> = update
            .iter()
            .map(|(n, t)| EncodedTensor::new(n.clone(), t).unwrap())
            .collect();
        let messages = raw.update(&task_ref, &encoded, examples);
        codes.push(raw.push(messages).await.0);
    }
    let _ = raw
        .api
        .leave(raw.request(LeaveRequest {
            run_id: raw.run_id.clone(),
            client_id: raw.name.clone(),
            reason: "done".into(),
        }))
        .await;
    codes
}

/// What a run ended with.
struct Outcome {
    rounds: Vec<RoundRecord>,
    /// The largest |value| of the final global model.
    largest_weight: f32,
}

impl Outcome {
    fn accuracy(&self) -> f64 {
        self.rounds.last().unwrap().test_accuracy
    }
}

/// One run of `ROUNDS` rounds: four honest clients and mallory (`attack`), or five honest
/// clients (`None`).
async fn run(rule: Rule, norm_bound: Option<f64>, attack: Option<Attack>) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), rule, norm_bound);
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest = if attack.is_some() {
        CLIENTS - 1
    } else {
        CLIENTS
    };
    let clients: Vec<_> = spawn_clients(&url, 0..honest, CLIENTS);
    let attacker = attack.map(|a| tokio::spawn(mallory(url.clone(), a, spec)));
    let summary = server.await.unwrap().unwrap();
    assert!(summary.complete);
    for c in clients {
        c.await.unwrap().unwrap();
    }
    if let Some(attacker) = attacker {
        let codes = attacker.await.unwrap();
        // mallory's messages are valid: every one of its updates is accepted
        assert!(
            codes.len() == ROUNDS as usize && codes.iter().all(|c| *c == Code::Ok),
            "{rule} {attack:?}: {codes:?}"
        );
    }
    let model = synfed_models::checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let largest_weight = model
        .params()
        .tensors()
        .iter()
        .map(|(_, t)| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0f32, f32::max);
    Outcome {
        rounds: summary.rounds,
        largest_weight,
    }
}

/// The final accuracy of five honest clients under the plain mean, computed once.
async fn honest_mean() -> f64 {
    static HONEST: OnceCell<f64> = OnceCell::const_new();
    *HONEST
        .get_or_init(|| async {
            let a = run(Rule::Mean, None, None).await.accuracy();
            eprintln!("honest, mean: {a:.4}");
            assert!(a >= FLOOR, "the honest run reached only {a}");
            a
        })
        .await
}

/// `rule` (with `norm_bound`) against every attack: each run within [`MARGIN`] of the same
/// rule's honest run and above [`FLOOR`], every update counted with its capped weight.
async fn withstands_every_attack(rule: Rule, norm_bound: Option<f64>) {
    let mean = honest_mean().await;
    let honest = run(rule, norm_bound, None).await.accuracy();
    let name = match norm_bound {
        Some(c) => format!("{rule}, norm bound {c}"),
        None => rule.to_string(),
    };
    eprintln!("{name}: honest {honest:.4} (plain mean {mean:.4})");
    let mut failures = Vec::new();
    for attack in ATTACKS {
        let outcome = run(rule, norm_bound, Some(attack)).await;
        let a = outcome.accuracy();
        eprintln!("{name}: {attack:?} {a:.4}");
        let rounds = &outcome.rounds;
        assert!(rounds.iter().all(|r| r.updates == CLIENTS), "{rounds:?}");
        // every weight is capped at batch size × local steps, the attacker's too
        assert!(
            rounds.iter().all(|r| r.examples == EXAMPLES_PER_ROUND),
            "{rounds:?}"
        );
        assert!(outcome.largest_weight < 100.0, "{}", outcome.largest_weight);
        if a < honest - MARGIN || a < FLOOR {
            failures.push(format!("{attack:?}: {a:.4}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name} under attack fell more than {MARGIN} below its honest {honest:.4} or below \
         {FLOOR}: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plain_mean_breaks_under_one_huge_update_and_the_weight_cap_holds() {
    let honest = honest_mean().await;
    let broken = run(Rule::Mean, None, Some(Attack::Huge)).await;
    let last = broken.rounds.last().unwrap();
    eprintln!(
        "mean: Huge {:.4} (test loss {}, largest weight {:e})",
        last.test_accuracy, last.test_loss, broken.largest_weight
    );
    // one update of five, 1e38 everywhere with weight 1/5: every weight moved by 2e37
    assert!(
        broken.largest_weight > 1e36,
        "largest weight {}",
        broken.largest_weight
    );
    assert!(
        last.test_accuracy < 0.2,
        "one client of five sending 1e38 did not break the mean: {last:?}"
    );
    // with the example weight capped, a claim of the whole training split counts as
    // batch size × local steps, as every honest client's
    let inflated = run(Rule::Mean, None, Some(Attack::Inflated)).await;
    let a = inflated.accuracy();
    eprintln!("mean: Inflated {a:.4} (honest {honest:.4})");
    assert!(
        inflated
            .rounds
            .iter()
            .all(|r| r.examples == EXAMPLES_PER_ROUND),
        "{:?}",
        inflated.rounds
    );
    assert!(
        a >= honest - MARGIN,
        "a capped inflated claim still broke the mean: {a} vs honest {honest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_median_withstands_one_byzantine_client() {
    withstands_every_attack(Rule::Median, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_trimmed_mean_withstands_one_byzantine_client() {
    withstands_every_attack(Rule::TrimmedMean, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn krum_withstands_one_byzantine_client() {
    withstands_every_attack(Rule::Krum, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_krum_withstands_one_byzantine_client() {
    withstands_every_attack(Rule::MultiKrum, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_norm_bounded_mean_withstands_one_byzantine_client() {
    withstands_every_attack(Rule::Mean, Some(NORM_BOUND)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_updates_are_bounded_by_the_memory_budget() {
    // width-16 MLP: 12 730 values, 101 840 bytes per kept update: 1 MiB holds 10 clients
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), Rule::Median, None);
    config.aggregation.memory_budget_mib = 1;
    config.sampling.min_clients = 11;
    let (listener, _) = bind().await;
    let err = synfed_server::run(config.clone(), listener, false, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("aggregation.memory_budget_mib"), "{err}");
    assert!(err.contains("holds 10 clients"), "{err}");

    // a run that fits refuses the registration that would not
    config.sampling.min_clients = CLIENTS;
    let (listener, url) = bind().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(synfed_server::run(config, listener, false, async {
        let _ = stopped.await;
    }));
    let mut raws = Vec::new();
    for k in 0..10 {
        let mut raw = RawClient::connect(&url, &format!("c{k:02}"), None).await;
        raw.register(8).await.unwrap();
        raws.push(raw);
    }
    let mut eleventh = RawClient::connect(&url, "c10", None).await;
    let refused = eleventh.register(8).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("at most 10"), "{refused}");
    // a registered client registering again takes no new place
    raws[0].register(8).await.unwrap();
    let _ = stop.send(());
    let summary = server.await.unwrap().unwrap();
    assert!(!summary.complete);
}
