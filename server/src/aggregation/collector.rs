//! What the round engine feeds with the round's accepted updates: [`Collector`].
//!
//! For the plain mean it streams into an [`OrderedSum`], so no update is kept and the result is
//! bit for bit what synfed computed before the option existed. For the robust rules it keeps
//! each update, flattened to f64, in the slot of its client in the round's canonical order.
//! The space for all slots is checked against the budget when the round opens, before any
//! update arrives. When the round closes, the rule runs over the kept updates in that order. A
//! norm bound is applied to each update as it is offered, whatever the rule.

use super::flat::{flatten, unflatten, value_count};
use super::krum::{krum, multi_krum};
use super::median::median;
use super::norm_bound::{factor, norm};
use super::trimmed_mean::trimmed_mean;
use super::{check_budget, mean::weighted_mean, AggregationConfig, AggregationError, Rule};
use crate::aggregate::OrderedSum;
use crate::error::Result;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;
use synfed_wire::chunks::TensorLayout;

/// A round's updates, on their way to one aggregate.
pub struct Collector {
    config: AggregationConfig,
    layout: Vec<TensorLayout>,
    inner: Inner,
}

enum Inner {
    Streaming(OrderedSum),
    Kept(Kept),
}

enum KeptSlot {
    Waiting,
    Update { values: Vec<f64>, weight: f64 },
    Dropped,
}

struct Kept {
    order: Vec<String>,
    index: HashMap<String, usize>,
    slots: Vec<KeptSlot>,
    resolved: usize,
}

impl Kept {
    fn slot_of(&self, client: &str) -> Result<usize, AggregationError> {
        let i = *self
            .index
            .get(client)
            .ok_or_else(|| AggregationError::UnknownClient(client.to_string()))?;
        match self.slots[i] {
            KeptSlot::Waiting => Ok(i),
            _ => Err(AggregationError::AlreadyResolved(client.to_string())),
        }
    }
}

/// What a closed round's updates gave.
pub struct Closed {
    /// Clients whose updates were taken, in canonical order.
    pub contributors: Vec<String>,
    /// Σ of their (bounded) example weights.
    pub weight: f64,
    /// The step, one tensor per layout tensor; `None` without updates or with fewer than the
    /// round needs.
    pub aggregate: Option<Vec<Tensor>>,
    /// Krum and Multi-Krum: the clients whose updates the step is made of.
    pub selected: Option<Vec<String>>,
}

impl Collector {
    /// A collector for the updates of `order` (the round's sampled clients, in canonical
    /// order) of tensors `layout`, under `config`. For the mean, updates arriving out of order
    /// wait in memory up to `spool_budget` bytes, beyond it in files under `spool`. For the
    /// robust rules the round's slots must fit `config.memory_budget_mib`.
    pub fn new(
        config: &AggregationConfig,
        order: Vec<String>,
        layout: &[TensorLayout],
        spool: &Path,
        spool_budget: usize,
    ) -> Result<Self, AggregationError> {
        let inner = if config.rule.keeps_updates() {
            check_budget(config, order.len(), value_count(layout))?;
            let index = order
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect();
            let slots = order.iter().map(|_| KeptSlot::Waiting).collect();
            Inner::Kept(Kept {
                order,
                index,
                slots,
                resolved: 0,
            })
        } else {
            Inner::Streaming(OrderedSum::new(order, spool, spool_budget))
        };
        Ok(Self {
            config: config.clone(),
            layout: layout.to_vec(),
            inner,
        })
    }

    /// Adds `client`'s update (tensors in layout order) with example weight `weight`, scaled to
    /// the norm bound if there is one.
    pub fn offer(&mut self, client: &str, update: Vec<Tensor>, weight: f64) -> Result<()> {
        let bound = self.config.norm_bound;
        match &mut self.inner {
            Inner::Streaming(sum) => {
                let update = match bound {
                    Some(c) => {
                        let mut values = flatten(&update)?;
                        let k = factor(norm(&values), c);
                        if k < 1.0 {
                            values.iter_mut().for_each(|v| *v *= k);
                            unflatten(&values, &self.layout)?
                        } else {
                            // within the bound: exactly as sent
                            update
                        }
                    }
                    None => update,
                };
                sum.offer(client, update, weight)
            }
            Inner::Kept(kept) => {
                let i = kept.slot_of(client)?;
                let mut values = flatten(&update)?;
                drop(update);
                let expected = value_count(&self.layout);
                if values.len() != expected {
                    return Err(AggregationError::Length {
                        expected,
                        got: values.len(),
                    }
                    .into());
                }
                if let Some(c) = bound {
                    super::norm_bound::clip(&mut values, c);
                }
                kept.slots[i] = KeptSlot::Update { values, weight };
                kept.resolved += 1;
                Ok(())
            }
        }
    }

