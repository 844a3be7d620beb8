//! What a comparison compares and how each of its cells runs, as the user writes it (TOML)
//! and as its output folder keeps it (`compare.toml`, so that a rerun, a shard and a merge can
//! tell whether a folder holds the same comparison).
//!
//! The serialised form is a contract with every finished folder: fields are only ever added,
//! with defaults, so that old `compare.toml` files still parse.

use super::error::{ComparisonError, Result};
use super::variants::Variant;
use crate::attacking::AttackOptions;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use synfed_attack::AttackKind;
use synfed_data::Partition;
use synfed_defence::Defence;
use synfed_models::{Arch, ModelConfig};
use synfed_server::Algorithm;
use synfed_synapse::{FuzzyPlacement, Hyper, MethodSet};

fn is_server_only(placements: &[FuzzyPlacement]) -> bool {
    placements == [FuzzyPlacement::Server]
}

/// The file holding the effective configuration of an output folder.
pub const CONFIG_FILE: &str = "compare.toml";

/// What a comparison measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Gradient-inversion attacks on federations: what a server's tap sees of real clients.
    #[default]
    Privacy,
    /// Gradient-inversion attacks on centrally built (and trained) models, on fixed
    /// consecutive held-out batches: the paper's Table 3 protocol.
    Inversion,
    /// Centralized k-fold training per method set (paper Tables 1–2).
    Learning,
}

/// One model of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub arch: Arch,
    /// Base width (absent: the published size).
    #[serde(default)]
    pub width: Option<usize>,
}

impl ModelEntry {
    /// `mlp-w64` / `resnet20`.
    pub fn slug(&self) -> String {
        match self.width {
            Some(w) => format!("{}-w{w}", self.arch),
            None => self.arch.to_string(),
        }
    }
}

/// The comparison: what is compared and how each cell is run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// `privacy` (federations), `inversion` (the paper's Table 3 protocol) or `learning`;
    /// `--kind` overrides it.
    pub kind: Kind,
    /// Seed of every cell (model initialisation, partition, batches, attacker).
    pub seed: u64,
    /// Data set (`demo-mnist`, `demo-cifar10`, or `mnist`/`cifar10`/`cifar100` from `data_dir`).
    pub data: String,
    pub data_dir: Option<PathBuf>,
    /// `--kind inversion`: use only the data set's test split, its first `held_out` images as
    /// the test split (attacked and tested on) and the rest as the training split (for data
    /// sets whose training split is not at hand, as CIFAR-100's here).
    pub held_out: Option<usize>,
    /// Evaluate on at most this many test images.
    pub eval_limit: usize,
    /// Clients per federation (at least `batches`).
    pub clients: usize,
    /// How the training split is cut among the clients.
    pub split: Partition,
    /// `fedsgd` (the attack's setting) or `fedavg`.
    pub algorithm: Algorithm,
    /// Rounds of training before the "trained" attacks (0: untrained only).
    pub rounds: u64,
    /// K: attacked batches per model state (the updates of clients 0 … K−1).
    pub batches: usize,
    /// Learning rate and batch size of the federation.
    pub lr: f64,
    pub batch_size: usize,
    /// Which BatchNorm statistics the clients compute their updates with: `train` (batch
    /// statistics) or `eval` (running statistics, the reference attack's protocol); the run's
    /// `training.bn_mode`.
    pub bn_mode: synfed_synapse::BnMode,
    /// Iterations and restarts of each attack.
    pub attack_iterations: usize,
    pub attack_restarts: usize,
    /// The attackers (`ig`, `analytic`, `dlg`, `bn-prior`, and `imprint`, a malicious server):
    /// every captured batch is attacked by each; with more than one honest-but-curious attack,
    /// the report adds their worst case per image (`imprint` is reported apart). Left out of the
    /// saved configuration when it is `["ig"]`, so that folders of older comparisons still
    /// hold the same comparison.
    #[serde(with = "attack_list", skip_serializing_if = "attack_list::is_default")]
    pub attacks: Vec<AttackKind>,
    /// Method sets compared (default: all eight, in the paper's order).
    pub methods: Vec<MethodSet>,
    /// Where fuzzy learning rates (I) act in the federations (`training.fuzzy_at`): every
    /// method set with I is run once per placement listed; `client` rows are labelled
    /// `<set> @client`. Left out of the saved configuration while it is `["server"]`, so that
    /// folders of older comparisons still hold the same comparison.
    #[serde(skip_serializing_if = "is_server_only")]
    pub fuzzy_at: Vec<FuzzyPlacement>,
    /// Defences (`dp:C=…,sigma=…`, `prune:p=…`), each run with every set of `defended`.
    pub defences: Vec<String>,
    /// Method sets the defences are combined with.
    pub defended: Vec<MethodSet>,
    /// LR-matched controls: the baseline (`none`) at lr × each factor (× Γ is always added
    /// when a compared set splits weights).
    pub lr_factors: Vec<f64>,
    /// Width-matched control: the baseline with width / Γ (as many distinct units as the split
    /// model has); models without an explicit width are skipped.
    pub width_matched: bool,
    /// τ, d_re, Γ of the mechanisms.
    pub tau: f64,
    pub d_re: f64,
    pub gamma: usize,
    pub models: Vec<ModelEntry>,
    /// Centralized epochs (lr `learning.lr` × the variant's factor, batch
    /// `learning.batch_size`) that make the trained state: `--kind inversion` attacks the
    /// pretrained model (0: untrained only); `--kind privacy` starts the trained state's
    /// federation from it and captures round `rounds` + 1 (0: the trained state is `rounds`
    /// federated rounds from the initial weights).
    pub pretrain_epochs: usize,
    /// `--kind inversion`: the captures expose the batch's labels (the reference attack is
    /// given them); otherwise the attacker recovers them.
    pub expose_labels: bool,
    /// `--kind inversion`: put the paper's Table 3 values beside synfed's in the report.
    pub paper_table3: bool,
    /// `--kind learning`: folds, epochs, lr and batch size of centralized training.
    pub learning: LearningConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    pub folds: usize,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub patience: usize,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            folds: 3,
            epochs: 5,
            lr: 0.01,
            batch_size: 50,
            patience: 5,
        }
    }
}

