//! Limits that keep a peer from flooding, hijacking or holding the server (issue 17, item 2):
//! registrations bounded in number and time and bound to a session secret, uploads bounded in
//! messages, bytes and time, and a fatal stop that reaches the clients. Each test plays the
//! attacker with a hand-driven gRPC client beside honest clients, checks the status it gets,
//! and checks that the run went on as without it.

mod common;

use common::*;
use std::time::{Duration, Instant};
use synfed_client::ClientError;
use synfed_wire::chunks::{EncodedTensor, MAX_CHUNK_BYTES};
use synfed_wire::proto::{LeaveRequest, PullTaskRequest, TaskRef, TensorChunk, UpdateMessage};
use tonic::Code;

/// The final weights of the run in `dir`, as bytes.
fn weights(dir: &std::path::Path) -> Vec<u8> {
    let model = synfed_models::checkpoint::load(
        &dir.join("checkpoint.safetensors"),
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
    bytes
}

/// Pushes `messages` and then keeps the stream open without sending anything more; returns
/// the status and how long the server took to answer.
async fn push_then_stall(raw: &mut RawClient, messages: Vec<UpdateMessage>) -> (Code, String, f64) {
    let stream = tokio_stream::StreamExt::chain(
        tokio_stream::iter(messages),
        tokio_stream::pending::<UpdateMessage>(),
    );
    let started = Instant::now();
    let status = raw
        .api
        .push_update(raw.request(stream))
        .await
        .expect_err("a stalled upload cannot succeed");
    (
        status.code(),
        status.message().to_string(),
        started.elapsed().as_secs_f64(),
    )
}

/// The header and the first half of the first tensor's chunks of a valid update.
fn half_an_update(raw: &RawClient, task: &TaskRef, model: &[EncodedTensor]) -> Vec<UpdateMessage> {
    let mut messages = raw.update(task, model, 8);
    let first = &model[0];
    let half = first.bytes.len() / 2;
    messages.truncate(1);
    let mut chunk = first.chunk(0, half);
    chunk.data.truncate(half);
    messages.push(raw.chunk(task, chunk));
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registration_past_max_clients_is_refused_and_the_registry_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1, 2);
    assert_eq!(config.limits.max_clients, 10_000, "the default limit");
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);

    let mut first = RawClient::connect(&url, "c00000", None).await;
    first.register(1).await.unwrap();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut raw = RawClient::connect(&url, "", None).await;
                for i in (1 + w..10_000).step_by(8) {
                    raw.name = format!("c{i:05}");
                    raw.register(1).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let mut extra = RawClient::connect(&url, "c10000", None).await;
    let status = extra.register(1).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(
        status.message(),
        "the server holds at most 10000 registered clients (limits.max_clients)"
    );
    // a client that leaves frees its place, and only one
    first
        .api
        .leave(first.request(LeaveRequest {
            run_id: first.run_id.clone(),
            client_id: first.name.clone(),
            reason: "done".into(),
        }))
        .await
        .unwrap();
    extra.register(1).await.unwrap();
    let mut another = RawClient::connect(&url, "c10001", None).await;
    let status = another.register(1).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    server.abort();
}

