//! Cross-entropy loss and accuracy.
//!
//! The loss is written as −Σ onehot ⊙ log_softmax with primitive operations, so its gradient
//! can be differentiated again (the attack's objective is a function of parameter gradients).

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy of `logits [B, K]` against class indices `labels [B]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, k) = logits.dims2()?;
    let onehot = one_hot(labels, k, logits.dtype())?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    (log_p * onehot)?.sum_all()?.affine(-1.0 / b as f64, 0.0)
}

/// `labels [B]` as one-hot rows `[B, classes]` of `dtype`.
pub fn one_hot(labels: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let labels = labels.to_dtype(DType::U32)?;
    let ids = Tensor::arange(0u32, classes as u32, labels.device())?;
    labels
        .unsqueeze(1)?
        .broadcast_eq(&ids.unsqueeze(0)?)?
        .to_dtype(dtype)
}

/// Number of rows whose arg-max equals the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(D::Minus1)?;
    let hits = predicted.eq(&labels.to_dtype(DType::U32)?)?;
    Ok(hits.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_formula_by_hand() {
        let logits = Tensor::new(&[[1f64, 2., 3.], [0., 0., 0.]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let l = cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let row0 = -(3.0 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln());
        let row1 = 3f64.ln();
        assert!((l - (row0 + row1) / 2.0).abs() < 1e-12);
        assert_eq!(accuracy(&logits, &labels).unwrap(), 2);
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        assert_eq!(accuracy(&logits, &labels).unwrap(), 0);
    }
}
