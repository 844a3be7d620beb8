//! Every architecture × every method set runs: finite, input-dependent logits and a finite loss
//! in each mode on CIFAR and MNIST shapes, and a batch of the wrong shape is a typed error, not
//! a panic.

mod common;

use candle_core::DType;
use common::*;
use synfed_models::{Arch, InputShape, ModelError, ModelSpec};
use synfed_synapse::{MethodSet, Mode};

#[test]
fn every_architecture_and_method_set_gives_finite_logits() {
    let batch = 3;
    for input in [CIFAR, MNIST] {
        let x = images(batch, input, 1, DType::F32);
        for arch in Arch::ALL {
            for methods in MethodSet::paper_order() {
                let spec =
                    ModelSpec::new(arch, input, 10, methods, 3).with_width(small_width(arch));
                let model = build(&spec);
                for mode in [Mode::Train, Mode::TrainFrozenStats, Mode::Eval] {
                    let logits = model
                        .forward(&x, mode)
                        .unwrap_or_else(|e| panic!("{arch} {methods} on {input} in {mode:?}: {e}"));
                    assert_eq!(logits.dims(), &[batch, 10], "{arch} {methods} {input}");
                    let v = values(&logits);
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "{arch} {methods} on {input} in {mode:?}: {v:?}"
                    );
                    // the logits depend on the input: not a constant row
                    assert!(
                        v[..10] != v[10..20],
                        "{arch} {methods} on {input}: identical logits for different images"
                    );
                }
                let loss = model
                    .loss(&x, &labels(batch, 10), Mode::TrainFrozenStats)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(loss.is_finite() && loss > 0.0, "{arch} {methods}: {loss}");
            }
        }
    }
}

#[test]
fn a_batch_of_the_wrong_shape_is_a_typed_error() {
    for arch in Arch::ALL {
        let spec = ModelSpec::new(arch, CIFAR, 10, MethodSet::ALL, 3).with_width(small_width(arch));
        let model = build(&spec);
        let wrong = [
            images(2, MNIST, 1, DType::F32),
            images(2, InputShape::new(3, 28, 28), 1, DType::F32),
            images(2, InputShape::new(1, 32, 32), 1, DType::F32),
            // a flattened batch and a single image without batch dimension
            images(2, CIFAR, 1, DType::F32).flatten_from(1).unwrap(),
            images(1, CIFAR, 1, DType::F32).squeeze(0).unwrap(),
        ];
        for x in wrong {
            for mode in [Mode::Train, Mode::Eval] {
                match model.forward(&x, mode) {
                    Err(ModelError::BatchShape { got, want }) => {
                        assert_eq!(got, x.dims());
                        assert_eq!(want, CIFAR);
                    }
                    Err(other) => panic!("{arch} {:?}: wrong error {other}", x.dims()),
                    Ok(y) => panic!("{arch} accepted {:?}, gave {:?}", x.dims(), y.dims()),
                }
            }
        }
        // a right-shaped batch of another size is fine
        let y = model
            .forward(&images(5, CIFAR, 2, DType::F32), Mode::Eval)
            .unwrap();
        assert_eq!(y.dims(), &[5, 10]);
    }
}
