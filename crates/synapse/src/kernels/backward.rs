//! Backward passes that compute less than candle's `backward`: gradients with respect to some
//! inputs only, and gradients that will not be differentiated again.
//!
//! candle's `backward` computes a gradient for every variable the loss depends on. The attack's
//! second backward pass needs only the images' gradient, yet the model's weights are variables
//! too: each convolution would compute the second-order weight gradients (two of the nine
//! products per layer of an attack iteration) only for them to be dropped. PyTorch's
//! `torch.autograd.grad(objective, images)` skips that work; [`backward_with_constants`] is its
//! equivalent here: inside it, the kernels' backward passes return no gradient for the tensors
//! named constant. Gradients of every other tensor are unchanged, bit for bit. candle's own ops
//! still compute theirs, so the returned store may hold gradients for some constants.
//!
//! With `CANDLE_GRAD_DO_NOT_DETACH` (which the attack needs) every backward pass also builds the
//! graph of its own gradients, so that they can be differentiated again; a kernel whose backward
//! pass is a composition of differentiable ops (BatchNorm's: a dozen activation-sized passes)
//! pays for that composition even where nobody differentiates again — a training step, or the
//! attack's last pass. Inside [`backward_final`] the kernels may instead compute their gradient
//! with one fused kernel whose result is a constant (PyTorch's `create_graph=False`); the
//! gradients equal the composed ones to rounding.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

thread_local! {
    static CONSTANTS: RefCell<HashSet<TensorId>> = RefCell::new(HashSet::new());
    static FINAL: Cell<bool> = const { Cell::new(false) };
}

/// Clears the set when dropped (also when the backward pass fails or panics).
struct Clear;

impl Drop for Clear {
    fn drop(&mut self) {
        CONSTANTS.with(|c| c.borrow_mut().clear());
    }
}

/// Restores the previous final flag when dropped.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        FINAL.with(|f| f.set(self.0));
    }
}

/// `loss.backward()`, with the kernels treating `constants` as constants.
pub fn backward_with_constants<'a>(
    loss: &Tensor,
    constants: impl IntoIterator<Item = &'a Tensor>,
) -> Result<GradStore> {
    CONSTANTS.with(|c| c.borrow_mut().extend(constants.into_iter().map(Tensor::id)));
    let _clear = Clear;
    loss.backward()
}

/// `loss.backward()` for gradients that will not be differentiated again (a training step, a
/// client's update): the kernels may compute them with fused, non-differentiable kernels.
pub fn backward_final(loss: &Tensor) -> Result<GradStore> {
    backward_final_with_constants(loss, std::iter::empty())
}

/// [`backward_with_constants`] for gradients that will not be differentiated again (the
/// attack's image gradient).
pub fn backward_final_with_constants<'a>(
    loss: &Tensor,
    constants: impl IntoIterator<Item = &'a Tensor>,
) -> Result<GradStore> {
    let _restore = Restore(FINAL.with(|f| f.replace(true)));
    backward_with_constants(loss, constants)
}

/// This thread's backward-pass settings (constants, final flag), taken out and reset to the
/// defaults; [`restore_state`] puts them back. See [`crate::worker`].
pub(crate) fn take_state() -> (HashSet<TensorId>, bool) {
    (
        CONSTANTS.with(|c| std::mem::take(&mut *c.borrow_mut())),
        FINAL.with(|f| f.replace(false)),
    )
}

/// Puts back what [`take_state`] took.
pub(crate) fn restore_state((constants, final_pass): (HashSet<TensorId>, bool)) {
    CONSTANTS.with(|c| *c.borrow_mut() = constants);
    FINAL.with(|f| f.set(final_pass));
}

/// Whether a kernel's backward pass must produce a gradient for `t`: it is a variable or
/// computed from one, and not declared constant.
pub(crate) fn needs_gradient(t: &Tensor) -> bool {
    t.track_op() && !CONSTANTS.with(|c| c.borrow().contains(&t.id()))
}

/// Whether the gradients being computed will not be differentiated again, so that a backward
/// pass may return constants.
pub(crate) fn gradients_are_final() -> bool {
    FINAL.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::seeded;
    use crate::kernels::{conv2d, matmul, ConvParams};
    use candle_core::Var;

    /// The second-order image gradient of a gradient-matching objective is the same bits with
    /// the weights constant, and the weights then get no kernel gradient.
    #[test]
    fn second_order_image_gradient_is_unchanged_and_weights_are_skipped() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let p = ConvParams {
            stride: 1,
            padding: 1,
        };
        let x = Var::from_tensor(&seeded(&[2, 3, 5, 5], 1)).unwrap();
        let w = Var::from_tensor(&seeded(&[4, 3, 3, 3], 2)).unwrap();
        let fc = Var::from_tensor(&seeded(&[6, 100], 3)).unwrap();
        let objective = || {
            let h = conv2d(x.as_tensor(), w.as_tensor(), p)
                .unwrap()
                .tanh()
                .unwrap();
            let logits = matmul(&h.flatten_from(1).unwrap(), false, fc.as_tensor(), true).unwrap();
            let g = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let (gw, gf) = (
                g.get(w.as_tensor()).unwrap(),
                g.get(fc.as_tensor()).unwrap(),
            );
            (gw.sqr().unwrap().sum_all().unwrap() + gf.sqr().unwrap().sum_all().unwrap()).unwrap()
        };
        let full = objective().backward().unwrap();
        let partial =
            backward_with_constants(&objective(), [w.as_tensor(), fc.as_tensor()]).unwrap();
        let bits = |g: &GradStore| -> Vec<u64> {
            g.get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&full), bits(&partial));
        assert!(full.get(w.as_tensor()).is_some());
        assert!(partial.get(w.as_tensor()).is_none());
        assert!(partial.get(fc.as_tensor()).is_none());
        // the scope ends with the call
        assert!(needs_gradient(w.as_tensor()));
    }
}
