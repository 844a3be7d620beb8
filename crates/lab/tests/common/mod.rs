//! Shared helpers of the end-to-end federation tests: a server on 127.0.0.1:0 and clients in
//! the same process, talking real gRPC.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;
use synfed_client::{ClientConfig, ClientError, ClientReport, Retry, Share};
use synfed_data::Partition;
use synfed_server::{RunConfig, RunSummary, ServerError};
use tokio::task::JoinHandle;

#[path = "../../../models/tests/common/bits.rs"]
mod bits;

#[allow(unused_imports)] // each test file is its own crate; not all of them compare tensors
pub use bits::max_abs_diff;

/// A small, fast run: `mlp` of width 16 on the embedded MNIST subset.
pub fn small_config(out: &Path, rounds: u64, min_clients: usize) -> RunConfig {
    let mut c = RunConfig {
        out: out.to_path_buf(),
        rounds,
        ..RunConfig::default()
    };
    c.model.width = Some(16);
    c.data.eval_limit = Some(100);
    c.sampling.min_clients = min_clients;
    c.timing.round_timeout_s = 60.0;
    c.timing.pull_timeout_s = 1.0;
    c.timing.heartbeat_interval_s = 0.2;
    c.timing.linger_s = 2.0;
    c.timing.wait_for_clients_s = 60.0;
    c
}

/// Client `k` of `n` of the run, on `url`.
pub fn client(url: &str, k: usize, n: usize) -> ClientConfig {
    let mut c = ClientConfig::new(
        url,
        format!("client-{k}"),
        "demo-mnist",
        Share {
            index: k,
            count: n,
            scheme: Partition::Iid,
            seed: 7,
        },
    );
    c.retry = Retry {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        give_up_after: Duration::from_secs(30),
    };
    c
}

pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Starts the server of `config` on `listener` on its own task, to run until its last round
/// (nothing stops it from outside, nothing is resumed).
pub fn spawn_server(
    config: RunConfig,
    listener: tokio::net::TcpListener,
) -> JoinHandle<Result<RunSummary, ServerError>> {
    tokio::spawn(synfed_server::run(
        config,
        listener,
        false,
        std::future::pending(),
    ))
}

/// Starts the honest clients `ks` (each with its share of the data among `n`, [`client`]) of
/// the server at `url`, each on its own task, on the CPU, running until the run ends.
pub fn spawn_clients(
    url: &str,
    ks: std::ops::Range<usize>,
    n: usize,
) -> Vec<JoinHandle<Result<ClientReport, ClientError>>> {
    ks.map(|k| {
        tokio::spawn(synfed_client::run(
            client(url, k, n),
            candle_core::Device::Cpu,
            std::future::pending(),
        ))
    })
    .collect()
}

/// Runs the server of `config` with `clients` (built from the server's URL) to the end, on
/// the CPU: [`synfed_lab::simulate`], as `synfed simulate` and `synfed compare` run it.
pub async fn federation(
    config: RunConfig,
    clients: impl FnOnce(&str) -> Vec<ClientConfig>,
) -> (RunSummary, Vec<ClientReport>) {
    let simulated = synfed_lab::simulate(
        config,
        |_, url| Ok(clients(url)),
        &candle_core::Device::Cpu,
        std::future::pending(),
    )
    .await
    .unwrap();
    (simulated.summary, simulated.clients)
}

pub use raw::RawClient;

/// A hand-driven client speaking the generated gRPC API directly: it can send anything.
pub mod raw {
    use synfed_wire::chunks::{EncodedTensor, MAX_CHUNK_BYTES};
    use synfed_wire::proto::federation_client::FederationClient;
    use synfed_wire::proto::{
        pull_task_reply, update_message, FetchModelRequest, PullTaskRequest, RegisterRequest, Task,
        TaskRef, TensorChunk, UpdateHeader, UpdateMessage,
    };
    use tonic::transport::Channel;
    use tonic::{Code, Request};

    pub struct RawClient {
        pub api: FederationClient<Channel>,
        pub name: String,
        pub run_id: String,
        pub token: Option<String>,
        /// The session secret Register returned, sent on every later call.
        pub session: Option<String>,
    }