impl Default for CompareConfig {
    fn default() -> Self {
        let hyper = Hyper::default();
        Self {
            kind: Kind::Privacy,
            seed: 1,
            data: "demo-mnist".into(),
            data_dir: None,
            held_out: None,
            eval_limit: 400,
            clients: 4,
            split: Partition::Iid,
            algorithm: Algorithm::FedSgd,
            rounds: 10,
            batches: 4,
            lr: 0.1,
            batch_size: 4,
            bn_mode: synfed_synapse::BnMode::Train,
            attack_iterations: 300,
            attack_restarts: 1,
            attacks: vec![AttackKind::Ig],
            methods: MethodSet::paper_order().to_vec(),
            fuzzy_at: vec![FuzzyPlacement::Server],
            defences: Vec::new(),
            defended: vec![MethodSet::NONE],
            lr_factors: vec![0.5],
            width_matched: true,
            tau: hyper.tau,
            d_re: hyper.d_re,
            gamma: hyper.gamma,
            models: vec![ModelEntry {
                arch: Arch::Mlp,
                width: Some(64),
            }],
            pretrain_epochs: 0,
            expose_labels: false,
            paper_table3: false,
            learning: LearningConfig::default(),
        }
    }
}

impl CompareConfig {
    /// Checks what a user can get wrong before anything runs.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(ComparisonError::Invalid(why));
        if self.models.is_empty() || self.methods.is_empty() {
            return invalid("the comparison needs at least one model and one method set".into());
        }
        self.check_ranges()?;
        if self.batches == 0 || (self.kind != Kind::Inversion && self.batches > self.clients) {
            return invalid(format!(
                "batches (K = {}) must be between 1 and clients ({})",
                self.batches, self.clients
            ));
        }
        if self.attacks.is_empty() {
            return invalid("attacks must name at least one attack".into());
        }
        if let Some(twice) = self
            .attacks
            .iter()
            .enumerate()
            .find(|(i, a)| self.attacks[..*i].contains(a))
        {
            return invalid(format!("attacks names `{}` twice", twice.1));
        }
        for d in &self.defences {
            parse_defence(d)?;
        }
        for entry in &self.models {
            self.model_config(entry, MethodSet::NONE, 1)
                .validate()
                .map_err(|e| ComparisonError::Invalid(format!("model {}: {e}", entry.slug())))?;
        }
        if self.kind != Kind::Inversion && (self.held_out.is_some() || self.expose_labels) {
            return invalid(format!(
                "held_out and expose_labels belong to kind = \"inversion\" (this comparison is \
                 {:?})",
                self.kind
            ));
        }
        if self.kind == Kind::Learning && self.pretrain_epochs > 0 {
            return invalid(
                "pretrain_epochs belongs to privacy studies (kind = \"inversion\" or \"privacy\")"
                    .into(),
            );
        }
        if self.fuzzy_at.is_empty() {
            return invalid(
                "fuzzy_at must name at least one placement (`server`, `client`)".into(),
            );
        }
        if let Some(twice) = self
            .fuzzy_at
            .iter()
            .enumerate()
            .find(|(i, p)| self.fuzzy_at[..*i].contains(p))
        {
            return invalid(format!("fuzzy_at names `{}` twice", twice.1));
        }
        if self.kind != Kind::Privacy && self.fuzzy_at.contains(&FuzzyPlacement::Client) {
            return invalid(format!(
                "fuzzy_at = \"client\" places fuzzy learning rates at federated clients: it \
                 belongs to kind = \"privacy\" (this comparison is {:?})",
                self.kind
            ));
        }
        if self.kind == Kind::Inversion && !self.defences.is_empty() {
            return invalid("kind = \"inversion\" attacks centrally built models: defences apply to federations (kind = \"privacy\")".into());
        }
        Ok(())
    }

    /// Every count and rate within the range a comparison can run with, checked before any
    /// cell allocates or loops on it; the error names the field. The upper bounds are far
    /// beyond any study (they exist so that a typo such as `attack_iterations = 1e15` is an
    /// error, not a run that never ends).
    fn check_ranges(&self) -> Result<()> {
        let l = &self.learning;
        let counts: [(&str, u64, u64, u64); 13] = [
            ("clients", self.clients as u64, 1, 10_000),
            ("rounds", self.rounds, 0, 1_000_000),
            ("batches", self.batches as u64, 1, 100_000),
            ("batch_size", self.batch_size as u64, 1, 4_096),
            ("eval_limit", self.eval_limit as u64, 1, 10_000_000),
            (
                "attack_iterations",
                self.attack_iterations as u64,
                1,
                1_000_000,
            ),
            ("attack_restarts", self.attack_restarts as u64, 1, 1_000),
            ("pretrain_epochs", self.pretrain_epochs as u64, 0, 100_000),
            ("held_out", self.held_out.unwrap_or(1) as u64, 1, 10_000_000),
            ("learning.folds", l.folds as u64, 1, 100),
            ("learning.epochs", l.epochs as u64, 1, 100_000),
            ("learning.batch_size", l.batch_size as u64, 1, 100_000),
            ("learning.patience", l.patience as u64, 0, 100_000),
        ];
        for (field, value, lo, hi) in counts {
            if !(lo..=hi).contains(&value) {
                return Err(ComparisonError::Invalid(format!(
                    "{field} = {value} is outside {lo} … {hi}"
                )));
            }
        }
        for (field, value) in [("lr", self.lr), ("learning.lr", l.lr)] {
            if !(value > 0.0 && value <= 1e6) {
                return Err(ComparisonError::Invalid(format!(
                    "{field} = {value} must be a positive number (at most 1e6)"
                )));
            }
        }
        if let Some(f) = self.lr_factors.iter().find(|f| !(**f > 0.0 && **f <= 1e6)) {
            return Err(ComparisonError::Invalid(format!(
                "lr_factors: {f} must be a positive number (at most 1e6)"
            )));
        }
        if let Some(held_out) = self.held_out {
            let attacked = self.batches.saturating_mul(self.batch_size);
            if attacked > held_out {
                return Err(ComparisonError::Invalid(format!(
                    "held_out = {held_out} must cover the attacked images, batches × batch_size = \
                     {attacked}"
                )));
            }
        }
        Ok(())
    }

    /// The model of a cell: `entry`'s architecture and width (divided by `width_divisor` > 1,
    /// at least 1), `methods`, and the comparison's τ, d_re and Γ.
    pub fn model_config(
        &self,
        entry: &ModelEntry,
        methods: MethodSet,
        width_divisor: usize,
    ) -> ModelConfig {
        ModelConfig {
            arch: entry.arch,
            methods,
            tau: self.tau,
            d_re: self.d_re,
            gamma: self.gamma,
            width: entry.width.map(|w| match width_divisor {
                0 | 1 => w,
                divisor => (w / divisor).max(1),
            }),
        }
    }

    /// The model of `variant`'s cells of `entry`.
    pub fn variant_model(&self, entry: &ModelEntry, variant: &Variant) -> ModelConfig {
        self.model_config(entry, variant.methods, variant.width_divisor)
    }

    /// The model states attacked: untrained, and trained when there is training.
    pub fn states(&self) -> Vec<&'static str> {
        let trained = match self.kind {
            Kind::Inversion => self.pretrain_epochs > 0,
            Kind::Privacy => self.rounds > 0 || self.pretrain_epochs > 0,
            Kind::Learning => self.rounds > 0,
        };
        if trained {
            vec!["untrained", "trained"]
        } else {
            vec!["untrained"]
        }
    }

    /// The data set's name.
    pub fn dataset(&self) -> Result<synfed_data::DatasetName> {
        self.data.parse().map_err(|e| ComparisonError::Data {
            context: "data".into(),
            source: Box::new(e),
        })
    }

    /// The data set's splits as the comparison uses them (carved by `held_out`).
    pub fn splits(&self) -> Result<synfed_data::Splits> {
        let name = self.dataset()?;
        let data = |context: String| {
            move |e| ComparisonError::Data {
                context,
                source: Box::new(e),
            }
        };
        let splits = match self.held_out {
            Some(n) => {
                let whole = name
                    .load_test(self.data_dir.as_deref())
                    .map_err(data(format!("loading the test split of {name}")))?;
                synfed_data::Splits::held_out(&whole, n)
                    .map_err(data(format!("holding out {n} images of {name}")))?
            }
            None => name
                .load(self.data_dir.as_deref())
                .map_err(data(format!("loading {name}")))?,
        };
        Ok(splits)
    }

    /// Size of the data set's training split (for the DP accountant's sampling rate).
    pub fn train_examples(&self) -> Result<usize> {
        Ok(self.splits()?.train.len())
    }

    /// How `attack` runs in this comparison: the reference settings with the comparison's
    /// iterations, restarts and seed.
    pub fn attack_options(&self, attack: AttackKind) -> AttackOptions {
        AttackOptions {
            attack,
            iterations: self.attack_iterations,
            restarts: self.attack_restarts,
            seed: self.seed,
            ..AttackOptions::default()
        }
    }

    /// The folder of `attack`'s results in a cell's folder `dir`: `attack/` when the comparison
    /// runs one attacker (the layout of older comparisons), `attack/<name>/` otherwise.
    pub fn attack_root(&self, dir: &Path, attack: AttackKind) -> PathBuf {
        if self.attacks.len() == 1 {
            dir.join("attack")
        } else {
            dir.join("attack").join(attack.as_str())
        }
    }

    /// Writes the configuration into `out` as [`CONFIG_FILE`], creating the folder; a folder
    /// that already holds another comparison is refused (a rerun of the same one continues it).
    pub fn save(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| ComparisonError::io("creating", out, e))?;
        let saved = out.join(CONFIG_FILE);
        let text = toml::to_string(self).map_err(ComparisonError::SaveConfig)?;
        if saved.exists() {
            let before = std::fs::read_to_string(&saved)
                .map_err(|e| ComparisonError::io("reading", &saved, e))?;
            if before != text {
                return Err(ComparisonError::AnotherComparison {
                    out: out.to_path_buf(),
                    saved,
                });
            }
        }
        std::fs::write(&saved, &text).map_err(|e| ComparisonError::io("writing", &saved, e))
    }

    /// The configuration saved in the output folder `dir`, and its text.
    pub fn read_saved(dir: &Path) -> Result<(CompareConfig, String)> {
        let path = dir.join(CONFIG_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| ComparisonError::io("reading", &path, e))?;
        let config = toml::from_str(&text).map_err(|e| ComparisonError::parse(&path, e))?;
        Ok((config, text))
    }
}

