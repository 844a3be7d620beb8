//! The run configuration: everything that determines a federated run, read from TOML.
//!
//! Every field has a default, so a file only names what differs; unknown fields are errors (a
//! typo must not silently fall back to a default). The effective configuration is written to
//! `out/config.toml` so a run can always be reproduced.

use crate::error::{Result, ServerError};
pub use crate::limits::LimitsConfig;
pub use crate::tap::{TapConfig, TapMode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use synfed_defence::Defence;
use synfed_models::{InputShape, ModelSpec};
use synfed_synapse::{BnMode, FuzzyPlacement};

pub use synfed_models::ModelConfig;

/// How clients' work is combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Each sampled client sends the gradient of one batch at the global weights; the server
    /// averages them (weighted by examples) and takes one `SynapticSgd` step. The setting the
    /// paper's gradient-inversion attack targets.
    FedSgd,
    /// Each sampled client trains locally with `SynapticSgd` and sends θ_local − θ_global; the
    /// server adds the example-weighted mean of the differences.
    FedAvg,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::FedSgd => "fedsgd",
            Algorithm::FedAvg => "fedavg",
        })
    }
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of everything random in the run: model initialisation, client sampling, clients'
    /// batches and partitions, rejuvenation.
    pub seed: u64,
    /// Number of federated rounds.
    pub rounds: u64,
    /// `fedsgd` or `fedavg`.
    pub algorithm: Algorithm,
    /// Address the server listens on (`serve`; the simulation uses 127.0.0.1 on a free port).
    pub listen: String,
    /// Output directory: `config.toml`, `rounds.csv`, `checkpoint.safetensors`, `captures/`.
    pub out: PathBuf,
    /// The model every participant builds ([`ModelConfig`]; a `[model]` table names what
    /// differs from its defaults, the published size included). Without a `[model]` table:
    /// the `mlp` of width 128, a federation that runs in seconds.
    pub model: ModelConfig,
    /// Start from the weights of this checkpoint (a `checkpoint.safetensors` of a run or a
    /// pretrained model of the same [`ModelConfig`], fuzzy factors included) instead of the
    /// seed's initialisation: a federation of an already trained model. `--resume` takes
    /// precedence (the run's own checkpoint holds its state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_model: Option<PathBuf>,
    pub data: DataConfig,
    pub training: TrainingConfig,
    pub sampling: SamplingConfig,
    pub timing: TimingConfig,
    pub tap: TapConfig,
    pub security: SecurityConfig,
    pub aggregation: AggregationConfig,
    pub limits: LimitsConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            rounds: 20,
            algorithm: Algorithm::FedSgd,
            listen: "127.0.0.1:50051".into(),
            out: PathBuf::from("runs/federation"),
            model: ModelConfig {
                width: Some(128),
                ..ModelConfig::default()
            },
            initial_model: None,
            data: DataConfig::default(),
            training: TrainingConfig::default(),
            sampling: SamplingConfig::default(),
            timing: TimingConfig::default(),
            tap: TapConfig::default(),
            security: SecurityConfig::default(),
            aggregation: AggregationConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// The data set: the server evaluates on its test split, clients train on partitions of its
/// training split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `demo-mnist`, `demo-cifar10` (embedded), `mnist`, `cifar10`, `cifar100` (from `dir`).
    pub name: String,
    /// Directory of the full data sets.
    pub dir: Option<PathBuf>,
    /// Evaluate on at most this many test images (all when absent).
    pub eval_limit: Option<usize>,
    /// Batch size of the evaluation.
    pub eval_batch_size: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            name: "demo-mnist".into(),
            dir: None,
            eval_limit: None,
            eval_batch_size: 200,
        }
    }
}