/// One round of client-0 and client-1, beside a ghost that registers, takes its task and falls
/// silent (`ghost: true`) or alone; returns the final weights and the round.
async fn round_with_a_ghost(ghost: bool) -> (Vec<u8>, synfed_server::RoundRecord) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, if ghost { 3 } else { 2 });
    config.limits.registration_ttl_s = 1.0;
    config.timing.pull_timeout_s = 0.3;
    config.timing.heartbeat_timeout_s = 50.0; // only the expiry can drop the ghost early
    config.timing.round_timeout_s = 50.0;
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest = spawn_clients(&url, 0..2, 2);
    if ghost {
        let mut ghost = RawClient::connect(&url, "ghost", None).await;
        ghost.register(100).await.unwrap();
        // it polls until round 1 gives it a task, then says nothing more
        let task = ghost.task().await;
        assert_eq!(task.r#ref.unwrap().round, 1);
    }
    let summary = server.await.unwrap().unwrap();
    for h in honest {
        assert_eq!(h.await.unwrap().unwrap().accepted, vec![1]);
    }
    (weights(dir.path()), summary.rounds[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_client_is_forgotten_after_the_registration_ttl_and_dropped_from_its_round() {
    let (haunted, round) = round_with_a_ghost(true).await;
    assert_eq!(
        (round.sampled, round.updates, round.dropped),
        (3, 2, 1),
        "{round:?}"
    );
    assert!(
        round.seconds < 20.0,
        "the expiry (1 s) dropped the ghost long before the deadline and the heartbeat \
         timeout (50 s): {round:?}"
    );
    let (clean, round) = round_with_a_ghost(false).await;
    assert_eq!((round.sampled, round.updates), (2, 2), "{round:?}");
    assert!(haunted == clean, "the ghost changed the aggregate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_name_cannot_be_taken_over_and_its_client_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1, 3);
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let mut victim = RawClient::connect(&url, "victim", None).await;
    victim.register(100).await.unwrap();
    // a second hand-driven client, whose update comes last, keeps the round open
    let mut waiter = RawClient::connect(&url, "waiter", None).await;
    waiter.register(100).await.unwrap();
    let secret = victim.session.clone().unwrap();
    let honest = spawn_clients(&url, 0..1, 1);

    // Register under the live name, without and with a guessed secret
    let mut mallory = RawClient::connect(&url, "victim", None).await;
    let status = mallory.register(100).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");
    assert!(status.message().contains("session secret"), "{status}");
    mallory.session = Some("0".repeat(32));
    let status = mallory.register(100).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");
    // calls in its name without its secret
    mallory.session = None;
    mallory.run_id = victim.run_id.clone();
    let status = mallory
        .api
        .pull_task(mallory.request(PullTaskRequest {
            run_id: victim.run_id.clone(),
            client_id: "victim".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // the owner reconnects: its secret keeps its name and stays the same
    let mut again = RawClient::connect(&url, "victim", None).await;
    again.session = Some(secret.clone());
    again.register(100).await.unwrap();
    assert_eq!(again.session.as_deref(), Some(secret.as_str()));

    // the real client's round goes on: its update is accepted, once
    let task = victim.task().await.r#ref.unwrap();
    let model = victim.model(&task).await;
    // an update in its name with another registration's secret, or none
    let mut other = RawClient::connect(&url, "bystander", None).await;
    other.session = Some(secret.replace(|c: char| c.is_ascii_digit(), "f"));
    let (code, message) = mallory.push(mallory.update(&task, &model, 8)).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    let (code, message) = other.push(other.update(&task, &model, 8)).await;
    assert_eq!(code, Code::NotFound, "{message}");
    let update = victim.update(&task, &model, 8);
    let (code, message) = victim.push(update.clone()).await;
    assert_eq!(code, Code::Ok, "{message}");
    let (code, message) = victim.push(update).await;
    assert_eq!(code, Code::AlreadyExists, "{message}");
    let task = waiter.task().await.r#ref.unwrap();
    let (code, message) = waiter.push(waiter.update(&task, &model, 8)).await;
    assert_eq!(code, Code::Ok, "{message}");

    let summary = server.await.unwrap().unwrap();
    let round = &summary.rounds[0];
    assert_eq!(
        (round.sampled, round.updates, round.refused),
        (3, 3, 0),
        "{round:?}"
    );
    assert_eq!(
        honest
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .accepted,
        vec![1]
    );
}

/// One round of the honest client-0 alone (`attack: false`) or beside three raw clients whose
/// uploads break the stream budgets; returns the final weights and the round.
async fn round_with_flooding_clients(attack: bool) -> (Vec<u8>, synfed_server::RoundRecord) {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1, if attack { 4 } else { 1 });
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest = spawn_clients(&url, 0..1, 1);
    if attack {
        let mut raws = Vec::new();
        for name in ["tiny", "empty", "long-name"] {
            let mut raw = RawClient::connect(&url, name, None).await;
            raw.register(100).await.unwrap();
            raws.push(raw);
        }
        for raw in &mut raws {
            let task = raw.task().await.r#ref.unwrap();
            let model = raw.model(&task).await;
            let header = raw.header(&task, 8, 2.0, model.len() as u32);
            let messages: Vec<UpdateMessage> = match raw.name.as_str() {
                // every tensor in 1-byte chunks: valid pieces, far too many messages
                "tiny" => std::iter::once(header)
                    .chain(
                        model
                            .iter()
                            .flat_map(|t| t.chunks(1).collect::<Vec<_>>())
                            .map(|c| raw.chunk(&task, c)),
                    )
                    .collect(),
                // 100,000 empty chunks of the first tensor
                "empty" => {
                    let mut empty = model[0].chunk(0, MAX_CHUNK_BYTES);
                    empty.data.clear();
                    std::iter::once(header)
                        .chain((0..100_000).map(|_| raw.chunk(&task, empty.clone())))
                        .collect()
                }
                // one chunk whose tensor name is a megabyte: more bytes than the update owes
                _ => {
                    let chunk = TensorChunk {
                        name: "w".repeat(1 << 20),
                        ..model[0].chunk(0, MAX_CHUNK_BYTES)
                    };
                    vec![header, raw.chunk(&task, chunk)]
                }
            };
            let sent = messages.len();
            let started = Instant::now();
            let (code, message) = raw.push(messages).await;
            let seconds = started.elapsed().as_secs_f64();
            match raw.name.as_str() {
                "tiny" => {
                    assert!(sent > 50_000, "{sent}");
                    assert_eq!(code, Code::ResourceExhausted, "{message}");
                    assert!(message.contains("messages"), "{message}");
                }
                "empty" => {
                    assert_eq!(code, Code::InvalidArgument, "{message}");
                    assert!(message.contains("empty chunk"), "{message}");
                }
                _ => {
                    assert_eq!(code, Code::ResourceExhausted, "{message}");
                    assert!(message.contains("bytes"), "{message}");
                    assert!(message.len() < 200, "the name is not echoed: {message}");
                }
            }
            assert!(seconds < 5.0, "{}: refused after {seconds} s", raw.name);
        }
    }
    let summary = server.await.unwrap().unwrap();
    assert_eq!(
        honest
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .accepted,
        vec![1]
    );
    (weights(dir.path()), summary.rounds[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_past_their_message_or_byte_budget_are_cut_and_do_not_change_the_aggregate() {
    let (attacked, round) = round_with_flooding_clients(true).await;
    assert_eq!((round.updates, round.refused), (1, 3), "{round:?}");
    let (clean, round) = round_with_flooding_clients(false).await;
    assert_eq!((round.updates, round.refused), (1, 0), "{round:?}");
    assert!(
        attacked == clean,
        "the flooding clients changed the aggregate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_upload_is_cut_at_the_round_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, 2);
    config.timing.round_timeout_s = 3.0;
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest = spawn_clients(&url, 0..1, 1);
    let mut staller = RawClient::connect(&url, "staller", None).await;
    staller.register(100).await.unwrap();
    let task = staller.task().await;
    let opened = Instant::now();
    let deadline_ms = task.deadline_unix_ms;
    let task = task.r#ref.unwrap();
    let model = staller.model(&task).await;
    let (code, message, _) = {
        let half = half_an_update(&staller, &task, &model);
        push_then_stall(&mut staller, half).await
    };
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("deadline"), "{message}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // cut at the deadline: not before, and not long after
    assert!(
        now_ms + 500 >= deadline_ms,
        "cut {} ms early",
        deadline_ms - now_ms
    );
    assert!(
        opened.elapsed() < Duration::from_millis(4_500),
        "cut {:?} after the round opened (deadline 3 s)",
        opened.elapsed()
    );
    let summary = server.await.unwrap().unwrap();
    let round = &summary.rounds[0];
    // the engine closing the round at the deadline (dropped) and the handler cutting the
    // upload then (refused) race: either way the staller is left out
    assert_eq!(
        (round.updates, round.refused + round.dropped),
        (1, 1),
        "{round:?}"
    );
    assert!(round.seconds < 4.5, "{round:?}");
    assert_eq!(
        honest
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .accepted,
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_without_progress_is_cut_after_the_stall_timeout_and_may_be_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, 2);
    config.limits.stall_timeout_s = 1.0;
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let honest = spawn_clients(&url, 0..1, 1);
    let mut staller = RawClient::connect(&url, "staller", None).await;
    staller.register(100).await.unwrap();
    let task = staller.task().await.r#ref.unwrap();
    let model = staller.model(&task).await;
    let (code, message, seconds) = {
        let half = half_an_update(&staller, &task, &model);
        push_then_stall(&mut staller, half).await
    };
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("limits.stall_timeout_s"), "{message}");
    assert!((0.9..3.0).contains(&seconds), "cut after {seconds} s");
    // a stall is a broken transfer, not a refusal: the whole update may follow
    let (code, message) = staller.push(staller.update(&task, &model, 8)).await;
    assert_eq!(code, Code::Ok, "{message}");
    let summary = server.await.unwrap().unwrap();
    let round = &summary.rounds[0];
    assert_eq!((round.updates, round.refused), (2, 0), "{round:?}");
    assert_eq!(
        honest
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .accepted,
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_stopping_on_a_fatal_error_tells_its_clients_who_exit_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = small_config(&out, 50, 2);
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);
    let clients = spawn_clients(&url, 0..2, 2);
    // after the first checkpoint, the run folder's path becomes a file: the next checkpoint
    // cannot be written (a file is no directory, even to root)
    let checkpoint = out.join("checkpoint.safetensors");
    while !checkpoint.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&out, dir.path().join("moved")).unwrap();
    std::fs::write(&out, b"not a directory").unwrap();
    let broken = Instant::now();

    let err = server.await.unwrap().unwrap_err();
    let reason = err.to_string();
    assert!(reason.contains("Not a directory"), "{reason}");
    for c in clients {
        let err = c.await.unwrap().unwrap_err();
        match &err {
            ClientError::ServerStopped { reason: told } => assert_eq!(told, &reason),
            other => panic!("the client ended with {other} instead of the server's reason"),
        }
        assert!(err.to_string().contains("Not a directory"), "{err}");
    }
    // told within the grace period, not after retrying an unreachable server
    assert!(
        broken.elapsed() < Duration::from_secs(8),
        "the clients took {:?}",
        broken.elapsed()
    );
}

/// Without tokens, the session secret is what an upload is checked against before any of its
/// bytes is read: the upload stream here never yields a message, so a server that pulled one
/// before checking would wait on it instead of answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_without_a_session_secret_is_refused_before_any_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, url) = bind().await;
    let server = spawn_server(small_config(dir.path(), 1, 1), listener);
    let mut raw = RawClient::connect(&url, "anyone", None).await;
    for (session, code) in [
        (None, Code::Unauthenticated),
        (Some("0".repeat(32)), Code::NotFound),
    ] {
        raw.session = session;
        let silent = raw.request(tokio_stream::pending::<UpdateMessage>());
        let status = tokio::time::timeout(Duration::from_secs(10), raw.api.push_update(silent))
            .await
            .expect("the server waited for upload bytes before checking the session")
            .unwrap_err();
        assert_eq!(status.code(), code, "{status}");
    }
    server.abort();
}
