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
        let (summary, reports) = federation(config, |url| (0..3).map(|k| client(url, k, 3)).collect()).await;
        assert!(summary.complete);
        assert_eq!(summary.rounds.len(), 3);
        for r in &summary.rounds {
            assert_eq!((r.sampled, r.updates, r.refused, r.dropped), (3, 3, 0, 0), "{r:?}");
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
    assert!(weights[0] == weights[1], "same seed, different final weights");
}