/// What clients compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Learning rate: of the server's step (FedSGD) or of the clients' local steps (FedAvg).
    pub lr: f64,
    /// Batch size of a client's gradient (FedSGD) or local steps (FedAvg).
    pub batch_size: usize,
    /// FedAvg: local epochs over the client's partition (0: use `local_steps`).
    pub local_epochs: u32,
    /// FedAvg: local steps when `local_epochs` is 0.
    pub local_steps: u32,
    /// The defence clients apply to their updates before pushing them: `none`,
    /// `dp:C=1,sigma=0.5` (clip the update to L2 norm C, add N(0, σ²C²) noise),
    /// `dp:C=1,sigma=0.5,per-example` (DP-SGD, FedSGD only), `prune:p=0.1` (keep the largest
    /// 10 % of each tensor), or combinations joined by `+`. Forwarded to clients as text (the
    /// client parses it); checked here at load so that a typo fails early.
    pub defence: String,
    /// Which BatchNorm statistics the clients compute their updates with: `train` (batch
    /// statistics, as federated clients do) or `eval` (running statistics, the protocol of the
    /// reference attack, inversefed). Sent to clients with every task and recorded in every
    /// capture, so that the attacker replays the model the way the client ran it. On BatchNorm
    /// models the two protocols give very different attack results; models without BatchNorm
    /// are unaffected.
    pub bn_mode: BnMode,
    /// Where fuzzy learning rates (I) act: `server` (the global model's factors scale the
    /// server's step; clients send plain gradients, so I hides nothing from the server) or
    /// `client` (each client scales its gradient by private factors the server is never told;
    /// the server steps without factors). Sent to clients with every task and recorded in
    /// every capture. Runs without I are unaffected.
    pub fuzzy_at: FuzzyPlacement,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            batch_size: 8,
            local_epochs: 1,
            local_steps: 0,
            defence: "none".into(),
            bn_mode: BnMode::Train,
            fuzzy_at: FuzzyPlacement::Server,
        }
    }
}

impl TrainingConfig {
    /// The clients' defence, parsed and checked by the parser the clients use (empty means
    /// none); the error names the field, the text and the reason.
    pub fn parsed_defence(&self) -> Result<Defence> {
        Defence::parse_or_none(&self.defence).map_err(|reason| {
            ServerError::Config(format!("training.defence `{}`: {reason}", self.defence))
        })
    }
}

/// Which clients take part in a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Fraction of the registered clients sampled per round (seeded by (seed, round)).
    pub fraction: f64,
    /// At least this many clients are sampled, and a round starts only when this many are
    /// registered.
    pub min_clients: usize,
    /// A round's aggregate is applied only if at least this many updates arrived (otherwise
    /// the model stays as it was and the round is logged as failed).
    pub min_updates: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            fraction: 1.0,
            min_clients: 2,
            min_updates: 1,
        }
    }
}

/// Timeouts, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    /// A round closes this long after it opens, with whatever updates arrived.
    pub round_timeout_s: f64,
    /// How long a `PullTask` long-poll waits before answering "nothing yet".
    pub pull_timeout_s: f64,
    /// How often clients heartbeat while computing.
    pub heartbeat_interval_s: f64,
    /// A sampled client silent this long is dropped from the round (a straggler).
    pub heartbeat_timeout_s: f64,
    /// How long the server waits for `min_clients` registrations before giving up.
    pub wait_for_clients_s: f64,
    /// After the last round, how long the server stays up to tell clients the run is over.
    pub linger_s: f64,
}

impl Default for TimingConfig {
    fn default() -> Self {
        Self {
            round_timeout_s: 300.0,
            pull_timeout_s: 20.0,
            heartbeat_interval_s: 2.0,
            heartbeat_timeout_s: 30.0,
            wait_for_clients_s: 600.0,
            linger_s: 5.0,
        }
    }
}

/// Authentication and transport security.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// TOML file of client tokens (`[clients]` table: `name = "token"`). Absent: anyone may
    /// register under any name (fine on loopback, logged as a warning otherwise).
    pub tokens: Option<PathBuf>,
    /// PEM server certificate (chain); with `tls_key` turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// How the server combines a round's updates into one step (see [`crate::aggregation`]).
