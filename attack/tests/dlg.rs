//! Deep Leakage from Gradients end to end: a real MNIST digit comes back from a tiny untrained
//! model's FedSGD gradient, and L-BFGS drives the L2 gradient distance down by orders of
//! magnitude without ever climbing.

use candle_core::Device;
use synfed_attack::dlg::DlgConfig;
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::score;
use synfed_attack::AttackKind;
use synfed_models::{Arch, InputShape};
use synfed_synapse::Mode;

mod common;

use common::{fedsgd_capture, plain_model};

#[test]
fn dlg_reconstructs_one_digit_from_a_small_untrained_mlp() {
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let model = plain_model(Arch::Mlp, InputShape::new(1, 28, 28), Some(32));
    let (cap, x, labels) = fedsgd_capture(&model, &splits, &[0]);
    let config = AttackConfig {
        attack: AttackKind::Dlg,
        // ReLU networks leave DLG stuck on plateaus where a hidden unit is dead for the dummy
        // but alive for the truth (measured: 3 of 8 single trials on this model converge, the
        // others stall near 30 dB): four restarts, the lowest distance wins
        dlg: DlgConfig {
            iterations: 300,
            restarts: 4,
            seed: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut reported = 0;
    let attack = attack_capture(&cap, &config, &Device::Cpu, |_, _, _| reported += 1).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(attack.labels, labels, "iDLG recovers the label");
    let r = &attack.reconstruction;
    let scores = score(
        &attack.model,
        Mode::Eval,
        &r.best().images,
        &x,
        &splits.normalization,
        &attack.labels,
        &labels,
    )
    .unwrap();
    let best: Vec<_> = r.trace.iter().filter(|t| t.trial == r.best).collect();
    let initial = best[0].objective;
    let last = r.best().distance;
    println!(
        "dlg, mlp width 32, B = 1: PSNR {:.2} dB, SSIM {:.3}, distance {initial:.3e} → {last:.3e} in {} iterations, {seconds:.2} s",
        scores.psnr,
        scores.ssim,
        best.len()
    );
    assert_eq!(reported, r.trace.len());
    assert!(last < 0.01 * initial, "{initial} → {last}");
    assert!(
        r.trace
            .windows(2)
            .all(|w| w[0].trial != w[1].trial || w[1].objective <= w[0].objective),
        "the line search never accepts a rise"
    );
    // measured: 145.7 dB (the best trial matched the gradient to 1e-11)
    assert!(scores.psnr >= 60.0, "PSNR {:.2} dB", scores.psnr);
}
