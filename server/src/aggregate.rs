//! Streaming, order-independent aggregation: Σ nₖ·uₖ / Σ nₖ over a round's updates.
//!
//! Updates arrive in whatever order the network delivers them, but floating-point addition is
//! not associative: summing in arrival order would make the same seed give different bits from
//! run to run. [`OrderedSum`] therefore adds updates in a canonical order (the sorted list of
//! the round's sampled clients), as a running sum in f64: an update that arrives before its
//! predecessors waits — in memory up to a budget, beyond it spooled to a file — and is added as
//! soon as everything before it has been added or dropped (a refused update, a straggler). At
//! most the running sum, the budget and one update are in memory, never all updates.
//!
//! The running sum is one `Vec<f64>` per tensor, added to in place (`s += f64(u)·n + 0`): the
//! same operations, in the same order, as the tensor expression `s + (u.to_f64() · n)` it
//! replaces (candle's scalar multiply is `x·n + 0`, which turns −0 into +0), so the bits are
//! those of every earlier run of a seed, without allocating three model-sized temporaries per
//! update.

use crate::error::{Result, ServerError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a waiting update is kept.
enum Held {
    Memory(Vec<Tensor>),
    Disk(PathBuf),
}

enum Slot {
    Waiting,
    Held {
        held: Held,
        weight: f64,
        bytes: usize,
    },
    Done,
}

/// The outcome of a round's aggregation.
pub struct Aggregate {
    /// Σ nₖ·uₖ / Σ nₖ, one tensor per update tensor, in the dtype of the updates.
    pub mean: Vec<Tensor>,
    /// Σ nₖ.
    pub weight: f64,
    /// Clients whose updates were summed, in summation order.
    pub contributors: Vec<String>,
}

/// The running, canonically ordered weighted sum of one round.
pub struct OrderedSum {
    order: Vec<String>,
    index: HashMap<String, usize>,
    slots: Vec<Slot>,
    next: usize,
    /// Σ f64(uₖ)·nₖ per tensor, with each tensor's shape.
    sum: Option<Vec<(Vec<f64>, Vec<usize>)>>,
    dtype: Option<DType>,
    weight: f64,
    contributors: Vec<String>,
    spool: PathBuf,
    budget: usize,
    held_bytes: usize,
}

impl OrderedSum {
    /// A sum over the updates of `order` (distinct client ids, summed in this order); waiting
    /// updates beyond `memory_budget` bytes go to files in `spool`.
    pub fn new(order: Vec<String>, spool: &Path, memory_budget: usize) -> Self {
        let index = order
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let slots = order.iter().map(|_| Slot::Waiting).collect();
        Self {
            order,
            index,
            slots,
            next: 0,
            sum: None,
            dtype: None,
            weight: 0.0,
            contributors: Vec::new(),
            spool: spool.to_path_buf(),
            budget: memory_budget,
            held_bytes: 0,
        }
    }

    fn slot_of(&self, client: &str) -> Result<usize> {
        let i = *self
            .index
            .get(client)
            .ok_or_else(|| ServerError::Internal(format!("`{client}` is not in this round")))?;
        match self.slots[i] {
            Slot::Waiting => Ok(i),
            _ => Err(ServerError::Internal(format!(
                "`{client}` was already resolved"
            ))),
        }
    }

    /// Adds `client`'s update (weight `weight` = its number of examples).
    pub fn offer(&mut self, client: &str, update: Vec<Tensor>, weight: f64) -> Result<()> {
        let i = self.slot_of(client)?;
        if i == self.next {
            self.add(i, &update, weight)?;
            self.slots[i] = Slot::Done;
            self.advance()
        } else {
            let bytes: usize = update
                .iter()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum();
            let held = if self.held_bytes + bytes <= self.budget {
                self.held_bytes += bytes;
                Held::Memory(update)
            } else {
                Held::Disk(self.spill(i, &update)?)
            };
            let bytes = if matches!(held, Held::Memory(_)) {
                bytes
            } else {
                0
            };
            self.slots[i] = Slot::Held {
                held,
                weight,
                bytes,
            };
            Ok(())
        }
    }

    /// Leaves `client` out (refused, straggler, left). Unknown or resolved clients are ignored.
    pub fn drop_client(&mut self, client: &str) -> Result<()> {
        if let Ok(i) = self.slot_of(client) {
            self.slots[i] = Slot::Done;
            self.advance()?;
        }
        Ok(())
    }

    /// Whether every client's update has been added or dropped.
    pub fn is_complete(&self) -> bool {
        self.next == self.slots.len()
    }

    /// Drops whoever has not been resolved and returns the mean (`None` without updates).
    pub fn finish(mut self) -> Result<Option<Aggregate>> {
        for client in self.order.clone() {
            self.drop_client(&client)?;
        }
        let Some(sum) = self.sum.take() else {
            return Ok(None);
        };
        let dtype = self.dtype.unwrap_or(DType::F32);
        // as candle's `s / n` computes it: s·(1/n) + 0
        let scale = 1.0 / self.weight;
        let mean = sum
            .into_iter()
            .map(|(s, shape)| match dtype {
                DType::F64 => {
                    let values: Vec<f64> = s.iter().map(|&v| v * scale + 0.0).collect();
                    Tensor::from_vec(values, shape, &Device::Cpu)
                }
                DType::F32 => {
                    let values: Vec<f32> = s.iter().map(|&v| (v * scale + 0.0) as f32).collect();
                    Tensor::from_vec(values, shape, &Device::Cpu)
                }
                other => {
                    let values: Vec<f64> = s.iter().map(|&v| v * scale + 0.0).collect();
                    Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(other)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Some(Aggregate {
            mean,
            weight: self.weight,
            contributors: std::mem::take(&mut self.contributors),
        }))
    }

    fn add(&mut self, i: usize, update: &[Tensor], weight: f64) -> Result<()> {
        self.dtype
            .get_or_insert(update.first().map_or(DType::F32, Tensor::dtype));
        match &mut self.sum {
            None => {
                let first = update
                    .iter()
                    .map(|t| {
                        let mut s = Vec::new();
                        scaled_into(&mut s, t, weight)?;
                        Ok((s, t.dims().to_vec()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.sum = Some(first);
            }
            Some(sum) => {
                if sum.len() != update.len() {
                    return Err(ServerError::Internal("updates of different lengths".into()));
                }
                for ((s, shape), t) in sum.iter_mut().zip(update) {
                    if shape.as_slice() != t.dims() {
                        return Err(ServerError::Internal(format!(
                            "an update tensor of shape {:?} where the sum has {shape:?}",
                            t.dims()
                        )));
                    }
                    add_scaled(s, t, weight)?;
                }
            }
        }
        self.weight += weight;
        self.contributors.push(self.order[i].clone());
        Ok(())
    }

    /// Adds every held update whose turn has come.
    fn advance(&mut self) -> Result<()> {
        while self.next < self.slots.len() {
            let i = self.next;
            match std::mem::replace(&mut self.slots[i], Slot::Done) {
                Slot::Done => {}
                Slot::Held {
                    held,
                    weight,
                    bytes,
                } => {
                    self.held_bytes -= bytes;
                    let update = match held {
                        Held::Memory(update) => update,
                        Held::Disk(path) => self.unspill(&path)?,
                    };
                    self.add(i, &update, weight)?;
                }
                waiting @ Slot::Waiting => {
                    self.slots[i] = waiting;
                    return Ok(());
                }
            }
            self.next += 1;
        }
        Ok(())
    }

    fn spill(&self, i: usize, update: &[Tensor]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.spool).map_err(|source| ServerError::Io {
            path: self.spool.clone(),
            action: "create the spool directory",
            source,
        })?;
        let path = self.spool.join(format!("update-{i:05}.safetensors"));
        let named: HashMap<String, Tensor> = update
            .iter()
            .enumerate()
            .map(|(k, t)| (format!("{k:06}"), t.clone()))
            .collect();
        candle_core::safetensors::save(&named, &path)?;
        Ok(path)
    }

    fn unspill(&self, path: &Path) -> Result<Vec<Tensor>> {
        let mut named = candle_core::safetensors::load(path, &Device::Cpu)?;
        let _ = std::fs::remove_file(path);
        let mut out = Vec::with_capacity(named.len());
        for k in 0..named.len() {
            let t = named
                .remove(&format!("{k:06}"))
                .ok_or_else(|| ServerError::Internal(format!("spooled update lost tensor {k}")))?;
            out.push(t);
        }
        Ok(out)
    }
}

/// `t`'s values, read in place where it is a contiguous f32 or f64 CPU tensor.
enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Calls `f` with the values of `t` in row-major order: borrowed from its storage where it is a
/// contiguous f32 or f64 CPU tensor, otherwise converted to f64 (exactly, as `to_dtype` does).
fn with_values<R>(t: &Tensor, f: impl FnOnce(Values<'_>) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            match cpu {
                candle_core::CpuStorage::F32(v) => return Ok(f(Values::F32(&v[start..end]))),
                candle_core::CpuStorage::F64(v) => return Ok(f(Values::F64(&v[start..end]))),
                _ => {}
            }
        }
    }
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(f(Values::F64(&values)))
}

/// `sum = f64(t)·weight + 0`, as candle's `t.to_dtype(F64)? * weight` computes it.
fn scaled_into(sum: &mut Vec<f64>, t: &Tensor, weight: f64) -> Result<()> {
    with_values(t, |values| {
        sum.clear();
        match values {
            Values::F32(v) => sum.extend(v.iter().map(|&x| f64::from(x) * weight + 0.0)),
            Values::F64(v) => sum.extend(v.iter().map(|&x| x * weight + 0.0)),
        }
    })
}

/// `sum += f64(t)·weight + 0`, element by element, as candle's
/// `sum + (t.to_dtype(F64)? * weight)` computes it.
fn add_scaled(sum: &mut [f64], t: &Tensor, weight: f64) -> Result<()> {
    with_values(t, |values| {
        let n = match values {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        };
        if n != sum.len() {
            return Err(ServerError::Internal(format!(
                "an update tensor of {n} values where the sum has {}",
                sum.len()
            )));
        }
        match values {
            Values::F32(v) => {
                for (s, &x) in sum.iter_mut().zip(v) {
                    *s += f64::from(x) * weight + 0.0;
                }
            }
            Values::F64(v) => {
                for (s, &x) in sum.iter_mut().zip(v) {
                    *s += x * weight + 0.0;
                }
            }
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(values: &[f32]) -> Vec<Tensor> {
        vec![Tensor::new(values, &Device::Cpu).unwrap()]
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    fn clients() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    // Values whose f32 sum depends on the order of addition.
    const A: [f32; 2] = [1.0e8, 0.1];
    const B: [f32; 2] = [-1.0e8, 0.7];
    const C: [f32; 2] = [3.0, 1.0e-8];

    fn mean_in_arrival_order(order: &[usize], budget: usize) -> (Vec<u32>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let mut sum = OrderedSum::new(clients(), dir.path(), budget);
        let ups = [(&A, 2.0), (&B, 2.0), (&C, 4.0)];
        for &k in order {
            let (values, w) = ups[k];
            sum.offer(&clients()[k], update(values), w).unwrap();
        }
        assert!(sum.is_complete());
        let agg = sum.finish().unwrap().unwrap();
        (bits(&agg.mean[0]), agg.contributors)
    }

    #[test]
    fn weighted_mean_is_exact_and_independent_of_arrival_order() {
        let (reference, contributors) = mean_in_arrival_order(&[0, 1, 2], usize::MAX);
        assert_eq!(contributors, clients());
        // (2·1e8 − 2·1e8 + 4·3) / 8 = 1.5 ; (0.2 + 1.4 + 4e-8) / 8 ≈ 0.2
        let values: Vec<f32> = reference.iter().map(|&b| f32::from_bits(b)).collect();
        assert_eq!(values[0], 1.5);
        assert!((values[1] - 0.2).abs() < 1e-7);
        for order in [[2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            assert_eq!(mean_in_arrival_order(&order, usize::MAX).0, reference);
            // budget 0: every out-of-order update goes through the spool files
            assert_eq!(mean_in_arrival_order(&order, 0).0, reference);
        }
    }

    #[test]
    fn dropped_clients_are_skipped_and_unresolved_ones_dropped_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut sum = OrderedSum::new(clients(), dir.path(), 0);
        sum.offer("c", update(&[4.0, 8.0]), 1.0).unwrap();
        assert!(!sum.is_complete());
        sum.drop_client("a").unwrap();
        assert!(!sum.is_complete());
        let agg = sum.finish().unwrap().unwrap();
        assert_eq!(agg.contributors, vec!["c".to_string()]);
        assert_eq!(agg.mean[0].to_vec1::<f32>().unwrap(), vec![4.0, 8.0]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spool cleaned up"
        );

        let empty = OrderedSum::new(clients(), dir.path(), 0);
        assert!(empty.finish().unwrap().is_none());
    }

    #[test]
    fn a_client_cannot_be_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut sum = OrderedSum::new(clients(), dir.path(), 0);
        sum.offer("b", update(&[1.0, 1.0]), 1.0).unwrap();
        assert!(sum.offer("b", update(&[1.0, 1.0]), 1.0).is_err());
        assert!(sum.offer("zed", update(&[1.0, 1.0]), 1.0).is_err());
    }

    /// The sum as candle's tensor expressions computed it before it was written as loops:
    /// Σ (u.to_dtype(F64) · n), then (Σ / W).to_dtype(F32).
    fn candle_mean(updates: &[(Vec<f32>, f64)]) -> Vec<u32> {
        let mut sum: Option<Tensor> = None;
        let mut weight = 0.0;
        for (values, w) in updates {
            let t = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
            let scaled = (t.to_dtype(DType::F64).unwrap() * *w).unwrap();
            sum = Some(match sum {
                None => scaled,
                Some(s) => (s + scaled).unwrap(),
            });
            weight += w;
        }
        let mean = (sum.unwrap() / weight)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        bits(&mean)
    }

    #[test]
    fn the_loops_give_the_bits_of_candles_tensor_expressions() {
        // signed zeros (candle's x·n + 0 makes −0 +0), cancellation, subnormals, odd weights
        let a = vec![-0.0f32, 1.0e8, 0.1, -3.5, 1.0e-40, -0.0, 7.25];
        let b = vec![-0.0f32, -1.0e8, 0.7, 3.5, -1.0e-40, 0.0, 1.0 / 3.0];
        let c = vec![-0.0f32, 3.0, 1.0e-8, -1.0e-30, 2.5e-38, -0.0, -7.0];
        let updates = [(a, 3.0), (b, 7.0), (c, 0.1)];
        let dir = tempfile::tempdir().unwrap();
        let names = clients();
        let mut sum = OrderedSum::new(names.clone(), dir.path(), usize::MAX);
        for (name, (values, w)) in names.iter().zip(&updates) {
            sum.offer(name, update(values), *w).unwrap();
        }
        let agg = sum.finish().unwrap().unwrap();
        let got = bits(&agg.mean[0]);
        assert_eq!(got, candle_mean(&updates));
        // −0 from every client: candle's affine gives +0, and so must the loops
        assert_eq!(got[0], 0.0f32.to_bits());
        // one client's −0 alone
        let mut one = OrderedSum::new(vec!["a".into()], dir.path(), 0);
        one.offer("a", update(&[-0.0, -2.0]), 3.0).unwrap();
        let alone = bits(&one.finish().unwrap().unwrap().mean[0]);
        assert_eq!(alone, candle_mean(&[(vec![-0.0, -2.0], 3.0)]));
        assert_eq!(alone[0], 0.0f32.to_bits());
    }
}