///
/// Serialized as its kebab-case name; `norm-bound` is not a rule but
/// [`AggregationConfig::norm_bound`], which combines with every rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Rule {
    /// The example-weighted mean Σ nₖ·uₖ / Σ nₖ, streamed in canonical order (no update is
    /// kept). One client can move it anywhere.
    #[default]
    Mean,
    /// The coordinate-wise median (the mean of the two middle values for an even count).
    Median,
    /// Per coordinate, the mean of what is left after dropping the ⌊β·n⌋ largest and the
    /// ⌊β·n⌋ smallest values (β = [`AggregationConfig::trim`]).
    TrimmedMean,
    /// The one update with the smallest Krum score (Blanchard et al. 2017): the sum of its
    /// squared distances to its n − f − 2 nearest neighbours.
    Krum,
    /// The example-weighted mean of the m updates with the smallest Krum scores.
    MultiKrum,
}

impl Rule {
    /// Every rule, in the order the documentation lists them.
    pub const ALL: [Rule; 5] = [
        Rule::Mean,
        Rule::Median,
        Rule::TrimmedMean,
        Rule::Krum,
        Rule::MultiKrum,
    ];

    /// The rule's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Mean => "mean",
            Rule::Median => "median",
            Rule::TrimmedMean => "trimmed-mean",
            Rule::Krum => "krum",
            Rule::MultiKrum => "multi-krum",
        }
    }

    /// Whether the rule needs every update of the round at once (all but the streamed mean).
    pub fn keeps_updates(self) -> bool {
        self != Rule::Mean
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if let Some(rule) = Rule::ALL.into_iter().find(|r| r.name() == text) {
            return Ok(rule);
        }
        let hint = if text == "norm-bound" {
            " (norm bounding is `aggregation.norm_bound = C`, beside any rule)"
        } else {
            ""
        };
        Err(format!(
            "aggregation.rule `{text}` is not one of mean, median, trimmed-mean, krum, multi-krum{hint}"
        ))
    }
}

impl TryFrom<String> for Rule {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        text.parse()
    }
}

impl From<Rule> for String {
    fn from(rule: Rule) -> String {
        rule.name().to_string()
    }
}

/// How a round's updates become one step, and how much of the server's memory that may take.
///
/// A client's example weight is bounded whatever the rule (see
/// [`crate::aggregation::weight`]); the rules other than `mean` keep the round's updates until
/// it closes, as f64: n clients × P parameters × 8 bytes, which must fit `memory_budget_mib`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// `mean` (default), `median`, `trimmed-mean`, `krum` or `multi-krum`.
    pub rule: Rule,
    /// trimmed-mean: β, the fraction of the largest and of the smallest values dropped per
    /// coordinate, in [0, 0.5) (⌊β·n⌋ each side: with 5 updates, β = 0.2 drops one each side).
    pub trim: f64,
    /// krum, multi-krum: f, the number of Byzantine clients a round tolerates; a round's
    /// aggregate needs at least 2f + 3 updates, so `sampling.min_updates` must be that large.
    pub byzantine: usize,
    /// multi-krum: m, how many of the best-scored updates are averaged (absent: n − f of the
    /// round's n updates). At most `sampling.min_updates` − f.
    pub select: Option<usize>,
    /// C: every update is scaled down to L2 norm at most C (over all its tensors) before the
    /// rule; with `mean`, the norm-bounded mean. Absent: updates are taken as sent.
    pub norm_bound: Option<f64>,
    /// MiB the kept updates of one round may take (rules other than `mean`): a run whose
    /// `min_clients` does not fit is refused at start, and a client whose registration would
    /// make a round's sample too large is refused (`RESOURCE_EXHAUSTED`).
    pub memory_budget_mib: u64,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            rule: Rule::Mean,
            trim: 0.1,
            byzantine: 1,
            select: None,
            norm_bound: None,
            memory_budget_mib: 1024,
        }
    }
}

impl AggregationConfig {
    /// Largest `memory_budget_mib` accepted (1 TiB; the budget in bytes must not overflow).
    pub const MAX_BUDGET_MIB: u64 = 1 << 20;

