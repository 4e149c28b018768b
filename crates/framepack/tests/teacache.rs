//! TeaCache on the transformer: the first and last calls of a section compute, a skipped call
//! reuses the residual of the last computed one, and a cache that never skips changes nothing.

use candle_core::{DType, Device, Tensor};
use framepack::generator::NoiseRng;
use framepack::models::transformer::{TEACACHE_COEFFICIENTS, TeaCache, Transformer, TransformerInputs};
use framepack_train::testing;

struct Inputs {
    x: Tensor,
    text: Tensor,
    mask: Tensor,
    pooled: Tensor,
    image: Tensor,
    guidance: Tensor,
    idx: Tensor,
    clean: Tensor,
    clean_idx: Tensor,
}

fn inputs() -> Inputs {
    let dev = Device::Cpu;
    let mut rng = NoiseRng::new(5);
    Inputs {
        x: rng.normal_tensor(&[1, 16, 3, 4, 4], &dev).unwrap(),
        text: rng.normal_tensor(&[1, 3, 16], &dev).unwrap(),
        mask: Tensor::ones((1, 3), DType::F32, &dev).unwrap(),
        pooled: rng.normal_tensor(&[1, 8], &dev).unwrap(),
        image: rng.normal_tensor(&[1, 2, 8], &dev).unwrap(),
        guidance: Tensor::new(&[9984f32], &dev).unwrap(),
        idx: Tensor::new(&[2i64, 3, 4], &dev).unwrap(),
        clean: rng.normal_tensor(&[1, 16, 2, 4, 4], &dev).unwrap(),
        clean_idx: Tensor::new(&[0i64, 5], &dev).unwrap(),
    }
}

fn forward(model: &Transformer, i: &Inputs, t: f32, cache: Option<&mut TeaCache>) -> Tensor {
    let timestep = Tensor::new(&[t], &Device::Cpu).unwrap();
    let inputs = TransformerInputs {
        image_embeds: Some(&i.image),
        guidance: Some(&i.guidance),
        latents_clean: Some(&i.clean),
        indices_latents_clean: Some(&i.clean_idx),
        ..TransformerInputs::new(&i.x, &timestep, &i.text, &i.mask, &i.pooled, &i.idx)
    };
    match cache {
        Some(c) => model.forward_with_cache(&inputs, c).unwrap(),
        None => model.forward(&inputs).unwrap(),
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn skipped_calls_reuse_the_residual_and_first_and_last_always_compute() {
    let model = testing::tiny_transformer(3, DType::F32, &Device::Cpu).unwrap();
    let i = inputs();
    let mut cache = TeaCache::new(1e6, 4).unwrap();
    let full = forward(&model, &i, 996.0, None);
    let first = forward(&model, &i, 996.0, Some(&mut cache));
    assert_eq!(max_abs(&full, &first), 0.0, "a computed call is the plain forward");
    // Same inputs again: skipped, and tokens + cached residual give the same velocity.
    let skipped = forward(&model, &i, 996.0, Some(&mut cache));
    assert_eq!((cache.computed(), cache.skipped()), (1, 1));
    assert!(max_abs(&full, &skipped) < 1e-5, "{}", max_abs(&full, &skipped));
    // Another timestep is skipped too (huge threshold) and so differs from its full forward.
    let other = forward(&model, &i, 500.0, Some(&mut cache));
    assert_eq!((cache.computed(), cache.skipped()), (1, 2));
    assert!(max_abs(&other, &forward(&model, &i, 500.0, None)) > 1e-4);
    // The 4th call is the section's last: computed whatever the threshold.
    let last = forward(&model, &i, 200.0, Some(&mut cache));
    assert_eq!((cache.computed(), cache.skipped()), (2, 2));
    assert_eq!(max_abs(&last, &forward(&model, &i, 200.0, None)), 0.0);
    // The count wraps: the next call starts a new section and computes.
    forward(&model, &i, 996.0, Some(&mut cache));
    assert_eq!(cache.computed(), 3);
    cache.reset();
    assert_eq!((cache.computed(), cache.skipped()), (0, 0));
}

#[test]
fn a_tiny_threshold_never_skips_and_changes_nothing() {
    let model = testing::tiny_transformer(4, DType::F32, &Device::Cpu).unwrap();
    let i = inputs();
    let mut cache = TeaCache::new(1e-12, 5).unwrap();
    for t in [1000.0, 996.0, 950.0, 700.0, 300.0] {
        let a = forward(&model, &i, t, Some(&mut cache));
        assert_eq!(max_abs(&a, &forward(&model, &i, t, None)), 0.0);
    }
    assert_eq!((cache.computed(), cache.skipped()), (5, 0));
}

#[test]
fn rescale_polynomial_and_bad_thresholds() {
    assert_eq!(TeaCache::rescale(0.0), TEACACHE_COEFFICIENTS[4]);
    let x: f64 = 0.1;
    let want = 733.226126 * x.powi(4) - 401.131952 * x.powi(3) + 67.5869174 * x * x - 3.149878 * x + 0.0961237896;
    assert!((TeaCache::rescale(x) - want).abs() < 1e-12);
    assert!(TeaCache::new(0.0, 25).is_err());
    assert!(TeaCache::new(f64::NAN, 25).is_err());
    assert!(TeaCache::new(0.15, 0).is_err());
}
