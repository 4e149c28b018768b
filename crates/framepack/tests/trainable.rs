//! The models train with candle's autograd (the nano model's route): every weight the loss
//! depends on receives a gradient (no fused kernel cuts the graph), and a few AdamW steps on one
//! batch lower the loss of the tiny VAE (reconstruction) and the tiny transformer (flow matching).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use framepack::models::transformer::{Transformer, TransformerInputs};
use framepack::models::vae::AutoencoderKLHunyuanVideo;
use framepack_train::testing;

/// A VarMap holding `tensors` as trainable variables.
fn varmap(tensors: std::collections::HashMap<String, Tensor>) -> VarMap {
    let map = VarMap::new();
    {
        let mut data = map.data().lock().unwrap();
        for (name, t) in tensors {
            data.insert(name, Var::from_tensor(&t).unwrap());
        }
    }
    map
}

fn mse(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b).unwrap().sqr().unwrap().mean_all().unwrap()
}

/// Every variable except those named with one of `unused` gets a non-zero gradient from `loss`.
fn assert_gradients_reach_every_weight(map: &VarMap, loss: &Tensor, unused: &[&str]) {
    let grads = loss.backward().unwrap();
    let data = map.data().lock().unwrap();
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        if unused.iter().any(|u| name.contains(u)) {
            continue;
        }
        let sum = grads.get(var.as_tensor()).map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
        if !sum.is_some_and(|s| s > 0.0) {
            missing.push(name.clone());
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "no gradient reaches {} weights: {missing:?}", missing.len());
}

fn train(map: &VarMap, steps: usize, loss: impl Fn() -> Tensor) -> (f32, f32) {
    let mut opt =
        AdamW::new(map.all_vars(), ParamsAdamW { lr: 3e-3, weight_decay: 0.0, ..Default::default() }).unwrap();
    let first = loss().to_scalar::<f32>().unwrap();
    for _ in 0..steps {
        opt.backward_step(&loss()).unwrap();
    }
    (first, loss().to_scalar::<f32>().unwrap())
}

#[test]
fn the_vae_learns_to_reconstruct() {
    let dev = Device::Cpu;
    let cfg = testing::tiny_vae_config();
    let map = varmap(testing::random_weights(1, 1.0, |vb| AutoencoderKLHunyuanVideo::new(vb, &cfg)).unwrap());
    let vae = AutoencoderKLHunyuanVideo::new(VarBuilder::from_varmap(&map, DType::F32, &dev), &cfg).unwrap();
    let x =
        (testing::test_image(16, 16, 2).unwrap().unsqueeze(2).unwrap().repeat((1, 1, 5, 1, 1)).unwrap() * 0.8).unwrap();
    let loss = || {
        let z = vae.encode(&x).unwrap().mean().unwrap();
        mse(&vae.decode(&z).unwrap(), &x)
    };
    assert_gradients_reach_every_weight(&map, &loss(), &[]);
    let (first, last) = train(&map, 8, loss);
    println!("vae reconstruction mse {first:.4} → {last:.4}");
    assert!(last < first * 0.9, "{first} → {last}");
}

#[test]
fn the_transformer_learns_a_flow_matching_target() {
    let dev = Device::Cpu;
    let cfg = testing::tiny_transformer_config();
    let map = varmap(testing::random_weights(2, 1.0, |vb| Transformer::new(vb, &cfg)).unwrap());
    let model = Transformer::new(VarBuilder::from_varmap(&map, DType::F32, &dev), &cfg).unwrap();
    let rn = |seed: u64, shape: &[usize]| framepack::generator::NoiseRng::new(seed).normal_tensor(shape, &dev).unwrap();
    let (x0, noise) = (rn(1, &[1, 16, 3, 4, 4]), rn(2, &[1, 16, 3, 4, 4]));
    let sigma = 0.6;
    let xt = ((&x0 * (1.0 - sigma)).unwrap() + (&noise * sigma).unwrap()).unwrap();
    let target = (&noise - &x0).unwrap();
    let (text, pooled, image) = (rn(3, &[1, 5, 16]), rn(4, &[1, 8]), rn(5, &[1, 4, 8]));
    let clean = rn(6, &[1, 16, 2, 4, 4]);
    let mask = Tensor::ones((1, 5), DType::F32, &dev).unwrap();
    let t = Tensor::new(&[sigma as f32 * 1000.0], &dev).unwrap();
    let g = Tensor::new(&[10000f32], &dev).unwrap();
    let idx = Tensor::new(&[1u32, 2, 3], &dev).unwrap();
    let idx_clean = Tensor::new(&[0u32, 4], &dev).unwrap();
    let inputs = TransformerInputs {
        image_embeds: Some(&image),
        guidance: Some(&g),
        latents_clean: Some(&clean),
        indices_latents_clean: Some(&idx_clean),
        ..TransformerInputs::new(&xt, &t, &text, &mask, &pooled, &idx)
    };
    let loss = || mse(&model.forward(&inputs).unwrap(), &target);
    // No 2x/4x history in these inputs.
    assert_gradients_reach_every_weight(&map, &loss(), &["proj_2x", "proj_4x"]);
    let (first, last) = train(&map, 8, loss);
    println!("flow matching mse {first:.4} → {last:.4}");
    assert!(last < first * 0.9, "{first} → {last}");
}