    /// The fewest updates a round needs for the rule to be defined (krum: 2f + 3).
    pub fn min_updates(&self) -> usize {
        match self.rule {
            Rule::Krum | Rule::MultiKrum => self.byzantine.saturating_mul(2).saturating_add(3),
            _ => 1,
        }
    }

    /// The budget in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.memory_budget_mib.min(Self::MAX_BUDGET_MIB) << 20
    }

    /// The fields that determine results, as JSON, or `None` for the plain mean (what every
    /// run did before the option existed, so that its checkpoint still resumes).
    pub fn fingerprint(&self) -> Option<serde_json::Value> {
        if self.rule == Rule::Mean && self.norm_bound.is_none() {
            return None;
        }
        let mut value = serde_json::json!({ "rule": self.rule.name() });
        let fields = value.as_object_mut()?;
        if let Some(c) = self.norm_bound {
            fields.insert("norm_bound".into(), c.into());
        }
        match self.rule {
            Rule::TrimmedMean => {
                fields.insert("trim".into(), self.trim.into());
            }
            Rule::Krum => {
                fields.insert("byzantine".into(), self.byzantine.into());
            }
            Rule::MultiKrum => {
                fields.insert("byzantine".into(), self.byzantine.into());
                fields.insert("select".into(), self.select.into());
            }
            Rule::Mean | Rule::Median => {}
        }
        Some(value)
    }

    /// Checks the ranges that serde cannot, against the run's `sampling`.
    fn validate(&self, sampling: &SamplingConfig) -> std::result::Result<(), String> {
        if !(self.trim.is_finite() && (0.0..0.5).contains(&self.trim)) {
            return Err(format!(
                "aggregation.trim must be in [0, 0.5), got {}",
                self.trim
            ));
        }
        if let Some(c) = self.norm_bound {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!(
                    "aggregation.norm_bound must be a positive number, got {c}"
                ));
            }
        }
        if !(1..=Self::MAX_BUDGET_MIB).contains(&self.memory_budget_mib) {
            return Err(format!(
                "aggregation.memory_budget_mib must be between 1 and {}, got {}",
                Self::MAX_BUDGET_MIB,
                self.memory_budget_mib
            ));
        }
        let needed = self.min_updates();
        if sampling.min_updates < needed {
            return Err(format!(
                "aggregation.byzantine = {}: {} needs at least 2f + 3 = {needed} updates per \
                 round; set sampling.min_updates (and min_clients) to at least {needed}, got {}",
                self.byzantine, self.rule, sampling.min_updates
            ));
        }
        match (self.rule, self.select) {
            (Rule::MultiKrum, Some(m)) => {
                let most = sampling.min_updates - self.byzantine;
                if m == 0 || m > most {
                    return Err(format!(
                        "aggregation.select must be between 1 and sampling.min_updates − \
                         byzantine ({most}), got {m}"
                    ));
                }
            }
            (_, None) => {}
            (rule, Some(_)) => {
                return Err(format!(
                    "aggregation.select applies to multi-krum only (the rule is {rule})"
                ));
            }
        }
        Ok(())
    }
}

