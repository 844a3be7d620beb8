use candle_core::{DType, Device, Tensor, Var};
use std::time::Instant;
use synfed_attack::inversion::{evaluate, InversionConfig, Target};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with(key)).unwrap().to_string()
}
fn minflt() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.split(' ').nth(7).unwrap().parse().unwrap()
}
fn main() {
    synfed_synapse::configure_candle();
    synfed_synapse::keep_allocator_memory();
    let arch: Arch = std::env::args().nth(1).unwrap().parse().unwrap();
    let batch: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let input = InputShape::new(3, 32, 32);
    let spec = ModelSpec::new(arch, input, 10, MethodSet::NONE, 1);
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::new(vec![3u32; batch], &Device::Cpu).unwrap();
    let truth = Tensor::randn(0f32, 1., (batch, 3, 32, 32), &Device::Cpu).unwrap();
    let gradient = model.gradients(&truth, &labels, Mode::TrainFrozenStats).unwrap();
    let target = Target { local_steps: None, model: &model, gradient, labels, mode: Mode::TrainFrozenStats, bounds: vec![(-2.0, 2.0); 3] };
    let config = InversionConfig::default();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch, 3, 32, 32), &Device::Cpu).unwrap()).unwrap();
    for i in 0..8 {
        let f0 = minflt();
        let t = Instant::now();
        evaluate(&target, &config, x.as_tensor()).unwrap();
        println!("{i}: {:.1} ms, {} minor faults, {} {}", t.elapsed().as_secs_f64() * 1e3, minflt() - f0, status("VmRSS"), status("VmHWM"));
    }
}
