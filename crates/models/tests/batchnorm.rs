//! BatchNorm modes: only `Train` moves the running statistics (checked against a hand
//! computation of one step), `TrainFrozenStats` computes the same function without moving them,
//! and `Eval` uses them.

mod common;

use candle_core::{DType, Device};
use common::*;
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode, Role};

fn running_stats(model: &Model) -> Vec<(String, Vec<u64>)> {
    model
        .params()
        .iter()
        .filter(|p| matches!(p.role, Role::RunningMean | Role::RunningVar))
        .map(|p| (p.name.clone(), bits(p.var.as_tensor())))
        .collect()
}

#[test]
fn only_train_mode_updates_running_statistics() {
    let input = InputShape::new(3, 8, 8);
    let spec = ModelSpec::new(Arch::ResNet20, input, 10, MethodSet::NONE, 8).with_width(4);
    let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    let (b, c) = (3, 4);
    let x = images(b, input, 4, DType::F64);
    let initial = running_stats(&model);
    assert_eq!(initial.len(), 2 * (1 + 18 + 2));

    let frozen = model.forward(&x, Mode::TrainFrozenStats).unwrap();
    assert_eq!(
        running_stats(&model),
        initial,
        "TrainFrozenStats moved the statistics"
    );
    let eval = model.forward(&x, Mode::Eval).unwrap();
    assert_eq!(running_stats(&model), initial, "Eval moved the statistics");
    let train = model.forward(&x, Mode::Train).unwrap();
    let after = running_stats(&model);
    for ((name, before), (_, now)) in initial.iter().zip(&after) {
        assert_ne!(before, now, "Train left `{name}` unchanged");
    }
    // Train and TrainFrozenStats compute the same function; Eval uses the (initial) running
    // statistics instead of the batch's.
    assert_eq!(bits(&train), bits(&frozen));
    assert_ne!(bits(&train), bits(&eval));

    // bn1 after one step, computed by hand: conv1 (3×3, padding 1, no bias) by loops, then
    // running = 0.9 · running + 0.1 · batch statistic, with the unbiased variance.
    let w = values(model.params().get("conv1.weight").unwrap().var.as_tensor());
    let xv = values(&x);
    let (h, wd) = (8usize, 8usize);
    let px = |n: usize, ch: usize, i: isize, j: isize| -> f64 {
        if i < 0 || j < 0 || i >= h as isize || j >= wd as isize {
            0.0
        } else {
            xv[((n * 3 + ch) * h + i as usize) * wd + j as usize]
        }
    };
    let mut want_mean = Vec::new();
    let mut want_var = Vec::new();
    for o in 0..c {
        let mut ys = Vec::new();
        for n in 0..b {
            for i in 0..h as isize {
                for j in 0..wd as isize {
                    let mut s = 0.0;
                    for ch in 0..3 {
                        for di in 0..3isize {
                            for dj in 0..3isize {
                                let k = ((o * 3 + ch) * 3 + di as usize) * 3 + dj as usize;
                                s += w[k] * px(n, ch, i + di - 1, j + dj - 1);
                            }
                        }
                    }
                    ys.push(s);
                }
            }
        }
        let m = ys.iter().sum::<f64>() / ys.len() as f64;
        let var = ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (ys.len() - 1) as f64;
        want_mean.push(0.1 * m);
        want_var.push(0.9 + 0.1 * var);
    }
    let got_mean = values(
        model
            .params()
            .get("bn1.running_mean")
            .unwrap()
            .var
            .as_tensor(),
    );
    let got_var = values(
        model
            .params()
            .get("bn1.running_var")
            .unwrap()
            .var
            .as_tensor(),
    );
    for o in 0..c {
        assert!(
            (got_mean[o] - want_mean[o]).abs() < 1e-12,
            "{got_mean:?} vs {want_mean:?}"
        );
        assert!(
            (got_var[o] - want_var[o]).abs() < 1e-12,
            "{got_var:?} vs {want_var:?}"
        );
    }

    // Eval now uses the moved statistics: its output changed; frozen/eval still don't move them
    let eval2 = model.forward(&x, Mode::Eval).unwrap();
    assert_ne!(bits(&eval), bits(&eval2));
    model.forward(&x, Mode::TrainFrozenStats).unwrap();
    assert_eq!(running_stats(&model), after);
}