impl RunConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            path: path.to_path_buf(),
            action: "read the run configuration",
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ServerError::Config(reason) => {
                ServerError::Config(format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| ServerError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| ServerError::Config(e.to_string()))
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.rounds == 0 {
            return bad("rounds must be at least 1".into());
        }
        if !(self.sampling.fraction > 0.0 && self.sampling.fraction <= 1.0) {
            return bad(format!(
                "sampling.fraction must be in (0, 1], got {}",
                self.sampling.fraction
            ));
        }
        if self.sampling.min_clients == 0 {
            return bad("sampling.min_clients must be at least 1".into());
        }
        if self.sampling.min_updates == 0 || self.sampling.min_updates > self.sampling.min_clients {
            return bad(format!(
                "sampling.min_updates must be between 1 and min_clients ({}), got {}",
                self.sampling.min_clients, self.sampling.min_updates
            ));
        }
        if !(self.training.lr.is_finite() && self.training.lr > 0.0) {
            return bad(format!(
                "training.lr must be a positive number, got {}",
                self.training.lr
            ));
        }
        if self.training.batch_size == 0 {
            return bad("training.batch_size must be at least 1".into());
        }
        if self.algorithm == Algorithm::FedAvg
            && self.training.local_epochs == 0
            && self.training.local_steps == 0
        {
            return bad("fedavg needs training.local_epochs or training.local_steps > 0".into());
        }
        self.training.parsed_defence()?;
        if self.data.eval_batch_size == 0 {
            return bad("data.eval_batch_size must be at least 1".into());
        }
        let t = &self.timing;
        for (name, v) in [
            ("round_timeout_s", t.round_timeout_s),
            ("pull_timeout_s", t.pull_timeout_s),
            ("heartbeat_interval_s", t.heartbeat_interval_s),
            ("heartbeat_timeout_s", t.heartbeat_timeout_s),
            ("wait_for_clients_s", t.wait_for_clients_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e7) {
                return bad(format!(
                    "timing.{name} must be a positive number of seconds, got {v}"
                ));
            }
        }
        if !(t.linger_s.is_finite() && (0.0..1e7).contains(&t.linger_s)) {
            return bad(format!(
                "timing.linger_s must be ≥ 0 seconds, got {}",
                t.linger_s
            ));
        }
        if self.security.tls_cert.is_some() != self.security.tls_key.is_some() {
            return bad("security.tls_cert and security.tls_key go together".into());
        }
        if self.security.client_ca.is_some() && self.security.tls_cert.is_none() {
            return bad("security.client_ca (mutual TLS) needs tls_cert and tls_key".into());
        }
        if let Err(reason) = self.aggregation.validate(&self.sampling) {
            return bad(reason);
        }
        if let Err(reason) = self.limits.validate(&self.timing) {
            return bad(reason);
        }
        if let Err(reason) = self.tap.validate(&self.model) {
            return bad(reason);
        }
        if self.sampling.min_clients > self.limits.max_clients {
            return bad(format!(
                "sampling.min_clients ({}) exceeds limits.max_clients ({})",
                self.sampling.min_clients, self.limits.max_clients
            ));
        }
        self.model
            .validate()
            .map_err(|e| ServerError::Config(format!("[model] {e}")))?;
        Ok(())
    }

    /// The model spec of this run for images of `input` and `classes` classes.
    pub fn model_spec(&self, input: InputShape, classes: usize) -> ModelSpec {
        self.model.spec(input, classes, self.seed)
    }
}

