//! The run configuration (`synfed serve` / `simulate --config`): TOML parse + validate.
//!
//! Contract: never a panic; a configuration that validates builds model specs that are within
//! the model budget or refused with an error (never an abort), and survives the trip through
//! `to_toml` that the run folder's `config.toml` takes, unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synfed_models::InputShape;
use synfed_server::RunConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = RunConfig::from_toml(text) else {
        return;
    };
    assert!(config.rounds >= 1);
    assert!(config.sampling.fraction > 0.0 && config.sampling.fraction <= 1.0);
    assert!((1..=config.sampling.min_clients).contains(&config.sampling.min_updates));
    assert!(config.training.lr.is_finite() && config.training.lr > 0.0);
    config.model.validate().expect("a valid run has a valid [model]");
    for (input, classes) in [(InputShape::new(1, 28, 28), 10), (InputShape::new(3, 32, 32), 100)] {
        // Either within budget or a typed refusal: what matters is that it returns.
        let _ = config.model_spec(input, classes).check_budget();
    }
    let text = config.to_toml().expect("a valid configuration writes");
    let again = RunConfig::from_toml(&text).expect("and its text reads and validates");
    assert_eq!(again, config, "config.toml round trip");
});
