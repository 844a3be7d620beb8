//! Every kind of bad input a peer can send gets its own gRPC status, and the round goes on
//! without the bad update: the final model equals the one of a run without the bad clients.

mod common;

use common::*;
use synfed_wire::chunks::{EncodedTensor, MAX_CHUNK_BYTES};
use synfed_wire::proto::{update_message::Part, DataType, TaskRef, UpdateMessage};
use tonic::Code;

type Mutation = fn(&RawClient, &TaskRef, &[EncodedTensor]) -> Vec<UpdateMessage>;

fn chunk_of(messages: &mut [UpdateMessage], index: usize) -> &mut synfed_wire::proto::TensorChunk {
    match &mut messages[index].part {
        Some(Part::Chunk(c)) => c,
        _ => panic!("message {index} is not a chunk"),
    }
}

/// (name, expected status, what the message must mention, how to build the bad update)
fn bad_updates() -> Vec<(&'static str, Code, &'static str, Mutation)> {
    vec![
        (
            "zero examples",
            Code::InvalidArgument,
            "num_examples",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u[0] = c.header(t, 0, 2.0, m.len() as u32);
                u
            },
        ),
        (
            "more examples than registered",
            Code::InvalidArgument,
            "num_examples",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u[0] = c.header(t, 1_000_000, 2.0, m.len() as u32);
                u
            },
        ),
        (
            "wrong tensor count",
            Code::InvalidArgument,
            "tensors",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u[0] = c.header(t, 8, 2.0, 99);
                u
            },
        ),
        (
            "non-finite loss",
            Code::InvalidArgument,
            "train_loss",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u[0] = c.header(t, 8, f64::NAN, m.len() as u32);
                u
            },
        ),
        (
            "unknown tensor",
            Code::InvalidArgument,
            "unknown tensor",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                chunk_of(&mut u, 1).name = "fc9.weight".into();
                u
            },
        ),
        ("wrong dtype", Code::InvalidArgument, "dtype", |c, t, m| {
            let mut u = c.update(t, m, 8);
            chunk_of(&mut u, 1).dtype = DataType::F64 as i32;
            u
        }),
        ("wrong shape", Code::InvalidArgument, "shape", |c, t, m| {
            let mut u = c.update(t, m, 8);
            let chunk = chunk_of(&mut u, 1);
            chunk.shape.reverse();
            chunk.shape.push(1);
            u
        }),
        (
            "wrong byte length",
            Code::InvalidArgument,
            "bytes",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                chunk_of(&mut u, 1).total_bytes += 4;
                u
            },
        ),
        (
            "oversized chunk",
            Code::ResourceExhausted,
            "limit",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                chunk_of(&mut u, 1).data = vec![0; MAX_CHUNK_BYTES + 1];
                u
            },
        ),
        (
            "gap between chunks",
            Code::OutOfRange,
            "gap or overlap",
            |c, t, m| {
                let first = &m[0];
                let mut u = vec![c.header(t, 8, 2.0, m.len() as u32)];
                let mut pieces: Vec<_> = first.chunks(first.bytes.len() / 4).collect();
                pieces.remove(1);
                u.extend(pieces.into_iter().map(|p| c.chunk(t, p)));
                u
            },
        ),
        (
            "checksum mismatch",
            Code::DataLoss,
            "checksum",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                chunk_of(&mut u, 1).data[0] ^= 1;
                u
            },
        ),
        (
            "non-finite value",
            Code::InvalidArgument,
            "non-finite",
            |c, t, m| {
                let mut values = vec![0f32; m[1].layout.elem_count()];
                values[3] = f32::INFINITY;
                let bad = candle_core::Tensor::from_vec(
                    values,
                    m[1].layout.shape.clone(),
                    &candle_core::Device::Cpu,
                )
                .unwrap();
                let mut tensors = m.to_vec();
                tensors[1] = EncodedTensor::new(m[1].layout.name.clone(), &bad).unwrap();
                c.update(t, &tensors, 8)
            },
        ),
        (
            "missing tensor",
            Code::InvalidArgument,
            "missing",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u.pop();
                u
            },
        ),
        (
            "duplicate tensor",
            Code::InvalidArgument,
            "twice",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                let again = u[1].clone();
                u.insert(2, again);
                u
            },
        ),
        (
            "second header",
            Code::InvalidArgument,
            "second header",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                let header = u[0].clone();
                u.insert(2, header);
                u
            },
        ),
        (
            "message of another task mid-stream",
            Code::InvalidArgument,
            "another client or task",
            |c, t, m| {
                let mut u = c.update(t, m, 8);
                u[2].r#ref.as_mut().unwrap().task_id = "someone-else".into();
                u
            },
        ),
    ]
}

const HONEST: usize = 2;