/// Seconds as a [`Duration`] (validated finite and non-negative).
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synfed_models::Arch;

    #[test]
    fn defaults_round_trip_and_overrides_apply() {
        let config = RunConfig::default();
        let text = config.to_toml().unwrap();
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);

        let config = RunConfig::from_toml(
            "rounds = 3\nalgorithm = \"fedavg\"\n[model]\narch = \"resnet20\"\nmethods = \"I+III\"\ngamma = 4\n",
        )
        .unwrap();
        assert_eq!(config.rounds, 3);
        assert_eq!(config.algorithm, Algorithm::FedAvg);
        assert_eq!(config.model.arch, Arch::ResNet20);
        assert_eq!(config.model.methods.to_string(), "I+III");
        assert_eq!(config.model.gamma, 4);
        assert_eq!(config.training, TrainingConfig::default());
    }

    #[test]
    fn typos_and_bad_ranges_are_errors() {
        let err = RunConfig::from_toml("roundz = 3").unwrap_err().to_string();
        assert!(err.contains("roundz"), "{err}");
        let err = RunConfig::from_toml("[sampling]\nfraction = 1.5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sampling.fraction"), "{err}");
        let err = RunConfig::from_toml("[training]\nlr = -1.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("training.lr"), "{err}");
        for bad in [
            "dp:C=0,sigma=1",
            "dp:C=1",
            "dp:C=1,sigma=-1",
            "dp:C=1,sigma=1,noise=3",
            "prune:p=0",
            "prune:p=1.5",
            "laplace:b=1",
            "prune:p=0.1+prune:p=0.2",
            "none+dp",
        ] {
            let err = RunConfig::from_toml(&format!("[training]\ndefence = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("training.defence"), "{bad}: {err}");
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        for good in [
            "none",
            "dp:C=1,sigma=0.5",
            "dp:C=1,σ=0.5,per-example",
            "prune:p=0.1",
            "dp:C=1,sigma=0.5+prune:p=0.2",
        ] {
            let config =
                RunConfig::from_toml(&format!("[training]\ndefence = \"{good}\"")).unwrap();
            assert_eq!(config.training.defence, good);
        }
        let err = RunConfig::from_toml("[security]\ntls_cert = \"a.pem\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_key"), "{err}");
    }

    #[test]
    fn model_table_uses_the_model_configs_defaults_and_names_a_bad_field() {
        // no [model] table: the quick federation of the mlp of width 128
        let config = RunConfig::from_toml("rounds = 2").unwrap();
        assert_eq!(config.model.width, Some(128));
        assert_eq!(config.model.arch, Arch::Mlp);
        // a [model] table without width: the published size, as everywhere else
        let config = RunConfig::from_toml("[model]\narch = \"lenet\"").unwrap();
        assert_eq!(config.model.width, None);
        assert_eq!(config.model.arch, Arch::LeNet);
        assert_eq!(
            RunConfig::from_toml(&config.to_toml().unwrap()).unwrap(),
            config
        );
        let err = |text: &str| RunConfig::from_toml(text).unwrap_err().to_string();
        for (text, field) in [
            ("[model]\nwidth = 0", "width"),
            ("[model]\ngamma = 0", "gamma"),
            ("[model]\ngamma = 65", "gamma"),
            ("[model]\ntau = 2.5", "tau"),
            ("[model]\nd_re = 0.0", "d_re"),
            ("[model]\nwidht = 16", "widht"),
            ("[model]\narch = \"vgg\"", "vgg"),
        ] {
            let e = err(text);
            assert!(e.contains(field), "{text}: {e}");
        }
        assert!(err("[model]\ngamma = 65").contains("[model]"));
    }

    #[test]
    fn fuzzy_at_defaults_to_server_parses_client_and_names_a_bad_value() {
        assert_eq!(
            RunConfig::default().training.fuzzy_at,
            FuzzyPlacement::Server
        );
        let config = RunConfig::from_toml("[training]\nfuzzy_at = \"client\"").unwrap();
        assert_eq!(config.training.fuzzy_at, FuzzyPlacement::Client);
        let err = RunConfig::from_toml("[training]\nfuzzy_at = \"clients\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fuzzy_at") || err.contains("`clients`"),
            "{err}"
        );
    }

    #[test]
    fn bn_mode_defaults_to_train_parses_eval_and_names_a_bad_value() {
        assert_eq!(RunConfig::default().training.bn_mode, BnMode::Train);
        let config = RunConfig::from_toml("[training]\nbn_mode = \"eval\"").unwrap();
        assert_eq!(config.training.bn_mode, BnMode::Eval);
        assert_eq!(config.training.bn_mode.mode(), synfed_synapse::Mode::Eval);
        let text = config.to_toml().unwrap();
        assert!(text.contains("bn_mode = \"eval\""), "{text}");
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        let config = RunConfig::from_toml("[training]\nbn_mode = \"train\"").unwrap();
        assert_eq!(config.training.bn_mode, BnMode::Train);

        let err = RunConfig::from_toml("[training]\nbn_mode = \"evaluation\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`evaluation`"), "{err}");
        assert!(err.contains("bn_mode"), "{err}");
        let err = RunConfig::from_toml("[training]\nbn_mode = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bn_mode"), "{err}");
    }

    #[test]
    fn aggregation_defaults_to_the_mean_parses_every_rule_and_round_trips() {
        let config = RunConfig::default();
        assert_eq!(config.aggregation.rule, Rule::Mean);
        assert_eq!(config.aggregation.norm_bound, None);
        let text = config.to_toml().unwrap();
        assert!(text.contains("[aggregation]"), "{text}");
        assert!(text.contains("rule = \"mean\""), "{text}");
        for rule in Rule::ALL {
            let min = if matches!(rule, Rule::Krum | Rule::MultiKrum) {
                "[sampling]\nmin_clients = 5\nmin_updates = 5\n"
            } else {
                ""
            };
            let config = RunConfig::from_toml(&format!(
                "{min}[aggregation]\nrule = \"{rule}\"\nnorm_bound = 2.5\n"
            ))
            .unwrap();
            assert_eq!(config.aggregation.rule, rule);
            assert_eq!(config.aggregation.norm_bound, Some(2.5));
            assert_eq!(
                RunConfig::from_toml(&config.to_toml().unwrap()).unwrap(),
                config
            );
        }
        let config = RunConfig::from_toml(
            "[sampling]\nmin_clients = 6\nmin_updates = 6\n[aggregation]\nrule = \"multi-krum\"\nbyzantine = 1\nselect = 5\n",
        )
        .unwrap();
        assert_eq!(config.aggregation.select, Some(5));
        assert_eq!(config.aggregation.min_updates(), 5);
    }

    #[test]
    fn aggregation_ranges_are_checked_and_errors_name_the_field() {
        let err = |text: &str| RunConfig::from_toml(text).unwrap_err().to_string();
        let e = err("[aggregation]\nrule = \"geometric-median\"");
        assert!(e.contains("aggregation.rule `geometric-median`"), "{e}");
        let e = err("[aggregation]\nrule = \"norm-bound\"");
        assert!(e.contains("aggregation.norm_bound"), "{e}");
        for trim in ["-0.1", "0.5", "0.7", "nan"] {
            let e = err(&format!(
                "[aggregation]\nrule = \"trimmed-mean\"\ntrim = {trim}"
            ));
            assert!(e.contains("aggregation.trim"), "{trim}: {e}");
        }
        assert!(RunConfig::from_toml("[aggregation]\nrule = \"trimmed-mean\"\ntrim = 0.0").is_ok());
        for c in ["0.0", "-1.0", "inf"] {
            let e = err(&format!("[aggregation]\nnorm_bound = {c}"));
            assert!(e.contains("aggregation.norm_bound"), "{c}: {e}");
        }
        for budget in ["0", "1048577"] {
            let e = err(&format!("[aggregation]\nmemory_budget_mib = {budget}"));
            assert!(e.contains("aggregation.memory_budget_mib"), "{budget}: {e}");
        }
        // krum with f = 1 needs rounds of at least 5 updates
        let e = err("[sampling]\nmin_clients = 4\nmin_updates = 4\n[aggregation]\nrule = \"krum\"");
        assert!(e.contains("aggregation.byzantine"), "{e}");
        assert!(e.contains("sampling.min_updates"), "{e}");
        let e = err("[sampling]\nmin_clients = 9\nmin_updates = 9\n[aggregation]\nrule = \"krum\"\nbyzantine = 4");
        assert!(e.contains("2f + 3 = 11"), "{e}");
        let e = err(&format!(
            "[sampling]\nmin_clients = 9\nmin_updates = 9\n[aggregation]\nrule = \"krum\"\nbyzantine = {}",
            i64::MAX
        ));
        assert!(e.contains("aggregation.byzantine"), "{e}");
        let e = err("[sampling]\nmin_clients = 5\nmin_updates = 5\n[aggregation]\nrule = \"multi-krum\"\nselect = 5");
        assert!(e.contains("aggregation.select"), "{e}");
        let e = err("[sampling]\nmin_clients = 5\nmin_updates = 5\n[aggregation]\nrule = \"multi-krum\"\nselect = 0");
        assert!(e.contains("aggregation.select"), "{e}");
        let e = err("[aggregation]\nrule = \"median\"\nselect = 2");
        assert!(e.contains("multi-krum only"), "{e}");
        let e = err("[aggregation]\nrulez = \"median\"");
        assert!(e.contains("rulez"), "{e}");
    }
}
