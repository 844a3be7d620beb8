//! (II) Weight rejuvenation, paper §3.2, Eq. 3–4.
//!
//! After every optimizer step, each synaptic weight w of a Linear/Conv2d weight tensor is
//! re-initialised with probability P_re = 1 − Φ(|w| / σ_re), σ_re = max|w| / d_re, where Φ is
//! the standard normal CDF: small weights are reset often, large ones rarely (with d_re = 1 the
//! largest weight of a layer is reset with 1 − Φ(1) ≈ 16 %, as the paper says). A reset weight
//! gets a fresh value from its layer's initialisation distribution.
//!
//! We follow the paper's text. The authors' released code resets when |N(0, σ_re)| > |w|, i.e.
//! with probability 2(1 − Φ(|w|/σ_re)), and draws new values from U(−max|w|, max|w|).
//!
//! Draws come from a seeded stream (one uniform per weight, in parameter order), so that a run
//! is reproducible from its seed. [`rejuvenate_values`] is that definition, word by word;
//! [`Rejuvenator`] computes exactly the same (same words, same resets, same new values, same
//! final stream position) in place and mostly in parallel (`keystream`, `scan`).

mod fused;
mod keystream;
mod scan;

use crate::error::{Result, SynapseError};
use crate::param::Param;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Tensor};
use fused::Descent;
use keystream::Keystream;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// P_re = 1 − Φ(|w| / σ) (Eq. 3). σ = 0 (an all-zero tensor) counts as |w|/σ = 0.
pub fn reset_probability(abs_w: f64, sigma: f64) -> f64 {
    let z = if sigma > 0.0 { abs_w / sigma } else { 0.0 };
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Values a weight tensor can hold on the host.
pub trait WeightValue: Copy + Send + Sync + candle_core::WithDType {
    /// The bits of a value at or above which |w| is not finite (∞ or NaN).
    const NON_FINITE_MAGNITUDE: u64;
    fn weight_f64(self) -> f64;
    fn from_weight_f64(v: f64) -> Self;
    /// The value rounded to f32, clamped to its finite range (for estimates only).
    fn weight_f32(self) -> f32;
    /// The bits of |w|: for finite values, ordered as the magnitudes are.
    fn magnitude_bits(self) -> u64;
    /// The magnitude whose bits [`magnitude_bits`](Self::magnitude_bits) gave.
    fn magnitude_from_bits(bits: u64) -> f64;
    /// The largest [`magnitude_bits`](Self::magnitude_bits) of `values` (0 when empty), in
    /// the type's own integer width so that the comparisons vectorise.
    fn max_magnitude_bits(values: &[Self]) -> u64;
}

impl WeightValue for f32 {
    const NON_FINITE_MAGNITUDE: u64 = 0x7f80_0000;
    fn weight_f64(self) -> f64 {
        self as f64
    }
    fn from_weight_f64(v: f64) -> Self {
        v as f32
    }
    fn weight_f32(self) -> f32 {
        self
    }
    fn magnitude_bits(self) -> u64 {
        u64::from(self.to_bits() & 0x7fff_ffff)
    }
    fn magnitude_from_bits(bits: u64) -> f64 {
        f32::from_bits(bits as u32) as f64
    }
    fn max_magnitude_bits(values: &[Self]) -> u64 {
        u64::from(
            values
                .iter()
                .fold(0u32, |m, w| m.max(w.to_bits() & 0x7fff_ffff)),
        )
    }
}

impl WeightValue for f64 {
    const NON_FINITE_MAGNITUDE: u64 = 0x7ff0_0000_0000_0000;
    fn weight_f64(self) -> f64 {
        self
    }
    fn from_weight_f64(v: f64) -> Self {
        v
    }
    fn weight_f32(self) -> f32 {
        // beyond f32's range the nearest f32 (not ∞): an estimate must never round up past it
        self.clamp(-(f32::MAX as f64), f32::MAX as f64) as f32
    }
    fn magnitude_bits(self) -> u64 {
        self.to_bits() & 0x7fff_ffff_ffff_ffff
    }
    fn magnitude_from_bits(bits: u64) -> f64 {
        f64::from_bits(bits)
    }
    fn max_magnitude_bits(values: &[Self]) -> u64 {
        values.iter().fold(0u64, |m, w| m.max(w.magnitude_bits()))
    }
}

/// Tabulated P_re over z = |w|/σ ∈ [0, Z_MAX], to decide most draws without evaluating Φ.
///
/// P_re is decreasing in z, so for z in bin [z_i, z_i+1] it lies between the bin's end values:
/// u below the lower one resets, u above the upper one does not, and only draws between the
/// two (a fraction ≈ the bin's width times the density) need the exact function. The decision
/// is therefore exact, at a few nanoseconds per weight.
struct ResetTable {
    inv_step: f64,
    p: Vec<f64>,
    /// ⌈p·2³²⌉ per bin: a 32-bit draw at or above it is u ≥ p, a weight certainly kept.
    keep: [u32; BINS + 1],
}

const Z_MAX: f64 = 8.0;
const BINS: usize = 2048;

impl ResetTable {
    fn get() -> &'static ResetTable {
        static TABLE: std::sync::OnceLock<ResetTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let step = Z_MAX / BINS as f64;
            let p: Vec<f64> = (0..=BINS)
                .map(|i| reset_probability(i as f64 * step, 1.0))
                .collect();
            // p ≤ 1/2, so ⌈p·2³²⌉ ≤ 2³¹ fits; scaling by 2³² is exact
            let mut keep = [0u32; BINS + 1];
            for (k, &p) in keep.iter_mut().zip(&p) {
                *k = (p * 4_294_967_296.0).ceil() as u32;
            }
            ResetTable {
                inv_step: 1.0 / step,
                p,
                keep,
            }
        })
    }

    /// Whether a weight at z = |w|/σ is reset by the uniform draw `u`: u < 1 − Φ(z).
    fn resets(&self, z: f64, u: f64) -> bool {
        let bin = (z * self.inv_step) as usize;
        let (upper, lower) = if bin < BINS {
            (self.p[bin], self.p[bin + 1])
        } else {
            (self.p[BINS], 0.0)
        };
        if u >= upper {
            false
        } else if u < lower {
            true
        } else {
            u < reset_probability(z, 1.0)
        }
    }
}

