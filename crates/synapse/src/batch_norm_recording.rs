//! Recording the tensor each BatchNorm layer normalises with batch statistics.
//!
//! A statistics-matching attacker (See-through-Gradients / GradInversion) compares the
//! per-channel mean and variance its candidate images produce at every BatchNorm layer with
//! those of the client's batch. The normalisation op reports its statistics detached (they
//! feed the running estimates), so the attacker needs the layer's *input* as a graph node
//! instead, to compute differentiable statistics from it. Layers are deep inside each
//! architecture's forward pass; rather than threading a collector through every network, a
//! layer that normalises with batch statistics notes its input here while a recording scope
//! ([`record_batch_norm_inputs`]) is open on the current thread. Outside a scope nothing is
//! kept (one thread-local check per layer). [`crate::worker`] gives every computation it
//! starts a fresh scope, so a nested computation's layers never land in the caller's record.

use candle_core::{Tensor, TensorId};
use std::cell::RefCell;

/// One BatchNorm layer's input, keyed by the id of the layer's running-mean variable (which
/// names the layer in its model's parameter store).
#[derive(Clone, Debug)]
pub struct RecordedInput {
    /// `running_mean.as_tensor().id()` of the layer.
    pub layer: TensorId,
    /// The `[B, C, H, W]` tensor the layer normalised, still part of the graph.
    pub input: Tensor,
}

thread_local! {
    static RECORD: RefCell<Option<Vec<RecordedInput>>> = const { RefCell::new(None) };
}

/// Puts the previous record back when dropped (also when the closure panics).
struct Restore(Option<Option<Vec<RecordedInput>>>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            RECORD.with(|r| *r.borrow_mut() = previous);
        }
    }
}

/// Runs `f` and returns, with its result, the inputs of every BatchNorm layer that normalised
/// with batch statistics during it on this thread, in the order they ran.
pub fn record_batch_norm_inputs<R>(f: impl FnOnce() -> R) -> (R, Vec<RecordedInput>) {
    let previous = RECORD.with(|r| r.borrow_mut().replace(Vec::new()));
    let mut restore = Restore(Some(previous));
    let result = f();
    let recorded = RECORD.with(|r| r.borrow_mut().take()).unwrap_or_default();
    // put the caller's record back now (the guard only acts on a panic)
    if let Some(previous) = restore.0.take() {
        RECORD.with(|r| *r.borrow_mut() = previous);
    }
    (result, recorded)
}

/// Called by a layer that normalises `input` with batch statistics.
pub(crate) fn note(layer: TensorId, input: &Tensor) {
    RECORD.with(|r| {
        if let Some(record) = r.borrow_mut().as_mut() {
            record.push(RecordedInput {
                layer,
                input: input.clone(),
            });
        }
    });
}

/// This thread's record, taken out (none left); [`restore_state`] puts it back. See
/// [`crate::worker`].
pub(crate) fn take_state() -> Option<Vec<RecordedInput>> {
    RECORD.with(|r| r.borrow_mut().take())
}

/// Puts back what [`take_state`] took.
pub(crate) fn restore_state(record: Option<Vec<RecordedInput>>) {
    RECORD.with(|r| *r.borrow_mut() = record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, MethodSet, Mode};
    use candle_core::{DType, Device};

    #[test]
    fn records_batch_statistics_layers_inside_the_scope_only() {
        let dev = Device::Cpu;
        let mut b = Builder::new(3, MethodSet::NONE, Default::default(), DType::F32, &dev).unwrap();
        let bn = b.batch_norm2d("bn", 2).unwrap();
        let x = Tensor::arange(0f32, 16.0, &dev)
            .unwrap()
            .reshape((2, 2, 2, 2))
            .unwrap();
        let (_, recorded) = record_batch_norm_inputs(|| {
            bn.forward(&x, Mode::TrainFrozenStats).unwrap();
            bn.forward_relu(&x, Mode::TrainFrozenStats).unwrap();
            // running statistics: nothing of the batch is used, nothing recorded
            bn.forward(&x, Mode::Eval).unwrap();
        });
        assert_eq!(recorded.len(), 2);
        assert!(recorded.iter().all(|r| r.input.id() == x.id()));
        // outside a scope: no record is kept
        bn.forward(&x, Mode::TrainFrozenStats).unwrap();
        assert!(take_state().is_none());
        // nested scopes keep their own records
        let (inner, outer) = record_batch_norm_inputs(|| {
            bn.forward(&x, Mode::TrainFrozenStats).unwrap();
            let (_, inner) = record_batch_norm_inputs(|| {
                bn.forward(&x, Mode::TrainFrozenStats).unwrap();
                bn.forward(&x, Mode::TrainFrozenStats).unwrap();
            });
            inner.len()
        });
        assert_eq!((inner, outer.len()), (2, 1));
    }
}
