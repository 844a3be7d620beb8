//! Experiments built on the federation: the layer between the libraries that make up a
//! federated run (data, models, client, server, attack) and the `synfed` binary, so that
//! what the commands run is a library anyone (a test, a benchmark, a script) can call, and
//! the binary keeps only its flags, files and progress bars.
//!
//! [`attacking`] is one attack as synfed runs it (a FedSGD capture of a chosen batch, the
//! inversion, its scores and files), behind `synfed attack`, `simulate` and `compare`;
//! [`centralized_inversion`] is the paper's Table 3 protocol (a centrally built, optionally
//! trained model attacked on fixed held-out batches). [`training`] is centralized k-fold
//! training with the paper's learning-speed measure, behind `synfed train` and `synfed compare
//! --kind learning`. [`statistics`] holds what a comparison may claim from paired attack
//! outcomes (medians, bootstrap intervals, success rates, Wilcoxon's signed-rank test, Holm's
//! correction). [`simulation`] runs a whole federation — a gRPC server and its clients — in
//! one process, the one implementation behind `synfed simulate`, every cell of `synfed
//! compare`, the end-to-end tests and the federation benchmark; [`simulation_report`] attacks
//! a simulated run's captures and writes its `report.md`. [`comparison`] is the engine
//! of `synfed compare`: the grid of method sets, controls and defences × models, its cells
//! run (on threads, resumable, in shards) and merged, and the report with its statistics,
//! tables, grids and charts.

pub mod attacking;
pub mod centralized_inversion;
pub mod comparison;
pub mod error;
pub mod finished_attack;
pub mod malicious_server;
pub mod pretraining;
pub mod simulation;
pub mod simulation_report;
pub mod statistics;
pub mod training;

pub use attacking::{
    attack_and_write, attack_files, capture_batch, AttackOptions, AttackOutcome, BnStatistics,
};
pub use centralized_inversion::{BatchAttack, CentralizedInversion, Pretraining, StudyState};
pub use comparison::{CompareConfig, ComparisonError};
pub use error::{LabError, Result};
pub use simulation::{federate, simulate, Fleet, Simulated};
pub use simulation_report::{attack_captures, CaptureAttack, SimulationReport};
pub use training::{train, TrainingConfig, TrainingProgress, TrainingSummary};