/// Rejuvenates `values` in place; returns how many were reset.
///
/// `d_re` is the rejuvenation distance factor; `fresh` draws a new value. One uniform draw
/// per weight, in order, then the new values of the reset ones as they occur.
pub fn rejuvenate_values<T: WeightValue, R: Rng + ?Sized>(
    values: &mut [T],
    d_re: f64,
    rng: &mut R,
    mut fresh: impl FnMut(&mut R) -> f64,
) -> usize {
    let max = values
        .iter()
        .fold(0.0f64, |m, w| m.max(w.weight_f64().abs()));
    let inv_sigma = inverse_sigma(max, d_re);
    let table = ResetTable::get();
    let mut reset = 0;
    for w in values.iter_mut() {
        // 32 random bits per weight: u ∈ [0, 1) on a grid of 2⁻³².
        let u = rng.next_u32() as f64 * (1.0 / 4_294_967_296.0);
        if table.resets(w.weight_f64().abs() * inv_sigma, u) {
            *w = T::from_weight_f64(fresh(rng));
            reset += 1;
        }
    }
    reset
}

/// 1/σ_re for σ_re = max|w| / d_re; 0 for an all-zero tensor (every |w|/σ then counts as 0).
fn inverse_sigma(max_abs: f64, d_re: f64) -> f64 {
    let sigma = max_abs / d_re;
    if sigma > 0.0 {
        1.0 / sigma
    } else {
        0.0
    }
}

/// Writes host `values` back into `var` (on its device, in its dtype).
fn write_back<T: WeightValue>(var: &candle_core::Var, values: Vec<T>) -> Result<()> {
    let fresh = Tensor::from_vec(values, var.dims(), &Device::Cpu)?
        .to_dtype(var.dtype())?
        .to_device(var.device())?;
    var.set(&fresh)?;
    Ok(())
}

