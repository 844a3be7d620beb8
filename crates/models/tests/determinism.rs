//! Seeding: the same spec gives the same bytes, another seed other weights and fuzzy factors,
//! every method set starts from the same weights and factors (so that comparisons between sets
//! are fair), and fuzzy factors exist exactly for synaptic weights and span their whole range.

mod common;

use candle_core::{DType, Device};
use common::*;
use synfed_models::{Arch, Model, ModelSpec};
use synfed_synapse::{Hyper, MethodSet, Role};

fn small(arch: Arch, methods: MethodSet, seed: u64) -> ModelSpec {
    ModelSpec::new(arch, CIFAR, 10, methods, seed).with_width(small_width(arch))
}

#[test]
fn the_same_spec_gives_the_same_bytes() {
    for arch in Arch::ALL {
        for methods in MethodSet::paper_order() {
            let a = snapshot(&build(&small(arch, methods, 11)));
            let b = snapshot(&build(&small(arch, methods, 11)));
            assert!(!a.is_empty());
            assert_eq!(a, b, "{arch} {methods}");
            assert_eq!(
                a.iter().filter(|(n, _)| n.ends_with(".fuzzy")).count() > 0,
                methods.fuzzy,
                "{arch} {methods}"
            );
        }
    }
}

#[test]
fn another_seed_gives_other_weights_and_factors() {
    for arch in Arch::ALL {
        let a = build(&small(arch, MethodSet::ALL, 11));
        let b = build(&small(arch, MethodSet::ALL, 12));
        for (p, q) in a.params().iter().zip(b.params().iter()) {
            assert_eq!(p.name, q.name);
            let (x, y) = (bits(p.var.as_tensor()), bits(q.var.as_tensor()));
            match p.role {
                // randomly initialised: every tensor differs
                Role::SynapticWeight | Role::Bias => {
                    assert_ne!(x, y, "{arch} {}", p.name);
                    if let (Some(f), Some(g)) = (&p.fuzzy, &q.fuzzy) {
                        assert_ne!(bits(f), bits(g), "{arch} {} fuzzy", p.name);
                    }
                }
                // constants (BatchNorm): the seed does not matter
                _ => assert_eq!(x, y, "{arch} {}", p.name),
            }
        }
    }
}

#[test]
fn method_sets_share_the_initial_weights_and_fuzzy_factors() {
    for arch in Arch::ALL {
        let base = build(&small(arch, MethodSet::NONE, 5));
        let base_tensors: Vec<_> = base
            .params()
            .tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect();
        let fuzzy_only = build(&small(
            arch,
            MethodSet {
                fuzzy: true,
                ..MethodSet::NONE
            },
            5,
        ));
        let factors: Vec<_> = fuzzy_only
            .params()
            .fuzzy_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect();
        for methods in MethodSet::paper_order() {
            let m = build(&small(arch, methods, 5));
            let tensors: Vec<_> = m
                .params()
                .tensors()
                .iter()
                .map(|(n, t)| (n.clone(), bits(t)))
                .collect();
            assert_eq!(tensors, base_tensors, "{arch} {methods}");
            if methods.fuzzy {
                let f: Vec<_> = m
                    .params()
                    .fuzzy_tensors()
                    .iter()
                    .map(|(n, t)| (n.clone(), bits(t)))
                    .collect();
                assert_eq!(f, factors, "{arch} {methods}");
            }
        }
    }
}

#[test]
fn fuzzy_factors_exist_exactly_for_synaptic_weights_and_span_their_range() {
    for tau in [0.09, 0.5] {
        for arch in Arch::ALL {
            for methods in MethodSet::paper_order() {
                let mut spec = small(arch, methods, 21);
                spec.hyper = Hyper {
                    tau,
                    ..Hyper::default()
                };
                let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
                let (lo, hi) = (1.0 - tau / 2.0, 1.0 + tau / 2.0);
                let mut all = Vec::new();
                for p in model.params().iter() {
                    let should = methods.fuzzy && p.role == Role::SynapticWeight;
                    assert_eq!(p.fuzzy.is_some(), should, "{arch} {methods} {}", p.name);
                    if let Some(f) = &p.fuzzy {
                        assert_eq!(f.dims(), p.var.dims(), "{arch} {}", p.name);
                        let v = values(f);
                        assert!(
                            v.iter().all(|x| (lo..=hi).contains(x)),
                            "{arch} {} τ = {tau}: factor outside [{lo}, {hi}]",
                            p.name
                        );
                        all.extend(v);
                    }
                }
                if methods.fuzzy {
                    // the whole interval is used (not U(1 ± τ/4), not a constant)
                    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    assert!(
                        min < 1.0 - 0.45 * tau && max > 1.0 + 0.45 * tau,
                        "{arch} τ = {tau}: factors in [{min}, {max}]"
                    );
                } else {
                    assert!(model.params().fuzzy_tensors().is_empty());
                }
            }
        }
    }
}
