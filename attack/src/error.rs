//! The crate's single error type.
//!
//! Scores and pictures are computed from reconstructions that an optimiser produced, so bad
//! input is expected rather than exceptional: a diverged run yields NaN, a caller passes a batch
//! of the wrong shape or forgets to de-normalise. Every such case is an [`AttackError`] variant
//! whose message names the argument, the position and the value at fault, never a panic or a
//! silently meaningless number.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::shape::ImageShape;

/// Result alias used throughout `synfed-attack`.
pub type Result<T, E = AttackError> = std::result::Result<T, E>;

/// Everything that can go wrong while scoring, matching or drawing images.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttackError {
    /// A flat slice does not hold the number of values its shape requires.
    #[error("{what}: {found} values do not make a {shape} image ({expected} values)")]
    Length {
        /// The argument, e.g. `x` or `x[3]`.
        what: String,
        /// The declared `[C, H, W]` shape.
        shape: ImageShape,
        /// Values the shape requires.
        expected: usize,
        /// Values present.
        found: usize,
    },

    /// An image shape with a zero dimension, or one too large to address.
    #[error("{what}: image shape {shape} is empty or too large")]
    BadShape {
        /// The argument.
        what: String,
        /// The shape.
        shape: ImageShape,
    },

    /// A tensor that is not `[B, C, H, W]` (or `[C, H, W]` where a single image is expected).
    #[error("{what}: expected a tensor of shape {expected}, got {dims:?}")]
    Rank {
        /// The argument.
        what: String,
        /// The expected layout, e.g. `[batch, channels, height, width]`.
        expected: &'static str,
        /// The dimensions found.
        dims: Vec<usize>,
    },

    /// A batch, a list of rows or a matrix with nothing in it.
    #[error("{what} is empty")]
    Empty {
        /// What is empty.
        what: String,
    },

    /// Two arguments that must agree in shape do not.
    #[error("shape mismatch: {what}")]
    ShapeMismatch {
        /// Which shapes disagree, and how.
        what: String,
    },

    /// A NaN or infinite value where only finite ones make sense.
    #[error(
        "{what}: value {value} at channel {channel}, row {row}, column {column} is not finite"
    )]
    NonFinite {
        /// The argument.
        what: String,
        /// The offending value.
        value: f32,
        /// Its channel.
        channel: usize,
        /// Its row.
        row: usize,
        /// Its column.
        column: usize,
    },

    /// A NaN pixel in a picture; other out-of-range values are clamped, but NaN has no colour.
    #[error("{what}: pixel at channel {channel}, row {row}, column {column} is NaN")]
    NotANumber {
        /// The argument.
        what: String,
        /// Its channel.
        channel: usize,
        /// Its row.
        row: usize,
        /// Its column.
        column: usize,
    },

    /// A value outside [0, 1] given to a metric defined on de-normalised, clamped images.
    #[error(
        "{what}: value {value} at channel {channel}, row {row}, column {column} is outside \
         [0, 1]; de-normalise and clamp images before scoring them"
    )]
    OutOfRange {
        /// The argument.
        what: String,
        /// The offending value.
        value: f32,
        /// Its channel.
        channel: usize,
        /// Its row.
        row: usize,
        /// Its column.
        column: usize,
    },

    /// An image smaller than the SSIM window, which then has no valid position.
    #[error("{what}: a {height}x{width} image is smaller than the {window}x{window} SSIM window")]
    TooSmall {
        /// The argument.
        what: String,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Window side.
        window: usize,
    },

    /// A per-channel standard deviation that is not a positive finite number, or a list of them
    /// of the wrong length.
    #[error("normalisation std: {reason}")]
    BadStd {
        /// What is wrong.
        reason: String,
    },

    /// A cost matrix that is ragged or not square.
    #[error("cost matrix must be square: it has {rows} rows, but row {row} has {len} entries")]
    NotSquare {
        /// Number of rows.
        rows: usize,
        /// The first row of the wrong length.
        row: usize,
        /// Its length.
        len: usize,
    },

    /// A NaN or infinite cost.
    #[error("cost matrix entry ({row}, {column}) is {value}; costs must be finite")]
    NonFiniteCost {
        /// Row (reconstruction).
        row: usize,
        /// Column (ground truth).
        column: usize,
        /// The offending value.
        value: f64,
    },

    /// Costs so large that the assignment's potentials overflow `f64`.
    #[error("cost matrix entries are too large in magnitude to assign without overflow")]
    CostOverflow,

    /// A picture of a channel count other than 1 (grey) or 3 (RGB).
    #[error("{what}: {channels} channels; pictures need 1 (grey) or 3 (RGB)")]
    Channels {
        /// The argument.
        what: String,
        /// Channels found.
        channels: usize,
    },

    /// Another invalid argument (a zero scale, a picture too large for PNG, a bad path).
    #[error("{0}")]
    InvalidArgument(String),

    /// The picture could not be written or moved into place.
    #[error("{}: cannot write picture: {source}", .path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The PNG encoder failed.
    #[error("{}: cannot encode PNG: {source}", .path.display())]
    Encode {
        /// The destination.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },

    /// A tensor operation failed (dtype conversion, copy to the host).
    #[error("{0}")]
    Shape(String),
    #[error("invalid option: {0}")]
    BadOption(String),
    #[error("the reconstruction diverged (objective not finite) in trial {trial} at iteration {iteration}")]
    Diverged { trial: usize, iteration: usize },
    /// The analytic attack on a model without a fully connected first layer with bias.
    #[error(
        "the analytic attack needs a fully connected first layer with bias on the flattened \
         input ({input} features): {arch}'s first trainable parameters are {first}"
    )]
    NoFullyConnectedInput {
        /// The architecture.
        arch: String,
        /// Input features, C·H·W.
        input: usize,
        /// Names and shapes of the model's first trainable parameters.
        first: String,
    },
    /// The observed update carries nothing to reconstruct from (e.g. every bias gradient of the
    /// first layer is zero).
    #[error("nothing to reconstruct from: {0}")]
    NoSignal(String),
    #[error(transparent)]
    Model(#[from] synfed_models::ModelError),
    #[error(transparent)]
    Wire(#[from] synfed_wire::WireError),
    #[error(transparent)]
    Data(#[from] synfed_data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