    /// Leaves `client` out (refused, straggler, left). Unknown or resolved clients are ignored.
    pub fn drop_client(&mut self, client: &str) -> Result<()> {
        match &mut self.inner {
            Inner::Streaming(sum) => sum.drop_client(client),
            Inner::Kept(kept) => {
                if let Ok(i) = kept.slot_of(client) {
                    kept.slots[i] = KeptSlot::Dropped;
                    kept.resolved += 1;
                }
                Ok(())
            }
        }
    }

    /// Whether every client's update has been added or dropped.
    pub fn is_complete(&self) -> bool {
        match &self.inner {
            Inner::Streaming(sum) => sum.is_complete(),
            Inner::Kept(kept) => kept.resolved == kept.slots.len(),
        }
    }

    /// Drops whoever has not been resolved and computes the rule over what arrived, if at
    /// least `min_updates` updates did (and, for Krum, at least 2f + 3).
    pub fn finish(self, min_updates: usize) -> Result<Closed> {
        let kept = match self.inner {
            Inner::Streaming(sum) => {
                return Ok(match sum.finish()? {
                    None => Closed {
                        contributors: Vec::new(),
                        weight: 0.0,
                        aggregate: None,
                        selected: None,
                    },
                    Some(a) => Closed {
                        aggregate: (a.contributors.len() >= min_updates).then_some(a.mean),
                        contributors: a.contributors,
                        weight: a.weight,
                        selected: None,
                    },
                })
            }
            Inner::Kept(kept) => kept,
        };
        let mut contributors = Vec::new();
        let mut updates: Vec<Vec<f64>> = Vec::new();
        let mut weights = Vec::new();
        for (client, slot) in kept.order.into_iter().zip(kept.slots) {
            if let KeptSlot::Update { values, weight } = slot {
                contributors.push(client);
                updates.push(values);
                weights.push(weight);
            }
        }
        let weight = weights.iter().sum();
        let n = updates.len();
        if n == 0 || n < min_updates.max(self.config.min_updates()) {
            return Ok(Closed {
                contributors,
                weight,
                aggregate: None,
                selected: None,
            });
        }
        let rows: Vec<&[f64]> = updates.iter().map(Vec::as_slice).collect();
        let f = self.config.byzantine;
        let (values, chosen) = match self.config.rule {
            Rule::Mean => (weighted_mean(&rows, &weights)?, None),
            Rule::Median => (median(&rows)?, None),
            Rule::TrimmedMean => (trimmed_mean(&rows, self.config.trim)?, None),
            Rule::Krum => {
                let (values, i) = krum(&rows, f)?;
                (values, Some(vec![i]))
            }
            Rule::MultiKrum => {
                let (values, chosen) = multi_krum(&rows, &weights, f, self.config.select)?;
                (values, Some(chosen))
            }
        };
        drop(rows);
        drop(updates);
        let aggregate = unflatten(&values, &self.layout)?;
        let selected = chosen.map(|c| c.into_iter().map(|i| contributors[i].clone()).collect());
        Ok(Closed {
            contributors,
            weight,
            aggregate: Some(aggregate),
            selected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layout() -> Vec<TensorLayout> {
        let t = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        vec![TensorLayout::of("w", &t)]
    }

    fn update(values: [f32; 2]) -> Vec<Tensor> {
        vec![Tensor::new(&values, &Device::Cpu).unwrap()]
    }

    fn clients() -> Vec<String> {
        (0..5).map(|k| format!("c{k}")).collect()
    }

    const HONEST: [[f32; 2]; 4] = [[1.0, -1.0], [2.0, 0.0], [3.0, -2.0], [2.0, -1.0]];

    /// Four honest updates and one of 1e38, offered out of order, under `config`.
    fn aggregate(config: &AggregationConfig) -> (Vec<f32>, Closed) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(config, clients(), &layout(), dir.path(), 0).unwrap();
        c.offer("c4", update([1e38, 1e38]), 8.0).unwrap();
        for k in [2, 0, 3, 1] {
            assert!(!c.is_complete());
            c.offer(&format!("c{k}"), update(HONEST[k]), 8.0).unwrap();
        }
        assert!(c.is_complete());
        let mut closed = c.finish(1).unwrap();
        let values = closed.aggregate.take().unwrap()[0]
            .to_vec1::<f32>()
            .unwrap();
        (values, closed)
    }

    fn with(rule: Rule) -> AggregationConfig {
        AggregationConfig {
            rule,
            trim: 0.2,
            ..AggregationConfig::default()
        }
    }

    #[test]
    fn each_rule_over_four_honest_updates_and_one_of_1e38() {
        // the mean is the attacker's: (8·(1+2+3+2) + 8·1e38) / 40 ≈ 2e37
        let (mean, closed) = aggregate(&with(Rule::Mean));
        assert!(mean[0] > 1e37, "{mean:?}");
        assert_eq!(closed.contributors, clients());
        assert_eq!(closed.weight, 40.0);
        // per coordinate: (1, 2, 2, 3, 1e38) → 2 ; (−2, −1, −1, 0, 1e38) → −1
        assert_eq!(aggregate(&with(Rule::Median)).0, vec![2.0, -1.0]);
        // β = 0.2 drops one each side: (2 + 2 + 3) / 3 ; (−1 − 1 + 0) / 3
        assert_eq!(
            aggregate(&with(Rule::TrimmedMean)).0,
            vec![(7.0f64 / 3.0) as f32, (-2.0f64 / 3.0) as f32]
        );
        // c3 (2, −1) is nearest the others: distances² to c1 1, c0 1, c2 2
        let (krum, closed) = aggregate(&with(Rule::Krum));
        assert_eq!(krum, vec![2.0, -1.0]);
        assert_eq!(closed.selected, Some(vec!["c3".to_string()]));
        let (multi, closed) = aggregate(&with(Rule::MultiKrum));
        assert_eq!(multi, vec![2.0, -1.0]);
        assert_eq!(closed.selected.unwrap(), &clients()[..4]);
    }

    #[test]
    fn the_norm_bound_clips_before_the_rule() {
        let config = AggregationConfig {
            norm_bound: Some(1.0),
            ..AggregationConfig::default()
        };
        let (mean, _) = aggregate(&config);
        // every update scaled to norm ≤ 1; the attacker's to (1/√2, 1/√2): its share of the
        // mean is at most 1/5 in norm
        let attacker = std::f64::consts::FRAC_1_SQRT_2;
        let honest: f64 = [(1.0f64, -1.0f64), (2.0, 0.0), (3.0, -2.0), (2.0, -1.0)]
            .iter()
            .map(|&(a, b)| a / (a * a + b * b).sqrt())
            .sum();
        let expected = ((honest + attacker) / 5.0) as f32;
        assert!((mean[0] - expected).abs() < 1e-6, "{mean:?} vs {expected}");
        // a bound no update reaches leaves the mean bit for bit as without it
        let loose = AggregationConfig {
            norm_bound: Some(1e39),
            ..AggregationConfig::default()
        };
        assert_eq!(
            aggregate(&loose).0,
            aggregate(&AggregationConfig::default()).0
        );
        let median = AggregationConfig {
            rule: Rule::Median,
            norm_bound: Some(1.0),
            ..AggregationConfig::default()
        };
        // the median of the clipped first coordinates: sorted 1/√2, 1/√2, 3/√13, 2/√5, 1
        let m = aggregate(&median).0;
        assert!((f64::from(m[0]) - 3.0 / 13f64.sqrt()).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn too_few_updates_give_no_aggregate_and_the_budget_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let krum = with(Rule::Krum);
        let mut c = Collector::new(&krum, clients(), &layout(), dir.path(), 0).unwrap();
        for (k, values) in HONEST.into_iter().enumerate() {
            c.offer(&format!("c{k}"), update(values), 8.0).unwrap();
        }
        c.drop_client("c4").unwrap();
        assert!(c.is_complete());
        // 4 < 2f + 3 = 5: no step, no error
        let closed = c.finish(1).unwrap();
        assert!(closed.aggregate.is_none());
        assert_eq!(closed.contributors.len(), 4);

        let mut median = with(Rule::Median);
        let mut c = Collector::new(&median, clients(), &layout(), dir.path(), 0).unwrap();
        c.offer("c1", update(HONEST[1]), 8.0).unwrap();
        assert!(c.offer("c1", update(HONEST[1]), 8.0).is_err(), "twice");
        assert!(c.offer("zed", update(HONEST[1]), 8.0).is_err(), "unknown");
        assert!(c.finish(2).unwrap().aggregate.is_none(), "min_updates");

        median.memory_budget_mib = 1;
        let wide = vec![TensorLayout {
            name: "w".into(),
            dtype: candle_core::DType::F32,
            shape: vec![1 << 16],
        }];
        // 5 × 2^16 × 8 bytes = 2.5 MiB > 1 MiB
        assert!(matches!(
            Collector::new(&median, clients(), &wide, dir.path(), 0),
            Err(AggregationError::OverBudget { capacity: 2, .. })
        ));
    }
}