    impl RawClient {
        pub async fn connect(url: &str, name: &str, token: Option<&str>) -> Self {
            let api = FederationClient::connect(url.to_string())
                .await
                .unwrap()
                .max_decoding_message_size(synfed_wire::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(64 << 20);
            Self {
                api,
                name: name.into(),
                run_id: String::new(),
                token: token.map(String::from),
                session: None,
            }
        }

        pub fn request<T>(&self, message: T) -> Request<T> {
            let mut request = Request::new(message);
            if let Some(token) = &self.token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            if let Some(session) = &self.session {
                request.metadata_mut().insert(
                    synfed_wire::proto::SESSION_METADATA,
                    session.parse().unwrap(),
                );
            }
            request
        }

        pub async fn register(&mut self, examples: u64) -> Result<(), tonic::Status> {
            let reply = self
                .api
                .register(self.request(RegisterRequest {
                    client_name: self.name.clone(),
                    num_examples: examples,
                }))
                .await?
                .into_inner();
            self.run_id = reply.run_id;
            self.session = Some(reply.session_secret);
            Ok(())
        }

        /// Pulls until a task arrives.
        pub async fn task(&mut self) -> Task {
            loop {
                let reply = self
                    .api
                    .pull_task(self.request(PullTaskRequest {
                        run_id: self.run_id.clone(),
                        client_id: self.name.clone(),
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                match reply.reply {
                    Some(pull_task_reply::Reply::Task(task)) => return task,
                    Some(pull_task_reply::Reply::Idle(_)) => continue,
                    other => panic!("no task: {other:?}"),
                }
            }
        }

        /// The task's global model as encoded tensors (a valid update template).
        pub async fn model(&mut self, task: &TaskRef) -> Vec<EncodedTensor> {
            let mut stream = self
                .api
                .fetch_model(self.request(FetchModelRequest {
                    client_id: self.name.clone(),
                    r#ref: Some(task.clone()),
                }))
                .await
                .unwrap()
                .into_inner();
            let mut chunks: Vec<TensorChunk> = Vec::new();
            while let Some(m) = stream.message().await.unwrap() {
                chunks.push(m.chunk.unwrap());
            }
            // Reassemble per tensor (chunks arrive in order).
            let mut out: Vec<(TensorChunk, Vec<u8>)> = Vec::new();
            for c in chunks {
                match out.last_mut() {
                    Some((first, bytes)) if first.name == c.name => {
                        bytes.extend_from_slice(&c.data)
                    }
                    _ => {
                        let data = c.data.clone();
                        out.push((c, data));
                    }
                }
            }
            out.into_iter()
                .map(|(c, bytes)| {
                    let shape: Vec<usize> = c.shape.iter().map(|&d| d as usize).collect();
                    let values: Vec<f32> = bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    let t = candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)
                        .unwrap();
                    // A small, valid update: a tenth of the weights.
                    EncodedTensor::new(c.name, &(t * 0.1).unwrap()).unwrap()
                })
                .collect()
        }

        pub fn header(
            &self,
            task: &TaskRef,
            examples: u64,
            loss: f64,
            count: u32,
        ) -> UpdateMessage {
            UpdateMessage {
                client_id: self.name.clone(),
                r#ref: Some(task.clone()),
                part: Some(update_message::Part::Header(UpdateHeader {
                    num_examples: examples,
                    train_loss: loss,
                    tensor_count: count,
                })),
            }
        }

        pub fn chunk(&self, task: &TaskRef, chunk: TensorChunk) -> UpdateMessage {
            UpdateMessage {
                client_id: self.name.clone(),
                r#ref: Some(task.clone()),
                part: Some(update_message::Part::Chunk(chunk)),
            }
        }

        /// A complete, valid update of `tensors` as messages.
        pub fn update(
            &self,
            task: &TaskRef,
            tensors: &[EncodedTensor],
            examples: u64,
        ) -> Vec<UpdateMessage> {
            let mut messages = vec![self.header(task, examples, 2.0, tensors.len() as u32)];
            for t in tensors {
                for c in t.chunks(MAX_CHUNK_BYTES) {
                    messages.push(self.chunk(task, c));
                }
            }
            messages
        }

        /// Pushes `messages`; returns the status code (Ok for success) and message.
        pub async fn push(&mut self, messages: Vec<UpdateMessage>) -> (Code, String) {
            let request = self.request(tokio_stream::iter(messages));
            match self.api.push_update(request).await {
                Ok(_) => (Code::Ok, String::new()),
                Err(status) => (status.code(), status.message().to_string()),
            }
        }
    }
}
