//! The model zoo: every architecture of the paper and of the gradient-inversion literature,
//! built from [`synfed_synapse`] layers so that each one can carry any [`MethodSet`].
//!
//! A [`ModelSpec`] is the identity of a model: from it (and nothing else) any party of a
//! federation rebuilds the exact same parameters, fuzzy factors included.
//!
//! An [`Update`] is what a client sends back: one tensor per model tensor, each with its
//! parameter's role.
//!
//! [`MethodSet`]: synfed_synapse::MethodSet

pub mod alexnet;
pub mod arch;
pub mod checkpoint;
pub mod config;
pub mod convnet;
pub mod error;
pub mod gradcheck;
pub mod learning_speed;
pub mod lenet;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod network;
pub mod resnet;
pub mod spec;
pub mod training;
pub mod unroll;
pub mod update;

pub use arch::Arch;
pub use config::ModelConfig;
pub use error::{ModelError, Result};
pub use loss::{accuracy, cross_entropy};
pub use model::{BatchNormInput, Model};
pub use network::Network;
pub use spec::{InputShape, ModelSpec};
pub use training::{evaluate, train_epoch, train_epoch_in, EpochStats, Evaluation};
pub use unroll::{unrolled_update, LocalSteps};
pub use update::{Update, UpdateEntry};
