//! The connection to the server: TLS, the bearer token and the registration's session secret
//! on every call, and retries with exponential backoff while the server is unreachable.

use crate::config::{ClientConfig, Retry};
use crate::error::{ClientError, Result};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use synfed_wire::chunks::MAX_MESSAGE_BYTES;
use synfed_wire::proto::federation_client::FederationClient;
use synfed_wire::proto::SESSION_METADATA;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tracing::debug;

/// The session secret of the client's registration, shared by every clone of the [`Api`]:
/// set when the server answers Register, sent on every call after (Register included, so that
/// a client that reconnects keeps its name).
#[derive(Clone, Default)]
pub struct Session {
    secret: Arc<Mutex<Option<MetadataValue<Ascii>>>>,
}

impl Session {
    /// Keeps `secret` (as the server sent it) for every later call.
    pub fn set(&self, secret: &str) -> Result<()> {
        let value = secret.parse().map_err(|_| {
            ClientError::Protocol("a session secret HTTP headers cannot carry".into())
        })?;
        *self
            .secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value);
        Ok(())
    }

    fn get(&self) -> Option<MetadataValue<Ascii>> {
        self.secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Adds `authorization: Bearer <token>` and the session secret to every call.
#[derive(Clone)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
    session: Session,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        if let Some(secret) = self.session.get() {
            request.metadata_mut().insert(SESSION_METADATA, secret);
        }
        Ok(request)
    }
}

/// The generated client with authentication and the message size limits of the protocol.
pub type Api = FederationClient<InterceptedService<Channel, Auth>>;

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ClientError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(config.server.clone())
        .map_err(|e| ClientError::Config(format!("server URL `{}`: {e}", config.server)))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(synfed_wire::chunks::STREAM_WINDOW)
        .initial_connection_window_size(synfed_wire::chunks::CONNECTION_WINDOW)
        .max_frame_size(synfed_wire::chunks::MAX_FRAME_BYTES);
    if let Some(tls) = &config.tls {
        let mut t = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => t = t.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => {
                return Err(ClientError::Config(
                    "a client certificate needs its key".into(),
                ))
            }
        }
        if let Some(domain) = &tls.domain {
            t = t.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(t)?;
    }
    Ok(endpoint)
}

/// Connects, retrying with backoff until `config.retry.give_up_after`; every call of the
/// returned client carries the secret `session` holds.
pub async fn connect(config: &ClientConfig, session: Session) -> Result<Api> {
    let endpoint = endpoint(config)?;
    let header = match &config.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            ClientError::Config("the token holds characters HTTP headers cannot carry".into())
        })?),
        None => None,
    };
    let channel = with_retry(&config.retry, &config.server, || {
        let endpoint = endpoint.clone();
        async move {
            endpoint
                .connect()
                .await
                .map_err(|e| Status::unavailable(format!("{e}: {}", source_chain(&e))))
        }
    })
    .await?;
    Ok(
        FederationClient::with_interceptor(channel, Auth { header, session })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out.join(": ")
}

/// Whether a status means "the server is not reachable right now".
pub fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// Runs `call` until it succeeds or fails with a non-transient status, sleeping with
/// exponential backoff in between; gives up after `retry.give_up_after`.
pub async fn with_retry<T, F, Fut>(retry: &Retry, url: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    let mut delay = retry.initial;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if transient(&status) => {
                if started.elapsed() >= retry.give_up_after {
                    return Err(ClientError::Unreachable {
                        url: url.to_string(),
                        attempts,
                        waited_s: started.elapsed().as_secs_f64(),
                        last: status.message().to_string(),
                    });
                }
                debug!(attempt = attempts, delay_ms = delay.as_millis() as u64, error = %status.message(), "server unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max);
            }
            Err(status) => return Err(status.into()),
        }
    }
}
