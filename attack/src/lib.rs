//! The gradient-inversion attacker of synfed, and how its results are judged.
//!
//! This crate hosts the honest-but-curious server's attacks on shared gradients. One attack
//! is not enough to judge a defence: a mechanism that stops one optimiser can leak everything
//! to another, or in closed form. So [`pipeline`] runs any of four attackers ([`AttackKind`])
//! on the same capture, labels and scoring:
//!
//! - [`inversion`] (`ig`, the default): Geiping et al.'s "Inverting Gradients" reconstruction —
//!   the [`objective`] (cosine similarity of parameter gradients over all layers, plus total
//!   variation) minimised with signed Adam in the box of valid pixels, with restarts;
//! - [`analytic`]: the closed-form reconstruction from a fully connected first layer with bias,
//!   ∂L/∂W_i / ∂L/∂b_i per unit, with the selection of B distinct images from the units' ratios
//!   (exact for one image; needs a model whose first layer is fully connected, the zoo's `mlp`);
//!   on a capture of a malicious server's imprinted model, the [`imprint_readout`] instead
//!   (differences of neighbouring bins, exact for every image alone in its bin);
//! - [`dlg`]: Zhu et al.'s "Deep Leakage from Gradients" — squared L2 gradient distance
//!   minimised with the small [`lbfgs`] minimiser from Gaussian noise;
//! - [`bn_prior`] (`bn-prior`): Inverting Gradients plus the BatchNorm statistics-matching
//!   prior of See-through-Gradients / GradInversion, for models with BatchNorm (the batch's
//!   statistics recovered from the running statistics, or given: "BN exact");
//! - [`labels`]: recovery of the batch's labels from the classifier's gradient (iDLG for one
//!   image, counts from the bias gradient for more);
//!
//! and the layers its results are judged and shown with:
//!
//! - [`metrics`]: MSE, PSNR and SSIM of reconstructions against ground truth, on de-normalised
//!   images in [0, 1] (SSIM as in Wang et al. 2004 / scikit-image with Gaussian weights), and
//!   MSE in the normalised space;
//! - [`assignment`]: the optimal one-to-one matching of reconstructions to ground-truth images
//!   (Hungarian algorithm) before they are scored, since a batch is recovered unordered;
//! - [`picture`]: PNG grids of images and reconstructions, written atomically.
//!
//! Images are `[C, H, W]` values, either flat `&[f32]` slices with an [`ImageShape`] or candle
//! tensors (`[B, C, H, W]` for batches). Bad input — wrong shapes, empty batches, NaN — is an
//! [`AttackError`] that names the argument and the pixel, never a panic.

pub mod analytic;
pub mod assignment;
pub mod bn_prior;
pub mod dlg;
pub mod error;
pub mod imprint_readout;
pub mod inversion;
pub mod kind;
pub mod labels;
pub mod lbfgs;
pub mod metrics;
pub mod objective;
pub mod picture;
pub mod pipeline;
pub mod scoring;
pub mod shape;

pub use assignment::{assign, Assignment};
pub use error::{AttackError, Result};
pub use kind::AttackKind;
pub use metrics::{
    mse, mse_batch, mse_matrix, mse_normalized, mse_normalized_batch, psnr, psnr_batch, score,
    score_batch, ssim, ssim_batch, ImageScores,
};
pub use picture::{save_grid, save_image, Image};
pub use shape::ImageShape;
