//! `initial_model`: a run starts from a checkpoint's weights only when the checkpoint holds the
//! model the configuration builds; anything else is a configuration error naming the field,
//! raised before any client is waited for.

use candle_core::{DType, Device};
use synfed_models::{checkpoint, InputShape, Model};
use synfed_server::{RunConfig, ServerError};

fn config(dir: &std::path::Path, width: usize) -> RunConfig {
    let mut c = RunConfig {
        rounds: 1,
        out: dir.join("run"),
        ..RunConfig::default()
    };
    c.model.width = Some(width);
    c.timing.wait_for_clients_s = 0.2;
    c
}

fn start(c: RunConfig) -> Result<synfed_server::RunSummary, ServerError> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        synfed_server::run(c, listener, false, std::future::pending()).await
    })
}

#[test]
fn a_checkpoint_of_another_model_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    // demo MNIST's mlp at width 8, while the run builds width 16
    let other = config(dir.path(), 8);
    let spec = other.model_spec(InputShape::new(1, 28, 28), 10);
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let path = dir.path().join("w8.safetensors");
    checkpoint::save(&model, None, &path).unwrap();

    let mut run = config(dir.path(), 16);
    run.initial_model = Some(path);
    let err = start(run).unwrap_err().to_string();
    assert!(err.contains("initial_model"), "{err}");
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn the_same_model_is_accepted_and_the_run_waits_for_clients() {
    let dir = tempfile::tempdir().unwrap();
    let run = config(dir.path(), 16);
    let spec = run.model_spec(InputShape::new(1, 28, 28), 10);
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let path = dir.path().join("w16.safetensors");
    checkpoint::save(&model, None, &path).unwrap();

    let mut run = run;
    run.initial_model = Some(path);
    // past the model: no client registers within the wait
    let err = start(run).unwrap_err();
    assert!(matches!(err, ServerError::NotEnoughClients { .. }), "{err}");
}