/// Rejuvenates one synaptic weight tensor by the word-by-word definition; returns how many
/// weights were reset. [`Rejuvenator`] gives the same result faster; this is its reference.
pub fn rejuvenate<R: Rng + ?Sized>(param: &Param, d_re: f64, rng: &mut R) -> Result<usize> {
    match param.var.dtype() {
        DType::F64 => rejuvenate_as::<f64, R>(param, d_re, rng),
        _ => rejuvenate_as::<f32, R>(param, d_re, rng),
    }
}

fn rejuvenate_as<T: WeightValue, R: Rng + ?Sized>(
    param: &Param,
    d_re: f64,
    rng: &mut R,
) -> Result<usize> {
    let var = &param.var;
    let mut values = var.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>()?;
    if let Some(bad) = values.iter().find(|w| !w.weight_f64().is_finite()) {
        return Err(diverged(param, bad.weight_f64()));
    }
    let init = param.init;
    let reset = rejuvenate_values(&mut values, d_re, rng, |r| init.sample(r));
    if reset > 0 {
        write_back(var, values)?;
    }
    Ok(reset)
}

fn diverged(param: &Param, value: f64) -> SynapseError {
    SynapseError::BadParameter {
        name: param.name.clone(),
        problem: format!("holds a non-finite weight ({value}); training diverged"),
    }
}

/// The rejuvenation of a model's weights step after step, from one seeded ChaCha8 stream.
///
/// Bit-identical to [`rejuvenate`] called with that stream, tensor after tensor: on the CPU it
/// works in the weight's own storage (no host copies), finds max|w| and the weights' reset
/// thresholds in parallel, and reads the stream from a window generated ahead on every thread.
pub struct Rejuvenator {
    rng: ChaCha8Rng,
    stream: Keystream,
    thresholds: Vec<u32>,
    /// Per weight tensor, max|w| after its last update: the next update's estimate of σ_re.
    last_max: HashMap<String, f64>,
}

/// How far max|w| may grow from one update to the next for its estimate to stay valid (and
/// shrink, for the thresholds it gave to stay useful).
const GROWTH: f64 = 1.0 / 64.0;
const SHRINKAGE: f64 = 1.0 / 16.0;

impl Rejuvenator {
    /// Draws from `rng`, continuing at its position.
    pub fn new(rng: ChaCha8Rng) -> Self {
        let stream = Keystream::continuing(&rng);
        Self {
            rng,
            stream,
            thresholds: Vec::new(),
            last_max: HashMap::new(),
        }
    }

    /// Word position of the stream (to checkpoint a run).
    pub fn word_position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Continues from a position saved by [`word_position`](Self::word_position).
    pub fn set_word_position(&mut self, position: u128) {
        self.rng.set_word_pos(position);
    }

    /// Rejuvenates one synaptic weight tensor; returns how many weights were reset.
    pub fn rejuvenate(&mut self, param: &Param, d_re: f64) -> Result<usize> {
        let var = &param.var;
        let on_host = var.device().is_cpu()
            && var.is_contiguous()
            && matches!(var.dtype(), DType::F32 | DType::F64);
        if !on_host {
            // another device or dtype: the weights travel to the host and back (only if one was reset)
            let mut values = var.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let reset = self.rejuvenate_slice(param, &mut values, d_re)?;
            if reset > 0 {
                write_back(var, values)?;
            }
            return Ok(reset);
        }
        let op = InPlace {
            param,
            d_re,
            rejuvenator: RefCell::new(self),
            outcome: RefCell::new(None),
        };
        var.inplace_op1(&op)?;
        op.outcome.into_inner().unwrap_or_else(|| {
            Err(SynapseError::BadParameter {
                name: param.name.clone(),
                problem: format!(
                    "has dtype {:?}, which rejuvenation does not handle",
                    var.dtype()
                ),
            })
        })
    }

