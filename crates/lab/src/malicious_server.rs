//! The malicious server of a comparison outside a federation: the imprint of *Robbing the Fed*
//! (Fowl et al., ICLR 2022) applied to a centrally built model before a client's batch is
//! captured.
//!
//! Why: a federation plays the malicious server with `[tap] mode = "imprint"` (the server
//! sends targeted clients the imprinted model). The paper's Table 3 protocol has no server,
//! so the `imprint` attack of an inversion comparison rewrites the attacked model itself, with
//! the very function the server uses ([`synfed_server::imprint`]), and captures the batch's
//! gradient on it. What the server knows of the image distribution, where it places its bins,
//! is the statistic over the study's **training** split: drawn from the same distribution as
//! the attacked held-out batches, but not containing them.

use crate::error::Result;
use synfed_data::{Dataset, Normalization};
use synfed_models::Model;
use synfed_server::imprint::{imprint, split_factor, statistic_distribution};
use synfed_wire::ImprintRecord;

/// Rewrites `model`'s fully connected first layer (and the next layer's columns for it) in
/// place as the malicious server does, with bins on every distinct unit, placed on the
/// statistic of the images of `known`; returns what was imprinted (for the capture's meta).
pub fn imprint_model(
    model: &Model,
    known: &Dataset,
    normalization: &Normalization,
) -> Result<ImprintRecord> {
    let statistic = statistic_distribution(known, normalization)?;
    let (rewritten, record) = imprint(
        &model.params().tensors(),
        None,
        &statistic,
        normalization,
        split_factor(model.spec()),
    )?;
    // the imprint rewrites the first layer's weight and bias and the next layer's weight (the
    // first three tensors); the others are the model's own
    for (p, (_, value)) in model.params().iter().zip(&rewritten).take(3) {
        p.var.set(value)?;
    }
    Ok(record)
}
