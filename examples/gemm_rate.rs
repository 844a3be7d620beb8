use std::time::Instant;
use synfed_synapse::kernels::gemm::{matmul_new, Matrix};
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    for (m, k, n, ta, tb) in [(256, 2304, 1024, false, false), (2304, 256, 1024, true, false), (2304, 1024, 256, false, true), (1024, 2304, 256, true, true)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32).collect();
        let lhs = if ta { Matrix::row_major(&a, k, m).unwrap().t() } else { Matrix::row_major(&a, m, k).unwrap() };
        let rhs = if tb { Matrix::row_major(&b, n, k).unwrap().t() } else { Matrix::row_major(&b, k, n).unwrap() };
        for _ in 0..3 { matmul_new(lhs, rhs).unwrap(); }
        let t = Instant::now();
        for _ in 0..10 { matmul_new(lhs, rhs).unwrap(); }
        let s = t.elapsed().as_secs_f64() / 10.0;
        println!("{m}x{k}x{n} {ta} {tb}: {:.2} ms, {:.1} GFLOP/s", s * 1e3, 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}