/// Runs one round with the honest clients plus one raw client per bad update; returns the final
/// checkpoint bytes and the round's record.
async fn round_with_bad_clients(bad: bool) -> (Vec<u8>, synfed_server::RoundRecord) {
    let dir = tempfile::tempdir().unwrap();
    let cases = if bad { bad_updates() } else { Vec::new() };
    let mut config = small_config(dir.path(), 1, HONEST + cases.len());
    config.timing.round_timeout_s = 30.0;
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest: Vec<_> = spawn_clients(&url, 0..HONEST, HONEST);

    let mut bad_clients = Vec::new();
    for (i, _) in cases.iter().enumerate() {
        let mut raw = RawClient::connect(&url, &format!("mallory-{i:02}"), None).await;
        raw.register(100).await.unwrap();
        bad_clients.push(raw);
    }
    let mut tasks = Vec::new();
    for raw in &mut bad_clients {
        let task = raw.task().await.r#ref.unwrap();
        let model = raw.model(&task).await;
        tasks.push((task, model));
    }

    if bad {
        // Refusals that name the sender or the task wrongly do not touch anyone's slot.
        let probe = &mut bad_clients[0];
        let (task, model) = &tasks[0];
        let mut wrong_run = task.clone();
        wrong_run.run_id = "run-elsewhere".into();
        let mut wrong_round = task.clone();
        wrong_round.round = 7;
        let mut wrong_task = task.clone();
        wrong_task.task_id = "forged".into();
        for (what, task_ref, code, mention) in [
            ("other run", &wrong_run, Code::FailedPrecondition, "run"),
            (
                "other round",
                &wrong_round,
                Code::FailedPrecondition,
                "round 7",
            ),
            (
                "unknown task",
                &wrong_task,
                Code::FailedPrecondition,
                "unknown task",
            ),
        ] {
            let update = probe.update(task_ref, model, 8);
            let (got, message) = probe.push(update).await;
            assert_eq!(got, code, "{what}: {message}");
            assert!(message.contains(mention), "{what}: {message}");
        }
        let mut stranger = RawClient::connect(&url, "stranger", None).await;
        stranger.run_id = probe.run_id.clone();
        stranger.session = Some("0".repeat(32)); // a session secret no registration holds
        let update = stranger.update(task, model, 8);
        let (got, message) = stranger.push(update).await;
        assert_eq!(got, Code::NotFound, "unregistered client: {message}");
        let mut headless = probe.update(task, model, 8);
        headless.remove(0);
        let (got, message) = probe.push(headless).await;
        assert_eq!(got, Code::InvalidArgument, "no header: {message}");
        assert!(message.contains("header"), "{message}");

        // An update in client-0's name without its session secret (duplicates of a registered
        // client's own update: federation_limits.rs).
        let mut impostor = RawClient::connect(&url, "client-0", None).await;
        impostor.run_id = probe.run_id.clone();
        let task0 = synfed_wire::proto::TaskRef {
            task_id: task.task_id.replace("mallory-00", "client-0"),
            ..task.clone()
        };
        let update = impostor.update(&task0, model, 8);
        let (got, message) = impostor.push(update).await;
        assert_eq!(got, Code::Unauthenticated, "impostor: {message}");

        for ((raw, (task, model)), (what, code, mention, mutate)) in
            bad_clients.iter_mut().zip(&tasks).zip(bad_updates())
        {
            let update = mutate(raw, task, model);
            let (got, message) = raw.push(update).await;
            assert_eq!(got, code, "{what}: {message}");
            assert!(
                message.contains(mention),
                "{what}: `{message}` should mention `{mention}`"
            );
            // Refused for good: even a valid update is not taken now.
            let valid = raw.update(task, model, 8);
            let (again, message) = raw.push(valid).await;
            assert_eq!(
                again,
                Code::FailedPrecondition,
                "{what} then valid: {message}"
            );
        }
    }
    let summary = server.await.unwrap().unwrap();
    for h in honest {
        assert_eq!(h.await.unwrap().unwrap().accepted, vec![1]);
    }
    // The weights' bytes (the checkpoint's run state differs: the configurations do).
    let model = synfed_models::checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .model;
    let mut bytes = Vec::new();
    for (_, t) in model.params().tensors() {
        for v in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    (bytes, summary.rounds[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_updates_get_specific_statuses_and_do_not_change_the_aggregate() {
    assert!(bad_updates().len() >= 12);
    let (with_bad, round) = round_with_bad_clients(true).await;
    assert_eq!(round.updates, HONEST, "{round:?}");
    assert_eq!(round.refused, bad_updates().len(), "{round:?}");
    let (clean, round) = round_with_bad_clients(false).await;
    assert_eq!((round.updates, round.refused), (HONEST, 0));
    assert!(with_bad == clean, "the bad clients changed the aggregate");
}