    /// Rejuvenates `values` (the weights of `param`) in place.
    fn rejuvenate_slice<T: WeightValue>(
        &mut self,
        param: &Param,
        values: &mut [T],
        d_re: f64,
    ) -> Result<usize> {
        let (max_abs, first_bad) = max_abs_and_first_non_finite(values);
        if let Some(bad) = first_bad {
            return Err(diverged(param, bad));
        }
        self.stream.restart(&self.rng);
        let init = param.init;
        let reset = scan::rejuvenate_in_place(
            values,
            max_abs,
            d_re,
            &mut self.stream,
            &mut self.thresholds,
            &mut |stream| init.sample(stream),
        );
        self.rng.set_word_pos(self.stream.position());
        Ok(reset)
    }
}

impl Rejuvenator {
    /// The SGD update `w ← w − η·(f ⊙ g)` of one synaptic weight tensor followed by its
    /// rejuvenation, in one pass over the weights where it can (a contiguous f32/f64 weight on
    /// the CPU with a gradient and factors of its shape and dtype): exactly the bits, resets
    /// and stream position of the plain update then [`rejuvenate`](Self::rejuvenate).
    /// `None`: the weight is not one of those; nothing was done.
    pub fn descend_and_rejuvenate(
        &mut self,
        param: &Param,
        grad: &Tensor,
        lr: f64,
        d_re: f64,
    ) -> Result<Option<usize>> {
        let var = &param.var;
        let fits = |t: &Tensor| {
            t.device().is_cpu() && t.dtype() == var.dtype() && t.shape() == var.shape()
        };
        let fused = var.device().is_cpu()
            && var.is_contiguous()
            && matches!(var.dtype(), DType::F32 | DType::F64)
            && fits(grad)
            && param.fuzzy.as_ref().is_none_or(fits);
        if !fused {
            return Ok(None);
        }
        let grad = grad.contiguous()?;
        let op = Fused {
            param,
            lr,
            d_re,
            rejuvenator: RefCell::new(self),
            outcome: RefCell::new(None),
        };
        match &param.fuzzy {
            Some(f) => var.inplace_op3(&grad, &f.contiguous()?, &op)?,
            None => var.inplace_op2(&grad, &op)?,
        }
        match op.outcome.into_inner() {
            Some(outcome) => outcome.map(Some),
            None => Ok(None),
        }
    }

    /// [`descend_and_rejuvenate`](Self::descend_and_rejuvenate) on the host slices.
    fn descend_and_rejuvenate_slice<T: Descent>(
        &mut self,
        param: &Param,
        (w, g, f): (&mut [T], &[T], Option<&[T]>),
        lr: f64,
        d_re: f64,
    ) -> Result<usize> {
        let table = ResetTable::get();
        // thresholds from last step's max|w| with a margin: z estimated too small, never too
        // large, as long as max|w| has not grown past the margin (checked below)
        let estimate = self.last_max.get(&param.name).map(|m| m * (1.0 + GROWTH));
        let scale = estimate.and_then(|m| {
            let scale = (d_re / m * table.inv_step) as f32;
            (m > 0.0 && m.is_finite() && scale.is_normal()).then_some(scale)
        });
        self.thresholds.resize(w.len(), 0);
        let max_bits = fused::descend_with_thresholds(
            w,
            g,
            f,
            T::from_weight_f64(lr),
            &mut self.thresholds,
            scale,
            &table.keep,
        );
        if max_bits >= T::NON_FINITE_MAGNITUDE {
            self.last_max.remove(&param.name);
            let bad = w.iter().map(|v| v.weight_f64()).find(|v| !v.is_finite());
            return Err(diverged(param, bad.unwrap_or(f64::NAN)));
        }
        let max_abs = T::magnitude_from_bits(max_bits);
        let useful = match (estimate, scale) {
            (Some(m), Some(_)) => max_abs <= m && max_abs >= m * (1.0 - SHRINKAGE),
            _ => false,
        };
        if !useful {
            scan::fill_all_thresholds(w, &mut self.thresholds, max_abs, d_re);
        }
        self.last_max.insert(param.name.clone(), max_abs);
        self.stream.restart(&self.rng);
        let init = param.init;
        let reset = scan::rejuvenate_with_thresholds(
            w,
            &self.thresholds,
            max_abs,
            d_re,
            &mut self.stream,
            &mut |stream| init.sample(stream),
        );
        self.rng.set_word_pos(self.stream.position());
        Ok(reset)
    }
}

