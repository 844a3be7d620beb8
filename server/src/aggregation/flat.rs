//! Updates as one flat f64 vector, and back.
//!
//! The robust rules are defined on vectors. An update is flattened tensor by tensor, in the
//! layout's order, row-major: every value a client sends, BatchNorm buffers' changes
//! included, because all of them move the global model. f64 makes every f32 exact, and sums
//! and squared distances of f32-range values cannot overflow.

use super::AggregationError;
use candle_core::{DType, Device, Tensor};
use synfed_wire::chunks::TensorLayout;

/// The number of values of an update of `layout`.
pub fn value_count(layout: &[TensorLayout]) -> usize {
    layout.iter().map(TensorLayout::elem_count).sum()
}

/// `update`'s values, tensor after tensor.
pub fn flatten(update: &[Tensor]) -> Result<Vec<f64>, AggregationError> {
    let count: usize = update.iter().map(Tensor::elem_count).sum();
    let mut values = Vec::with_capacity(count);
    for t in update {
        values.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(values)
}

/// The tensors of `layout` (its shapes and dtypes, on the CPU) holding `values`.
pub fn unflatten(values: &[f64], layout: &[TensorLayout]) -> Result<Vec<Tensor>, AggregationError> {
    let expected = value_count(layout);
    if values.len() != expected {
        return Err(AggregationError::Length {
            expected,
            got: values.len(),
        });
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(layout.len());
    for l in layout {
        let end = start + l.elem_count();
        let t = Tensor::from_slice(&values[start..end], l.shape.as_slice(), &Device::Cpu)?;
        out.push(t.to_dtype(l.dtype)?);
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_unflatten_are_inverse() {
        let a = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[-0.5f32, 0.25], &Device::Cpu).unwrap();
        let layout = vec![TensorLayout::of("a", &a), TensorLayout::of("b", &b)];
        let flat = flatten(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -0.5, 0.25]);
        assert_eq!(value_count(&layout), 8);
        let back = unflatten(&flat, &layout).unwrap();
        assert_eq!(back[0].dims(), &[2, 3]);
        assert_eq!(back[0].dtype(), DType::F32);
        assert_eq!(
            back[0].to_vec2::<f32>().unwrap(),
            a.to_vec2::<f32>().unwrap()
        );
        assert_eq!(back[1].to_vec1::<f32>().unwrap(), vec![-0.5, 0.25]);
        assert!(matches!(
            unflatten(&flat[1..], &layout),
            Err(AggregationError::Length {
                expected: 8,
                got: 7
            })
        ));
    }
}
