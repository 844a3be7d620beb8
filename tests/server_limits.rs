//! Limits the server enforces before it does work for a peer (issue 17, item 2, network side),
//! exercised by a raw gRPC client playing the attacker against an in-process server on port 0.

use std::time::Duration;
use synfed_server::RunConfig;
use synfed_wire::proto::federation_client::FederationClient;
use synfed_wire::proto::UpdateMessage;
use tonic::codegen::tokio_stream;
use tonic::Code;

const TOKENS: &str = "[clients]\nclient-0 = \"token-of-client-zero\"\n";

/// A one-round width-16 MLP run on port 0 that waits a minute for clients, with `tokens` if
/// given; returns its URL and the server task.
async fn start_server(
    dir: &std::path::Path,
    tokens: Option<std::path::PathBuf>,
) -> (
    String,
    tokio::task::JoinHandle<synfed_server::Result<synfed_server::RunSummary>>,
) {
    let mut config = RunConfig {
        out: dir.join("run"),
        rounds: 1,
        ..RunConfig::default()
    };
    config.model.width = Some(16);
    config.data.eval_limit = Some(100);
    config.sampling.min_clients = 1;
    config.timing.wait_for_clients_s = 60.0;
    config.security.tokens = tokens;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(synfed_server::run(
        config,
        listener,
        false,
        std::future::pending(),
    ));
    (url, server)
}

/// A push without a token is refused before its first message is read: the upload stream here
/// never yields a message, so a server that pulled a message before checking the token would
/// wait on it forever instead of answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_without_a_token_is_refused_before_any_upload_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS).unwrap();
    let (url, server) = start_server(dir.path(), Some(tokens)).await;

    let mut api = FederationClient::connect(url).await.unwrap();
    let silent = tokio_stream::pending::<UpdateMessage>();
    let status = tokio::time::timeout(Duration::from_secs(10), api.push_update(silent))
        .await
        .expect("the server waited for upload bytes before checking the token")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    server.abort();
}

/// A peer's string is bounded and its control characters escaped before the server echoes it in
/// an error: an unregistered client name of a terminal escape plus a megabyte comes back as at
/// most 96 characters with the escape shown as text and the cut counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_name_is_echoed_bounded_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = start_server(dir.path(), None).await;

    let mut api = FederationClient::connect(url).await.unwrap();
    let name = format!("\u{1b}[2J\nforged{}", "x".repeat(1_000_000));
    let status = api
        .leave(synfed_wire::proto::LeaveRequest {
            run_id: String::new(),
            client_id: name.clone(),
            reason: "bye".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status}");
    let message = status.message();
    // 2 escaped control characters + "[2J" + "forged" + 86 of the x's = 96 characters kept.
    let kept = 1 + 3 + 1 + 6 + 85;
    let expected = format!(
        "unknown client `\\u{{1b}}[2J\\nforged{}…(+{} bytes)`: register first",
        "x".repeat(85),
        name.len() - kept
    );
    assert_eq!(message, expected);
    assert!(!message.contains('\u{1b}') && !message.contains('\n'));
    server.abort();
}
