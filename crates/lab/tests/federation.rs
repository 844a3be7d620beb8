//! End-to-end federation: server and clients over real gRPC on loopback (port 0).

mod common;

use common::*;
use synfed_server::read_rounds;

fn final_weights(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint.safetensors")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_complete_rounds_and_the_same_seed_gives_identical_weights() {
    let mut weights = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path(), 3, 3);
        config.model.methods = "I+II+III".parse().unwrap();
        let (summary, reports) =
            federation(config, |url| (0..3).map(|k| client(url, k, 3)).collect()).await;
        assert!(summary.complete);
        assert_eq!(summary.rounds.len(), 3);
        for r in &summary.rounds {
            assert_eq!(
                (r.sampled, r.updates, r.refused, r.dropped),
                (3, 3, 0, 0),
                "{r:?}"
            );
            assert_eq!(r.examples, 3 * 8);
            assert!(r.test_accuracy > 0.0 && r.train_loss.is_finite());
        }
        for report in &reports {
            assert!(report.finished);
            assert_eq!(report.accepted, vec![1, 2, 3]);
        }
        let mut log = read_rounds(&dir.path().join("rounds.csv")).unwrap();
        let mut expected = summary.rounds.clone();
        for r in log.iter_mut().chain(expected.iter_mut()) {
            r.seconds = 0.0; // written with millisecond precision
        }
        assert_eq!(log, expected);
        weights.push(final_weights(dir.path()));
    }
    assert!(
        weights[0] == weights[1],
        "same seed, different final weights"
    );
}

use candle_core::{DType, Device, Tensor};
use synfed_client::EscrowConfig;
use synfed_models::{checkpoint, InputShape, Model};
use synfed_synapse::{Mode, SynapticSgd};
use synfed_wire::{escrow_file_name, Escrow};
use tonic::Code;

/// Largest absolute difference between two models' tensors.
fn max_difference(a: &Model, b: &Model) -> f32 {
    let mut worst = 0f32;
    for ((na, ta), (nb, tb)) in a.params().tensors().iter().zip(b.params().tensors().iter()) {
        assert_eq!(na, nb);
        worst = worst.max(max_abs_diff(ta, tb));
    }
    worst
}

