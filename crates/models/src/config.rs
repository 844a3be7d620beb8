//! `ModelConfig`: the model settings a user writes — architecture, mechanisms, width, τ, d_re,
//! Γ — declared once for every command that builds a model.
//!
//! `synfed train` and `synfed attack` read it from flags (`--model`, `--methods`, `--width`,
//! `--tau`, `--d-re`, `--gamma`, through `clap`'s `#[command(flatten)]` with the `clap`
//! feature), a federated run from its TOML `[model]` table (`arch`, `methods`, …), and a
//! comparison builds one per cell. Its checks ([`ModelConfig::validate`]) name the field that is
//! out of range, so each caller only adds where the field was written (`--tau`, `model.tau`).
//!
//! It is what a user chooses; [`ModelSpec`] is what every party rebuilds the model from (the
//! same settings plus the input shape, class count and seed, known only once the data are), and
//! [`Hyper`] is the mechanisms' own view of τ, d_re and Γ.

use crate::arch::Arch;
use crate::error::{ModelError, Result};
use crate::spec::{InputShape, ModelSpec, MAX_WIDTH};
use serde::{Deserialize, Serialize};
use synfed_synapse::{Hyper, MethodSet};

/// Most synapses per connection (Γ): a split layer holds Γ times the parameters of the plain
/// one, so Γ multiplies the model's memory; the paper uses Γ = 2.
pub const MAX_GAMMA: usize = 64;

/// The model settings: every field has a default, so a file or command line names only what
/// differs; an unknown field is an error, not a silent default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture: mlp, alexnet, resnet20, resnet32, resnet56, convnet, lenet.
    #[cfg_attr(feature = "clap", arg(long = "model", default_value = "mlp"))]
    pub arch: Arch,
    /// Method set: none, I, II, III, I+II, … I+II+III (or fuzzy, rejuvenation, splitting).
    #[cfg_attr(feature = "clap", arg(long, default_value = "none"))]
    pub methods: MethodSet,
    /// τ of fuzzy learning rates (I): the factors' spread, in [0, 2).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Hyper::default().tau))]
    pub tau: f64,
    /// d_re of weight rejuvenation (II): σ_re = max|w| / d_re, positive.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Hyper::default().d_re))]
    pub d_re: f64,
    /// Γ of weight splitting (III): synapses per connection, 1 to 64.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Hyper::default().gamma))]
    pub gamma: usize,
    /// Base width instead of the architecture's published one (hidden units of the mlp,
    /// channels of the first stage of a ResNet, …); absent: the published size.
    #[cfg_attr(feature = "clap", arg(long))]
    pub width: Option<usize>,
}

impl Default for ModelConfig {
    /// The published `mlp` without mechanisms, with the paper's τ, d_re and Γ.
    fn default() -> Self {
        let hyper = Hyper::default();
        Self {
            arch: Arch::Mlp,
            methods: MethodSet::NONE,
            tau: hyper.tau,
            d_re: hyper.d_re,
            gamma: hyper.gamma,
            width: None,
        }
    }
}

impl ModelConfig {
    /// τ, d_re and Γ together, as the mechanisms take them.
    pub fn hyper(&self) -> Hyper {
        Hyper {
            tau: self.tau,
            d_re: self.d_re,
            gamma: self.gamma,
        }
    }

    /// Checks every field's range; the error names the field (`tau`, `d_re`, `gamma`,
    /// `width`) and the reason.
    pub fn validate(&self) -> Result<()> {
        self.hyper().validate()?;
        if self.gamma > MAX_GAMMA {
            return Err(ModelError::BadSetting {
                field: "gamma",
                value: self.gamma.to_string(),
                reason: format!(
                    "must be between 1 and {MAX_GAMMA} (each connection becomes Γ synapses)"
                ),
            });
        }
        if let Some(width) = self.width {
            if width == 0 || width as u64 > MAX_WIDTH {
                return Err(ModelError::BadSetting {
                    field: "width",
                    value: width.to_string(),
                    reason: format!("must be between 1 and {MAX_WIDTH}"),
                });
            }
        }
        Ok(())
    }

