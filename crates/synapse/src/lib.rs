//! The paper's three synaptic-diversity mechanisms as candle building blocks.
//!
//! *Synaptic diversity in ANNs can facilitate faster learning* proposes
//! (I) fuzzy learning rates ([`fuzzy`]), (II) weight rejuvenation ([`rejuvenation`]) and
//! (III) weight splitting ([`splitting`]). This crate provides
//! - the layers every model of the zoo is built from ([`Linear`], [`Conv2d`], [`BatchNorm2d`],
//!   [`pool`]), which carry splitting and the per-weight fuzzy factors;
//! - the [`Builder`] that creates their parameters from a seed, so that every party that
//!   rebuilds a model from the same spec gets the same bytes;
//! - [`SynapticSgd`], the optimizer step that applies (I) and (II);
//! - [`kernels`], CPU convolution, matrix-product and update kernels over `gemm` that stay
//!   twice differentiable (candle's own CPU ops are 4–10× slower than PyTorch's);
//! - [`substitution`], forward passes with parameters replaced by graph-carrying tensors (an
//!   attacker's differentiable replay of local training).
//!
//! Randomness never comes from candle (its CPU generator cannot be seeded) but from
//! `rand_chacha` streams derived from the model seed ([`rng`]).

pub mod batch_norm_recording;
pub mod batchnorm;
pub mod builder;
pub mod conv;
pub mod cuda_context;
pub mod error;
pub mod fuzzy;
pub mod fuzzy_placement;
pub mod hyper;
pub mod init;
pub mod kernels;
pub mod linear;
pub mod methods;
pub mod mode;
pub mod param;
pub mod pool;
pub mod rejuvenation;
pub mod rng;
pub mod sgd;
pub mod splitting;
pub mod substitution;
pub mod worker;

pub use batchnorm::BatchNorm2d;
pub use builder::{Builder, LayerOptions, Placement};
pub use conv::Conv2d;
pub use error::{Result, SynapseError};
pub use fuzzy_placement::FuzzyPlacement;
pub use hyper::Hyper;
pub use init::Init;
pub use linear::Linear;
pub use methods::{Method, MethodSet};
pub use mode::{BnMode, Mode};
pub use param::{Param, ParamStore, Role};
pub use sgd::{StepReport, SynapticSgd};
pub use worker::on_worker;