async fn fedsgd_equals_centralized_sgd(methods: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 2, 3);
    config.model.methods = methods.parse().unwrap();
    let truth = dir.path().join("truth");
    let escrow_dir = truth.clone();
    let (summary, _) = federation(config.clone(), move |url| {
        (0..3)
            .map(|k| {
                let mut c = client(url, k, 3);
                c.escrow = Some(EscrowConfig {
                    dir: escrow_dir.clone(),
                    rounds: vec![],
                });
                c
            })
            .collect()
    })
    .await;
    assert!(summary.rounds.iter().all(|r| r.updates == 3));

    // Centralized SGD on the union of the clients' batches, round by round.
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let central = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let mut opt = SynapticSgd::new(
        central.params(),
        config.training.lr,
        synfed_server::optimizer_seed(config.seed),
    );
    for round in 1..=2 {
        let escrows: Vec<Escrow> = (0..3)
            .map(|k| {
                Escrow::load(
                    truth.join(escrow_file_name(round, &format!("client-{k}"))),
                    &Device::Cpu,
                )
                .unwrap()
            })
            .collect();
        let x = Tensor::cat(
            &escrows.iter().map(|e| e.images.clone()).collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let y = Tensor::cat(
            &escrows.iter().map(|e| e.labels.clone()).collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        assert_eq!(x.dim(0).unwrap(), 24);
        let loss = central.loss(&x, &y, Mode::Train).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let diff = max_difference(&central, &federated);
    assert!(
        diff < 1e-5,
        "{methods}: federated and centralized weights differ by {diff}"
    );
    // And the federation did move the model.
    let initial = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    assert!(max_difference(&initial, &federated) > 1e-3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedsgd_with_full_participation_equals_centralized_sgd() {
    fedsgd_equals_centralized_sgd("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedsgd_with_all_mechanisms_equals_centralized_synaptic_sgd() {
    fedsgd_equals_centralized_sgd("I+II+III").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_larger_than_a_message_travels_in_chunks_and_a_corrupted_chunk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, 3);
    config.model.width = Some(2048); // 784 × 2048 weights: 6.4 MB in the first layer alone
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let clients: Vec<_> = spawn_clients(&url, 0..2, 2);

    let mut mallory = RawClient::connect(&url, "mallory", None).await;
    mallory.register(100).await.unwrap();
    let task = mallory.task().await;
    let task_ref = task.r#ref.unwrap();
    let model = mallory.model(&task_ref).await;
    let biggest = model.iter().map(|t| t.bytes.len()).max().unwrap();
    assert!(
        biggest > synfed_wire::MAX_CHUNK_BYTES,
        "the test needs a tensor larger than one chunk"
    );
    let mut messages = mallory.update(&task_ref, &model, 8);
    // Flip one bit in the second chunk of the largest tensor.
    let victim = messages
        .iter()
        .position(|m| matches!(&m.part, Some(synfed_wire::proto::update_message::Part::Chunk(c)) if c.offset > 0))
        .unwrap();
    if let Some(synfed_wire::proto::update_message::Part::Chunk(c)) = &mut messages[victim].part {
        c.data[17] ^= 0x04;
    }
    let (code, message) = mallory.push(messages).await;
    assert_eq!(code, Code::DataLoss, "{message}");
    assert!(message.contains("checksum"), "{message}");

    let summary = server.await.unwrap().unwrap();
    let round = &summary.rounds[0];
    assert_eq!((round.updates, round.refused), (2, 1), "{round:?}");
    for c in clients {
        let report = c.await.unwrap().unwrap();
        assert_eq!(report.accepted, vec![1]);
        assert!(
            report.bytes_received > 6_000_000 && report.bytes_sent > 6_000_000,
            "{report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_killed_mid_round_is_left_behind_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 2, 3);
    config.timing.round_timeout_s = 2.0;
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let clients: Vec<_> = spawn_clients(&url, 0..2, 2);
    // Takes the first round's task, then dies without a word.
    {
        let mut doomed = RawClient::connect(&url, "doomed", None).await;
        doomed.register(100).await.unwrap();
        let task = doomed.task().await;
        assert_eq!(task.r#ref.unwrap().round, 1);
    }
    let summary = server.await.unwrap().unwrap();
    assert!(summary.complete);
    for round in &summary.rounds {
        assert_eq!(
            (round.sampled, round.updates, round.dropped),
            (3, 2, 1),
            "{round:?}"
        );
        assert!(
            round.seconds >= 1.9,
            "the round waited for its deadline: {round:?}"
        );
        assert!(round.seconds < 10.0, "{round:?}");
    }
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap().accepted, vec![1, 2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_after_round_k_and_resumed_reaches_the_same_final_model() {
    let rounds = 4;
    let configure = |dir: &std::path::Path| {
        let mut config = small_config(dir, rounds, 2);
        config.model.methods = "I+II+III".parse().unwrap();
        config
    };
    let uninterrupted = tempfile::tempdir().unwrap();
    federation(configure(uninterrupted.path()), |url| {
        (0..2).map(|k| client(url, k, 2)).collect()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (listener, url) = bind().await;
    let addr = listener.local_addr().unwrap();
    let log = dir.path().join("rounds.csv");
    let killed_after_two = async move {
        while read_rounds(&log).map_or(true, |r| r.len() < 2) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let first = tokio::spawn(synfed_server::run(
        configure(dir.path()),
        listener,
        false,
        killed_after_two,
    ));
    let clients: Vec<_> = spawn_clients(&url, 0..2, 2);
    let stopped = first.await.unwrap().unwrap();
    assert!(!stopped.complete);
    assert!(
        stopped.rounds.len() >= 2 && stopped.rounds.len() < rounds as usize,
        "{:?}",
        stopped.rounds
    );

    // Restart on the same address; the clients reconnect and register again.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let resumed = synfed_server::run(
        configure(dir.path()),
        listener,
        true,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(resumed.complete);
    assert_eq!(
        resumed.rounds.first().unwrap().round,
        stopped.rounds.last().unwrap().round + 1
    );
    for c in clients {
        assert!(c.await.unwrap().unwrap().finished);
    }
    let log = read_rounds(&dir.path().join("rounds.csv")).unwrap();
    assert_eq!(
        log.iter().map(|r| r.round).collect::<Vec<_>>(),
        (1..=rounds).collect::<Vec<_>>()
    );
    assert!(
        final_weights(dir.path()) == final_weights(uninterrupted.path()),
        "the resumed run ended with another model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedavg_adds_the_example_weighted_mean_of_local_training() {
    use synfed_client::compute::{fedavg, LocalData};
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, 3);
    config.algorithm = synfed_server::Algorithm::FedAvg;
    config.model.methods = "I+II+III".parse().unwrap();
    config.training.local_epochs = 0;
    config.training.local_steps = 3;
    let (summary, _) = federation(config.clone(), |url| {
        (0..3).map(|k| client(url, k, 3)).collect()
    })
    .await;
    let round = &summary.rounds[0];
    assert_eq!(round.updates, 3);

    // The same local training by hand, from the same global model, then the weighted mean.
    // A client's weight is its claim (its share) capped by what the task asked for: batch
    // size × local steps = 24 examples.
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let shares =
        synfed_data::partition(splits.train.labels(), 3, &synfed_data::Partition::Iid, 7).unwrap();
    let weight = |share: &[usize]| share.len().min(8 * 3) as f64;
    assert_eq!(
        round.examples as f64,
        shares.iter().map(|s| weight(s)).sum::<f64>()
    );
    let global = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let mut expected: Vec<Tensor> = global
        .params()
        .tensors()
        .into_iter()
        .map(|(_, t)| t.copy().unwrap())
        .collect();
    let total = round.examples as f64;
    for (k, share) in shares.into_iter().enumerate() {
        let local = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let (n, w) = (share.len() as f64, weight(&share));
        let data = LocalData {
            train: splits.train.clone(),
            normalization: splits.normalization.clone(),
            indices: share,
        };
        let seed = synfed_server::seeds::derive(
            config.seed,
            synfed_server::seeds::Purpose::Task,
            1,
            &format!("client-{k}"),
        );
        let work = fedavg(
            &local,
            &data,
            8,
            0,
            3,
            config.training.lr,
            seed,
            Mode::Train,
            &None,
        )
        .unwrap();
        assert_eq!(work.examples as f64, n);
        for (e, (_, delta)) in expected.iter_mut().zip(&work.update.named()) {
            *e = (&*e + (delta * (w / total)).unwrap()).unwrap();
        }
    }
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let mut worst = 0f32;
    for (e, (_, f)) in expected.iter().zip(federated.params().tensors()) {
        worst = worst.max(max_abs_diff(e, &f));
    }
    assert!(worst < 1e-6, "FedAvg aggregate differs by {worst}");
    assert!(
        max_difference(&global, &federated) > 1e-3,
        "the model did not move"
    );
}