/// The fused update and rejuvenation as a candle in-place op on the weight's own storage.
struct Fused<'a, 'r> {
    param: &'a Param,
    lr: f64,
    d_re: f64,
    rejuvenator: RefCell<&'r mut Rejuvenator>,
    outcome: RefCell<Option<Result<usize>>>,
}

/// The contiguous elements of `layout` in `storage`, when it holds `T`.
fn host_slice<'s, T: HostElement>(storage: &'s CpuStorage, layout: &Layout) -> Option<&'s [T]> {
    let (start, end) = layout.contiguous_offsets()?;
    T::of(storage)?.get(start..end)
}

/// The element types of [`Fused`], read out of candle's CPU storage.
trait HostElement: Descent {
    fn of(storage: &CpuStorage) -> Option<&[Self]>;
    fn of_mut(storage: &mut CpuStorage) -> Option<&mut [Self]>;
}

impl HostElement for f32 {
    fn of(storage: &CpuStorage) -> Option<&[f32]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn of_mut(storage: &mut CpuStorage) -> Option<&mut [f32]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl HostElement for f64 {
    fn of(storage: &CpuStorage) -> Option<&[f64]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn of_mut(storage: &mut CpuStorage) -> Option<&mut [f64]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl Fused<'_, '_> {
    fn run<T: HostElement>(
        &self,
        (ws, wl): (&mut CpuStorage, &Layout),
        (gs, gl): (&CpuStorage, &Layout),
        f: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<()> {
        let (start, end) = layout_range(wl)?;
        let g = host_slice::<T>(gs, gl);
        let f = f.map(|(fs, fl)| host_slice::<T>(fs, fl));
        let w = T::of_mut(ws).and_then(|w| w.get_mut(start..end));
        let operands = match (w, g, f) {
            (Some(w), Some(g), None) if g.len() == w.len() => Some((w, g, None)),
            (Some(w), Some(g), Some(Some(f))) if g.len() == w.len() && f.len() == w.len() => {
                Some((w, g, Some(f)))
            }
            _ => None,
        };
        let Some(operands) = operands else {
            candle_core::bail!("fused descent: operands of another dtype, layout or length");
        };
        let outcome = self
            .rejuvenator
            .borrow_mut()
            .descend_and_rejuvenate_slice(self.param, operands, self.lr, self.d_re);
        *self.outcome.borrow_mut() = Some(outcome);
        Ok(())
    }

    fn dispatch(
        &self,
        w: (&mut CpuStorage, &Layout),
        g: (&CpuStorage, &Layout),
        f: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<()> {
        match w.0 {
            CpuStorage::F32(_) => self.run::<f32>(w, g, f),
            CpuStorage::F64(_) => self.run::<f64>(w, g, f),
            _ => Ok(()),
        }
    }
}

fn layout_range(layout: &Layout) -> candle_core::Result<(usize, usize)> {
    match layout.contiguous_offsets() {
        Some(range) => Ok(range),
        None => candle_core::bail!("fused descent needs a contiguous weight tensor"),
    }
}

impl InplaceOp2 for Fused<'_, '_> {
    fn name(&self) -> &'static str {
        "synfed-descend-rejuvenate"
    }

    fn cpu_fwd(
        &self,
        ws: &mut CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        self.dispatch((ws, wl), (gs, gl), None)
    }
}

impl InplaceOp3 for Fused<'_, '_> {
    fn name(&self) -> &'static str {
        "synfed-descend-scaled-rejuvenate"
    }

    fn cpu_fwd(
        &self,
        ws: &mut CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
    ) -> candle_core::Result<()> {
        self.dispatch((ws, wl), (gs, gl), Some((fs, fl)))
    }
}

/// max|w| over `values` and, if some value is not finite, the first such, in parallel.
///
/// The bits of |w| of finite floats are ordered as the magnitudes, and those of ∞ and NaN lie
/// above all of them: one integer maximum (which vectorises, unlike `f64::max`) gives both the
/// largest magnitude and whether every value is finite.
fn max_abs_and_first_non_finite<T: WeightValue>(values: &[T]) -> (f64, Option<f64>) {
    const TASK: usize = 1 << 14;
    let max_bits = values
        .par_chunks(TASK)
        .map(T::max_magnitude_bits)
        .reduce(|| 0, u64::max);
    if max_bits < T::NON_FINITE_MAGNITUDE {
        return (T::magnitude_from_bits(max_bits), None);
    }
    let first_bad = values
        .iter()
        .map(|w| w.weight_f64())
        .find(|v| !v.is_finite());
    (f64::NAN, first_bad)
}

/// Rejuvenation as a candle in-place op: the weights are rewritten in their own storage.
struct InPlace<'a, 'r> {
    param: &'a Param,
    d_re: f64,
    rejuvenator: RefCell<&'r mut Rejuvenator>,
    outcome: RefCell<Option<Result<usize>>>,
}

impl InplaceOp1 for InPlace<'_, '_> {
    fn name(&self) -> &'static str {
        "synfed-rejuvenate"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("rejuvenation needs a contiguous weight tensor");
        };
        let mut rejuvenator = self.rejuvenator.borrow_mut();
        let outcome = match storage {
            CpuStorage::F32(v) => {
                rejuvenator.rejuvenate_slice(self.param, &mut v[start..end], self.d_re)
            }
            CpuStorage::F64(v) => {
                rejuvenator.rejuvenate_slice(self.param, &mut v[start..end], self.d_re)
            }
            _ => return Ok(()),
        };
        *self.outcome.borrow_mut() = Some(outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn probability_matches_the_normal_tail() {
        // Φ(1) = 0.841344746…, Φ(2) = 0.977249868…
        assert!((reset_probability(1.0, 1.0) - 0.158655254).abs() < 1e-8);
        assert!((reset_probability(2.0, 1.0) - 0.022750132).abs() < 1e-8);
        assert_eq!(reset_probability(0.0, 1.0), 0.5);
        assert_eq!(reset_probability(0.3, 0.0), 0.5);
    }

    #[test]
    fn empirical_reset_rate_matches_p_re_at_several_magnitudes() {
        // One tensor holds a single large weight (fixing max|w| = 1, σ = 1/d_re) and many
        // copies of a smaller magnitude; count how often those are reset.
        let d_re = 4.0;
        let mut rng = crate::rng::stream(11, 2);
        for a in [0.0, 0.1, 0.25, 0.5, 1.0] {
            let n = 200_000;
            let mut values = vec![a; n];
            values.push(1.0);
            let sigma = 1.0 / d_re;
            let reset = rejuvenate_values(&mut values[..], d_re, &mut rng, |_| f64::NAN);
            let p = reset_probability(a, sigma);
            let expected = p * n as f64 + reset_probability(1.0, sigma);
            let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
            assert!(
                (reset as f64 - expected).abs() < 5.0 * sd,
                "|w| = {a}: {reset} resets, expected {expected:.0} ± {sd:.0}"
            );
            assert_eq!(values.iter().filter(|v| v.is_nan()).count(), reset);
        }
    }

    #[test]
    fn the_table_decides_exactly_like_the_formula() {
        let table = ResetTable::get();
        let mut rng = crate::rng::stream(13, 2);
        for _ in 0..200_000 {
            let z: f64 = rng.random_range(0.0..10.0);
            let u: f64 = rng.random::<f64>() * 0.6;
            assert_eq!(
                table.resets(z, u),
                u < reset_probability(z, 1.0),
                "z {z} u {u}"
            );
        }
        // the boundaries of a bin
        for z in [0.0, Z_MAX, Z_MAX / BINS as f64, 3.0] {
            let p = reset_probability(z, 1.0);
            assert!(table.resets(z, p * 0.999_999));
            assert!(!table.resets(z, p));
        }
    }

    #[test]
    fn the_largest_weight_is_reset_with_16_percent_at_d_re_1() {
        let mut rng = crate::rng::stream(12, 2);
        let trials = 100_000;
        let hits: usize = (0..trials)
            .map(|_| rejuvenate_values(&mut [1.0f64], 1.0, &mut rng, |_| 0.0))
            .sum();
        let rate = hits as f64 / trials as f64;
        assert!((rate - 0.1587).abs() < 0.005, "{rate}");
    }

    /// A weight tensor of `n` values, some in each magnitude, from a seeded stream.
    fn weights(n: usize, dtype: DType, seed: u64) -> Param {
        let mut rng = crate::rng::stream(seed, 9);
        let values: Vec<f64> = (0..n)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => rng.random_range(-1e-3..1e-3),
                _ => rng.random_range(-0.3..0.3),
            })
            .collect();
        let t = Tensor::from_vec(values, n, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        Param {
            name: "layer.weight".into(),
            var: candle_core::Var::from_tensor(&t).unwrap(),
            role: crate::Role::SynapticWeight,
            init: crate::Init::Uniform { bound: 0.3 },
            fuzzy: None,
        }
    }

    fn bits(p: &Param) -> Vec<u64> {
        p.var
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn the_rejuvenator_equals_the_word_by_word_definition() {
        // sizes around the scan's segment (2^16) and a refill; d_re from rare resets to ~45 %
        // (whose words run far past the first window); several steps on one stream
        for (n, d_re, dtype) in [
            (1, 14.0, DType::F32),
            (7, 1.0, DType::F64),
            (65_536, 14.0, DType::F32),
            (65_537, 0.05, DType::F32),
            (300_001, 14.0, DType::F32),
            (200_000, 0.3, DType::F64),
        ] {
            let ours = weights(n, dtype, n as u64);
            let theirs = weights(n, dtype, n as u64);
            let mut rejuvenator = Rejuvenator::new(crate::rng::stream(5, 2));
            let mut rng = crate::rng::stream(5, 2);
            rng.next_u32(); // both mid-buffer: the definition's generator one word in
            rejuvenator.set_word_position(1);
            for step in 0..3 {
                let a = rejuvenator.rejuvenate(&ours, d_re).unwrap();
                let b = rejuvenate(&theirs, d_re, &mut rng).unwrap();
                assert_eq!(a, b, "n {n} d_re {d_re} step {step}: resets");
                assert!(b > 0 || n < 10, "n {n}: the case resets nothing");
                assert_eq!(bits(&ours), bits(&theirs), "n {n} d_re {d_re} step {step}");
                assert_eq!(
                    rejuvenator.word_position(),
                    rng.get_word_pos(),
                    "n {n} step {step}"
                );
            }
        }
    }

    #[test]
    fn the_fused_update_equals_descent_then_the_definition() {
        // steps whose max|w| stays within the estimate's margin (thresholds from the estimate),
        // grows past it and shrinks below it (thresholds recomputed), with and without factors
        for (n, dtype, factors) in [
            (300_001, DType::F32, true),
            (70_000, DType::F64, false),
            (70_003, DType::F32, false),
            (5, DType::F32, true),
        ] {
            let with_factors = |p: Param| {
                let f: Vec<f64> = (0..n).map(|i| 0.96 + (i % 9) as f64 / 100.0).collect();
                let f = Tensor::from_vec(f, n, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype);
                Param {
                    fuzzy: factors.then(|| f.unwrap()),
                    ..p
                }
            };
            let ours = with_factors(weights(n, dtype, 3));
            let theirs = with_factors(weights(n, dtype, 3));
            let mut rejuvenator = Rejuvenator::new(crate::rng::stream(4, 2));
            let mut rng = crate::rng::stream(4, 2);
            for (step, size) in [1e-4, 1e-4, 3.0, 1e-4, -2.5, 1e-4].into_iter().enumerate() {
                let g: Vec<f64> = (0..n)
                    .map(|i| size * (((i * 7919) % 1013) as f64 / 1013.0 - 0.3))
                    .collect();
                let g = Tensor::from_vec(g, n, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let a = rejuvenator
                    .descend_and_rejuvenate(&ours, &g, 0.1, 14.0)
                    .unwrap()
                    .expect("a contiguous host weight takes the fused path");
                crate::kernels::descend(&theirs.var, &g, theirs.fuzzy.as_ref(), 0.1).unwrap();
                let b = rejuvenate(&theirs, 14.0, &mut rng).unwrap();
                assert_eq!(a, b, "n {n} step {step}: resets");
                assert_eq!(bits(&ours), bits(&theirs), "n {n} step {step}");
                assert_eq!(rejuvenator.word_position(), rng.get_word_pos());
            }
        }
    }

    #[test]
    fn an_all_zero_tensor_and_a_diverged_one() {
        // σ = 0: every weight has P_re = 1/2, as in the definition
        let zeros = |dtype| {
            let p = weights(10_000, dtype, 1);
            p.var.set(&p.var.zeros_like().unwrap()).unwrap();
            p
        };
        let (ours, theirs) = (zeros(DType::F32), zeros(DType::F32));
        let mut rejuvenator = Rejuvenator::new(crate::rng::stream(6, 2));
        let mut rng = crate::rng::stream(6, 2);
        let a = rejuvenator.rejuvenate(&ours, 14.0).unwrap();
        assert_eq!(a, rejuvenate(&theirs, 14.0, &mut rng).unwrap());
        assert!((4_500..5_500).contains(&a), "{a} of 10,000 reset");
        assert_eq!(bits(&ours), bits(&theirs));

        let p = weights(100_000, DType::F32, 2);
        let mut v = p.var.to_vec1::<f32>().unwrap();
        v[77_777] = f32::NAN;
        v[88_888] = f32::INFINITY;
        p.var
            .set(&Tensor::from_vec(v, 100_000, &Device::Cpu).unwrap())
            .unwrap();
        let err = rejuvenator.rejuvenate(&p, 14.0).unwrap_err().to_string();
        assert!(err.contains("layer.weight") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn extreme_magnitudes_take_the_exact_path_not_a_wrong_estimate() {
        // f64 weights far outside f32's range, f32 weights so small that the bins per unit of
        // |w| overflow f32, and an f64 layer whose bins per unit of |w| are subnormal in f32
        let cases: Vec<(DType, Vec<f64>)> = vec![
            (
                DType::F64,
                (0..50_000)
                    .map(|i| 10f64.powi(i % 600 - 300) * if i % 2 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
            (
                DType::F32,
                (0..50_000).map(|i| (i % 97) as f64 * 1e-39).collect(),
            ),
            (
                DType::F64,
                (0..50_000).map(|i| (i % 89) as f64 * 1e40).collect(),
            ),
        ];
        for (case, (dtype, values)) in cases.into_iter().enumerate() {
            let make = || {
                let p = weights(values.len(), dtype, 3);
                let t = Tensor::from_vec(values.clone(), values.len(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                p.var.set(&t).unwrap();
                p
            };
            let (ours, theirs) = (make(), make());
            let mut rejuvenator = Rejuvenator::new(crate::rng::stream(8, 2));
            let mut rng = crate::rng::stream(8, 2);
            for d_re in [14.0, 1e6] {
                let a = rejuvenator.rejuvenate(&ours, d_re).unwrap();
                assert_eq!(
                    a,
                    rejuvenate(&theirs, d_re, &mut rng).unwrap(),
                    "case {case}"
                );
                assert!(a > 0, "case {case} d_re {d_re}: nothing reset");
                assert_eq!(bits(&ours), bits(&theirs), "case {case} d_re {d_re}");
            }
        }
    }
}
