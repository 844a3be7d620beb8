//! Functional evaluation: run a forward pass with some parameters replaced by other tensors.
//!
//! Layers hold their parameters as candle `Var`s, which is what training needs. An attacker
//! replaying a FedAvg client's local training needs more: the parameters after step k are a
//! function of the (unknown, optimised) images, θₖ₊₁ = θₖ − η·∇θL(xₖ; θₖ), and the next forward
//! pass must use those graph-carrying tensors instead of the variables so that the gradient
//! flows back through every step. [`with_values`] installs such replacements for the duration
//! of a closure, on the current thread only; every layer reads its tensors through [`value`].
//! Outside a substitution scope nothing changes (one thread-local lookup per tensor).

use candle_core::{Tensor, TensorId, Var};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static VALUES: RefCell<Option<HashMap<TensorId, Tensor>>> = const { RefCell::new(None) };
}

/// Restores the previous scope when dropped (also when the closure panics).
struct Restore(Option<HashMap<TensorId, Tensor>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        VALUES.with(|v| *v.borrow_mut() = previous);
    }
}

/// Runs `f` with every variable whose id is a key of `values` read as the mapped tensor
/// instead (same shape and dtype expected; layers check nothing more than candle does).
pub fn with_values<R>(values: HashMap<TensorId, Tensor>, f: impl FnOnce() -> R) -> R {
    let previous = VALUES.with(|v| v.borrow_mut().replace(values));
    let _restore = Restore(previous);
    f()
}

/// This thread's substitutions, taken out (none left); [`restore_state`] puts them back. See
/// [`crate::worker`].
pub(crate) fn take_state() -> Option<HashMap<TensorId, Tensor>> {
    VALUES.with(|v| v.borrow_mut().take())
}

/// Puts back what [`take_state`] took.
pub(crate) fn restore_state(values: Option<HashMap<TensorId, Tensor>>) {
    VALUES.with(|v| *v.borrow_mut() = values);
}

/// The tensor a layer should use for `var`: its substitute inside [`with_values`], otherwise
/// the variable itself.
pub fn value(var: &Var) -> Tensor {
    let id = var.as_tensor().id();
    VALUES
        .with(|v| v.borrow().as_ref().and_then(|m| m.get(&id).cloned()))
        .unwrap_or_else(|| var.as_tensor().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn substitutes_inside_the_scope_only() {
        let var = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let other = Tensor::new(&[5f32, 6.0], &Device::Cpu).unwrap();
        let inside = with_values(HashMap::from([(var.as_tensor().id(), other)]), || {
            value(&var).to_vec1::<f32>().unwrap()
        });
        assert_eq!(inside, vec![5.0, 6.0]);
        assert_eq!(value(&var).to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn scopes_nest_and_restore_after_a_panic() {
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        let t = |x: f32| Tensor::new(&[x], &Device::Cpu).unwrap();
        let id = var.as_tensor().id();
        with_values(HashMap::from([(id, t(2.0))]), || {
            let inner = with_values(HashMap::from([(id, t(3.0))]), || {
                value(&var).to_vec1::<f32>().unwrap()
            });
            assert_eq!(inner, vec![3.0]);
            assert_eq!(value(&var).to_vec1::<f32>().unwrap(), vec![2.0]);
        });
        let caught = std::panic::catch_unwind(|| {
            with_values(HashMap::from([(id, t(4.0))]), || panic!("boom"))
        });
        assert!(caught.is_err());
        assert_eq!(value(&var).to_vec1::<f32>().unwrap(), vec![1.0]);
    }
}
