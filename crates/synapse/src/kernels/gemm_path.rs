//! Which of `gemm`'s instruction sets this process multiplies matrices with.
//!
//! The bytes of a run depend on it: an AVX-512 product accumulates in sixteen lanes, the
//! AVX2+FMA product in eight, so the same seed gives different (equally valid) weights on the
//! two paths. synfed therefore builds the AVX2+FMA path by default, which every x86-64
//! processor of the last decade runs identically, so a committed experiment reproduces bit for
//! bit on another machine. `--features avx512` adds gemm's AVX-512 kernels, chosen at run time
//! where the processor has AVX-512F: faster matrix products on those machines, at the price of
//! results that match other AVX-512 machines only. Benchmarks and byte-pinning tests name the
//! path with [`gemm_path`].

use std::fmt;

/// The instruction set `gemm` picks for f32/f64 products in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// 512-bit vectors (built with `--features avx512`, processor with AVX-512F).
    Avx512,
    /// 256-bit vectors with fused multiply-add: the default x86-64 path.
    Avx2Fma,
    /// Anything else (portable code, or NEON on aarch64).
    Other,
}

impl GemmPath {
    /// A short name for logs, benchmark records and expected-value tables.
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Avx512 => "avx512",
            GemmPath::Avx2Fma => "avx2-fma",
            GemmPath::Other => "other",
        }
    }
}

impl fmt::Display for GemmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The path `gemm` takes here, by the same test it makes at run time.
pub fn gemm_path() -> GemmPath {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return GemmPath::Avx512;
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return GemmPath::Avx2Fma;
        }
    }
    GemmPath::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_build_never_reports_avx512() {
        if !cfg!(feature = "avx512") {
            assert_ne!(gemm_path(), GemmPath::Avx512);
        }
        assert_eq!(GemmPath::Avx2Fma.to_string(), "avx2-fma");
    }
}
