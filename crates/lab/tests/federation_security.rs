//! Authentication (per-client bearer tokens) and transport security (TLS, mutual TLS with
//! certificates generated in the test).

mod common;

use common::*;
use std::time::{Duration, Instant};
use synfed_client::{ClientError, ClientTls};
use tonic::Code;

const TOKENS: &str =
    "[clients]\nclient-0 = \"token-of-client-zero\"\nclient-1 = \"token-of-client-one!\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_authenticate_clients_and_wrong_tokens_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS).unwrap();
    let mut config = small_config(&dir.path().join("run"), 1, 2);
    config.security.tokens = Some(tokens);
    let (listener, url) = bind().await;
    let server = spawn_server(config, listener);

    // A wrong token ends the client at once (no retrying).
    let mut wrong = client(&url, 0, 2);
    wrong.token = Some("not-the-right-token".into());
    let started = Instant::now();
    let err = synfed_client::run(wrong, candle_core::Device::Cpu, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !err.to_string().contains("not-the-right-token"),
        "the token must not be echoed: {err}"
    );

    let mut anonymous = RawClient::connect(&url, "client-0", None).await;
    let status = anonymous.register(10).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut borrowed = RawClient::connect(&url, "client-0", Some("token-of-client-one!")).await;
    let status = borrowed.register(10).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");

    let clients: Vec<_> = [("token-of-client-zero", 0), ("token-of-client-one!", 1)]
        .into_iter()
        .map(|(token, k)| {
            let mut c = client(&url, k, 2);
            c.token = Some(token.into());
            tokio::spawn(synfed_client::run(
                c,
                candle_core::Device::Cpu,
                std::future::pending(),
            ))
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap().accepted, vec![1]);
    }
    let summary = server.await.unwrap().unwrap();
    assert_eq!(summary.rounds[0].updates, 2);
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_with_generated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = file("ca.pem", &pki.ca);
    let mut config = small_config(&dir.path().join("run"), 1, 2);
    config.security.tls_cert = Some(file("server.pem", &pki.server_cert));
    config.security.tls_key = Some(file("server.key", &pki.server_key));
    config.security.client_ca = Some(ca.clone());
    let client_cert = file("client.pem", &pki.client_cert);
    let client_key = file("client.key", &pki.client_key);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = spawn_server(config, listener);

    // Without a client certificate the handshake fails: the client gives up as unreachable.
    let mut no_cert = client(&url, 0, 2);
    no_cert.retry.give_up_after = Duration::from_secs(1);
    no_cert.tls = Some(ClientTls {
        ca: Some(ca.clone()),
        cert: None,
        key: None,
        domain: Some("localhost".into()),
    });
    let err = synfed_client::run(no_cert, candle_core::Device::Cpu, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Unreachable { .. } | ClientError::Refused { .. }
        ),
        "{err}"
    );

    let clients: Vec<_> = (0..2)
        .map(|k| {
            let mut c = client(&url, k, 2);
            c.tls = Some(ClientTls {
                ca: Some(ca.clone()),
                cert: Some(client_cert.clone()),
                key: Some(client_key.clone()),
                domain: Some("localhost".into()),
            });
            tokio::spawn(synfed_client::run(
                c,
                candle_core::Device::Cpu,
                std::future::pending(),
            ))
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap().accepted, vec![1]);
    }
    assert_eq!(server.await.unwrap().unwrap().rounds[0].updates, 2);
}