    /// The spec of this model for images of `input` and `classes` classes, built from `seed`.
    pub fn spec(&self, input: InputShape, classes: usize, seed: u64) -> ModelSpec {
        let mut spec = ModelSpec::new(self.arch, input, classes, self.methods, seed);
        spec.hyper = self.hyper();
        spec.width = self.width;
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut ModelConfig)) -> ModelConfig {
        let mut config = ModelConfig::default();
        edit(&mut config);
        config
    }

    #[test]
    fn defaults_are_the_published_mlp_with_the_papers_hyper_parameters() {
        let config = ModelConfig::default();
        assert_eq!(config.arch, Arch::Mlp);
        assert_eq!(config.methods, MethodSet::NONE);
        assert_eq!((config.tau, config.d_re, config.gamma), (0.09, 14.0, 2));
        assert_eq!(config.width, None);
        config.validate().unwrap();
    }

    #[test]
    fn each_out_of_range_field_is_named_in_the_error() {
        for (config, field) in [
            (with(|c| c.tau = -0.1), "tau"),
            (with(|c| c.tau = 2.0), "tau"),
            (with(|c| c.tau = f64::NAN), "tau"),
            (with(|c| c.d_re = 0.0), "d_re"),
            (with(|c| c.d_re = -3.0), "d_re"),
            (with(|c| c.d_re = f64::INFINITY), "d_re"),
            (with(|c| c.gamma = 0), "gamma"),
            (with(|c| c.gamma = 65), "gamma"),
            (with(|c| c.width = Some(0)), "width"),
            (with(|c| c.width = Some(65_537)), "width"),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{config:?}: {err}");
        }
    }

    #[test]
    fn the_edges_of_each_range_are_accepted() {
        for config in [
            with(|c| c.tau = 0.0),
            with(|c| c.tau = 1.99),
            with(|c| c.d_re = 1e-6),
            with(|c| c.gamma = 1),
            with(|c| c.gamma = 64),
            with(|c| c.width = Some(1)),
            with(|c| c.width = Some(65_536)),
        ] {
            config
                .validate()
                .unwrap_or_else(|e| panic!("{config:?}: {e}"));
        }
    }

    #[test]
    fn spec_carries_every_setting() {
        let config = ModelConfig {
            arch: Arch::ResNet20,
            methods: "I+III".parse().unwrap(),
            tau: 0.2,
            d_re: 7.0,
            gamma: 3,
            width: Some(8),
        };
        let spec = config.spec(InputShape::new(3, 32, 32), 100, 9);
        assert_eq!(spec.arch, Arch::ResNet20);
        assert_eq!(spec.methods.to_string(), "I+III");
        assert_eq!(
            spec.hyper,
            Hyper {
                tau: 0.2,
                d_re: 7.0,
                gamma: 3
            }
        );
        assert_eq!(spec.width, Some(8));
        assert_eq!(
            (spec.input, spec.classes, spec.seed),
            (InputShape::new(3, 32, 32), 100, 9)
        );
    }

    #[test]
    fn a_partial_form_takes_the_defaults_and_a_typo_is_an_error() {
        let config: ModelConfig =
            serde_json::from_str(r#"{"arch": "resnet20", "methods": "I+III", "gamma": 4}"#)
                .unwrap();
        assert_eq!(
            config,
            ModelConfig {
                arch: Arch::ResNet20,
                methods: "I+III".parse().unwrap(),
                gamma: 4,
                ..ModelConfig::default()
            }
        );
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), config);
        let err = serde_json::from_str::<ModelConfig>(r#"{"widht": 4}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("widht"), "{err}");
        let err = serde_json::from_str::<ModelConfig>(r#"{"arch": "vgg"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vgg"), "{err}");
    }

    #[cfg(feature = "clap")]
    #[test]
    fn flags_spell_the_fields_as_the_commands_always_have() {
        use clap::Parser;
        #[derive(Parser)]
        struct Command {
            #[command(flatten)]
            model: ModelConfig,
        }
        let parsed = Command::try_parse_from(["synfed"]).unwrap().model;
        assert_eq!(parsed, ModelConfig::default());
        let parsed = Command::try_parse_from([
            "synfed",
            "--model",
            "lenet",
            "--methods",
            "I+II",
            "--width",
            "12",
            "--tau",
            "0.5",
            "--d-re",
            "3",
            "--gamma",
            "4",
        ])
        .unwrap()
        .model;
        assert_eq!(
            parsed,
            ModelConfig {
                arch: Arch::LeNet,
                methods: "I+II".parse().unwrap(),
                tau: 0.5,
                d_re: 3.0,
                gamma: 4,
                width: Some(12),
            }
        );
        assert!(Command::try_parse_from(["synfed", "--model", "vgg"]).is_err());
    }
}
