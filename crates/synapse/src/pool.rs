//! Pooling written with reshapes and reductions.
//!
//! candle 0.11's `max_pool2d` backward scales the gradient by 1/k², so max pooling is written
//! as a reshape into windows and a `max` over them, whose gradient (and second-order gradient)
//! candle computes correctly. Windows do not overlap (stride = kernel); a remainder that does
//! not fill a window is cropped, as PyTorch's floor mode does (32 → 10 → 3 with k = 3). On ties
//! inside a window the gradient goes to every maximal element, where PyTorch picks one.

use crate::error::Result;
use candle_core::{Tensor, D};

/// Non-overlapping `k × k` max pooling of `[B, C, H, W]` (floor mode).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / k, w / k);
    let mut x = x.clone();
    if oh * k != h {
        x = x.narrow(2, 0, oh * k)?;
    }
    if ow * k != w {
        x = x.narrow(3, 0, ow * k)?;
    }
    Ok(x.reshape((b, c, oh, k, ow, k))?.max(D::Minus1)?.max(3)?)
}

/// Mean over the spatial dimensions: `[B, C, H, W] → [B, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn picks_window_maxima_and_crops_the_remainder() {
        let x = Tensor::arange(0f32, 25., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 5))
            .unwrap();
        let y = max_pool2d(&x, 2).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [6., 8., 16., 18.]
        );
        let y = max_pool2d(&x, 3).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [12.]);
    }

    #[test]
    fn gradient_goes_to_the_maximum_with_weight_one() {
        let x = Var::from_tensor(
            &Tensor::new(&[[[[1f32, 5., 2., 0.], [3., 4., 9., 1.]]]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = max_pool2d(x.as_tensor(), 2).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, [0., 1., 0., 0., 0., 0., 1., 0.]);
    }
}
