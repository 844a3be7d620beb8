//! The comparison configuration (`synfed compare --config`): TOML parse + validate, as the
//! command line reads it.
//!
//! Contract: never a panic; a comparison that validates has at least one model and method
//! set, 1 ≤ K batches (≤ clients for federations), positive finite learning rates, every
//! model setting valid, and survives the trip through the output folder's `compare.toml`
//! (which tells a rerun that the folder holds the same comparison) unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synfed_lab::comparison::{CompareConfig, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<CompareConfig>(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    assert!(!config.models.is_empty() && !config.methods.is_empty());
    assert!(config.batches >= 1);
    if config.kind != Kind::Inversion {
        assert!(config.batches <= config.clients);
    }
    assert!(config.lr.is_finite() && config.lr > 0.0);
    assert!(config.lr_factors.iter().all(|f| f.is_finite() && *f > 0.0));
    assert!(config.attack_iterations >= 1);
    for entry in &config.models {
        for method in &config.methods {
            config
                .model_config(entry, *method, 1)
                .validate()
                .expect("every cell's model is valid");
        }
    }
    let saved = toml::to_string(&config).expect("a valid comparison writes");
    let again: CompareConfig = toml::from_str(&saved).expect("and its text reads");
    assert_eq!(again, config, "compare.toml round trip");
    again.validate().expect("and validates");
});
