//! The synaptic SGD step: fuzzy scaling (I) → SGD update → rejuvenation (II).
//!
//! Plain SGD without momentum, as the paper trains (§4.1, η = 0.01). With no mechanism it is
//! exactly candle-nn's `SGD` (same operations, same rounding). The step takes gradients either
//! from a candle `GradStore` (local training) or by parameter name (a federation server
//! applying an averaged gradient).

use crate::error::Result;
use crate::kernels::descend;
use crate::param::{Param, ParamStore, Role};
use crate::rejuvenation::Rejuvenator;
use crate::rng;
use candle_core::backprop::GradStore;
use candle_core::Tensor;

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Number of weights re-initialised by rejuvenation (the paper's Fig. 2 curve).
    pub rejuvenated: usize,
}

/// SGD with the paper's mechanisms, over the parameters of one model.
pub struct SynapticSgd {
    store: ParamStore,
    lr: f64,
    rejuvenator: Rejuvenator,
}

impl SynapticSgd {
    /// An optimizer for `store` with learning rate `lr`; rejuvenation draws from `seed`.
    pub fn new(store: &ParamStore, lr: f64, seed: u64) -> Self {
        Self {
            store: store.clone(),
            lr,
            rejuvenator: Rejuvenator::new(rng::stream(seed, rng::STREAM_REJUVENATION)),
        }
    }

    /// The learning rate η.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Changes the learning rate.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Position of the rejuvenation stream, to checkpoint and resume a run exactly.
    pub fn rng_position(&self) -> u128 {
        self.rejuvenator.word_position()
    }

    /// Restores a position saved by [`rng_position`](Self::rng_position).
    pub fn set_rng_position(&mut self, position: u128) {
        self.rejuvenator.set_word_position(position);
    }

    /// One step with gradients from `backward()`. Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepReport> {
        self.step_with(|p| grads.get(p.var.as_tensor()).cloned())
    }

    /// One step with the gradient of each parameter given by `grad_of` (`None`: no update).
    pub fn step_with(
        &mut self,
        mut grad_of: impl FnMut(&Param) -> Option<Tensor>,
    ) -> Result<StepReport> {
        let rejuvenation = self.store.methods().rejuvenation;
        let d_re = self.store.hyper().d_re;
        let mut report = StepReport::default();
        // Each synaptic weight is updated and rejuvenated before the next tensor: the tensors
        // are independent and rejuvenation reads the stream in store order either way, so
        // this is the same as updating all, then rejuvenating all, with one pass less.
        for param in self.store.iter() {
            let grad = if param.role.is_trainable() {
                grad_of(param)
            } else {
                None
            };
            if !(rejuvenation && param.role == Role::SynapticWeight) {
                if let Some(grad) = grad {
                    descend(&param.var, &grad, param.fuzzy.as_ref(), self.lr)?;
                }
                continue;
            }
            let fused = match &grad {
                Some(grad) => self
                    .rejuvenator
                    .descend_and_rejuvenate(param, grad, self.lr, d_re)?,
                None => None,
            };
            report.rejuvenated += match fused {
                Some(reset) => reset,
                None => {
                    if let Some(grad) = grad {
                        descend(&param.var, &grad, param.fuzzy.as_ref(), self.lr)?;
                    }
                    self.rejuvenator.rejuvenate(param, d_re)?
                }
            };
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, Hyper, LayerOptions, MethodSet};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::Optimizer;

    fn model(methods: MethodSet) -> (ParamStore, crate::Linear, crate::Linear) {
        let mut b = Builder::new(9, methods, Hyper::default(), DType::F32, &Device::Cpu).unwrap();
        let l1 = b.linear("fc1", 5, 8, LayerOptions::default()).unwrap();
        let l2 = b.linear("fc2", 8, 3, LayerOptions::classifier()).unwrap();
        (b.finish(), l1, l2)
    }

    fn loss(l1: &crate::Linear, l2: &crate::Linear) -> Tensor {
        let x = Tensor::arange(0f32, 10., &Device::Cpu)
            .unwrap()
            .reshape((2, 5))
            .unwrap();
        let h = l1.forward(&(x / 10.).unwrap()).unwrap().tanh().unwrap();
        l2.forward(&h).unwrap().sqr().unwrap().sum_all().unwrap()
    }

    fn values(store: &ParamStore) -> Vec<Vec<f32>> {
        store
            .tensors()
            .iter()
            .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn without_methods_it_is_exactly_candle_sgd() {
        let (store_a, a1, a2) = model(MethodSet::NONE);
        let (store_b, b1, b2) = model(MethodSet::NONE);
        assert_eq!(values(&store_a), values(&store_b));
        let mut ours = SynapticSgd::new(&store_a, 0.05, 1);
        let mut theirs = candle_nn::SGD::new(store_b.trainable_vars(), 0.05).unwrap();
        for _ in 0..3 {
            let report = ours.step(&loss(&a1, &a2).backward().unwrap()).unwrap();
            assert_eq!(report.rejuvenated, 0);
            theirs.backward_step(&loss(&b1, &b2)).unwrap();
        }
        assert_eq!(values(&store_a), values(&store_b));
    }

    #[test]
    fn fuzzy_update_is_w_minus_lr_g_times_factor_elementwise() {
        let methods = MethodSet {
            fuzzy: true,
            ..MethodSet::NONE
        };
        let (store, l1, l2) = model(methods);
        let before = values(&store);
        let grads = loss(&l1, &l2).backward().unwrap();
        let mut expected = Vec::new();
        for (param, w0) in store.iter().zip(&before) {
            let g: Vec<f32> = grads
                .get(param.var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let f: Vec<f32> = match &param.fuzzy {
                Some(f) => f.flatten_all().unwrap().to_vec1().unwrap(),
                None => vec![1.0; g.len()],
            };
            assert_eq!(param.fuzzy.is_some(), param.role == Role::SynapticWeight);
            expected.push(
                w0.iter()
                    .zip(&g)
                    .zip(&f)
                    .map(|((w, g), f)| w - 0.1 * g * f)
                    .collect::<Vec<f32>>(),
            );
        }
        SynapticSgd::new(&store, 0.1, 1).step(&grads).unwrap();
        for (got, want) in values(&store).iter().zip(&expected) {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        // and the factors really changed the step: plain SGD would differ
        let (plain, p1, p2) = model(MethodSet::NONE);
        SynapticSgd::new(&plain, 0.1, 1)
            .step(&loss(&p1, &p2).backward().unwrap())
            .unwrap();
        assert_ne!(values(&plain)[0], values(&store)[0]);
    }

    #[test]
    fn rejuvenation_reports_resets_and_is_reproducible() {
        let methods = MethodSet {
            rejuvenation: true,
            ..MethodSet::NONE
        };
        let run = || {
            let (store, l1, l2) = model(methods);
            let mut opt = SynapticSgd::new(&store, 0.1, 4);
            let counts: Vec<usize> = (0..5)
                .map(|_| {
                    opt.step(&loss(&l1, &l2).backward().unwrap())
                        .unwrap()
                        .rejuvenated
                })
                .collect();
            (counts, values(&store))
        };
        let (counts, vals) = run();
        // 64 weights with |w| spread uniformly: E[resets] ≈ 64 · (1/14)∫₀¹⁴(1 − Φ) ≈ 1.8 per step.
        assert!(counts.iter().sum::<usize>() > 0, "{counts:?}");
        assert_eq!(run(), (counts, vals));
    }
}