/// `attacks` as a list of names; a name that is not an attack is refused naming the field.
mod attack_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use synfed_attack::AttackKind;

    pub fn is_default(attacks: &[AttackKind]) -> bool {
        attacks == [AttackKind::Ig]
    }

    pub fn serialize<S: Serializer>(attacks: &[AttackKind], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(attacks.iter().map(|a| a.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttackKind>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|name| {
                name.parse()
                    .map_err(|e| serde::de::Error::custom(format!("attacks: {e}")))
            })
            .collect()
    }
}

/// A defence's specification, checked.
pub(super) fn parse_defence(defence: &str) -> Result<Defence> {
    defence
        .parse::<Defence>()
        .map_err(|source| ComparisonError::Defence {
            defence: defence.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_and_rate_out_of_range_is_an_error_naming_its_field() {
        assert!(CompareConfig::default().validate().is_ok());
        type Edit = fn(&mut CompareConfig);
        let cases: [(Edit, &str); 18] = [
            (|c| c.clients = 0, "clients = 0"),
            (|c| c.rounds = 10_000_000, "rounds"),
            (|c| c.batches = 0, "batches"),
            (|c| c.batch_size = 0, "batch_size = 0"),
            (|c| c.batch_size = 1 << 20, "batch_size"),
            (|c| c.eval_limit = 0, "eval_limit"),
            (|c| c.attack_iterations = 0, "attack_iterations"),
            (
                |c| c.attack_iterations = 1_000_000_000_000_000,
                "attack_iterations",
            ),
            (|c| c.attack_restarts = 0, "attack_restarts"),
            (|c| c.learning.folds = 0, "learning.folds"),
            (|c| c.learning.epochs = 0, "learning.epochs"),
            (|c| c.learning.batch_size = 0, "learning.batch_size"),
            (|c| c.lr = f64::NAN, "lr = NaN"),
            (|c| c.lr = -0.1, "lr = -0.1"),
            (|c| c.learning.lr = f64::INFINITY, "learning.lr"),
            (|c| c.lr_factors = vec![0.0], "lr_factors"),
            (
                |c| {
                    c.kind = Kind::Inversion;
                    c.held_out = Some(10);
                    c.batches = 4;
                    c.batch_size = 4;
                },
                "held_out = 10 must cover the attacked images, batches × batch_size = 16",
            ),
            (
                |c| {
                    c.kind = Kind::Inversion;
                    c.pretrain_epochs = 1_000_000;
                },
                "pretrain_epochs",
            ),
        ];
        for (edit, field) in cases {
            let mut c = CompareConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "expected `{field}` in: {err}");
        }
    }

    #[test]
    fn default_compares_the_eight_sets_and_parses_back() {
        let c = CompareConfig::default();
        assert_eq!(c.methods.len(), 8);
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<CompareConfig>(&text).unwrap(), c);
        assert!(toml::from_str::<CompareConfig>("batchez = 3").is_err());
    }

    #[test]
    fn a_cells_model_takes_the_entry_the_variant_and_the_hyper_parameters() {
        let c = CompareConfig {
            tau: 0.2,
            d_re: 7.0,
            gamma: 4,
            ..CompareConfig::default()
        };
        let entry = ModelEntry {
            arch: Arch::ConvNet,
            width: Some(10),
        };
        let model = c.model_config(&entry, "III".parse().unwrap(), 4);
        assert_eq!(
            model,
            ModelConfig {
                arch: Arch::ConvNet,
                methods: "III".parse().unwrap(),
                tau: 0.2,
                d_re: 7.0,
                gamma: 4,
                width: Some(2), // 10 / 4, rounded down
            }
        );
        let tiny = ModelEntry {
            arch: Arch::Mlp,
            width: Some(1),
        };
        assert_eq!(c.model_config(&tiny, MethodSet::NONE, 2).width, Some(1));
        let published = ModelEntry {
            arch: Arch::Mlp,
            width: None,
        };
        assert_eq!(c.model_config(&published, MethodSet::NONE, 2).width, None);
    }

    #[test]
    fn out_of_range_model_settings_are_refused_naming_the_field() {
        for (text, field) in [
            ("gamma = 0", "gamma"),
            ("gamma = 65", "gamma"),
            ("tau = -1.0", "tau"),
            ("d_re = 0.0", "d_re"),
            ("[[models]]\narch = \"mlp\"\nwidth = 0", "width"),
        ] {
            let c: CompareConfig = toml::from_str(text).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        CompareConfig::default().validate().unwrap();
    }
}
