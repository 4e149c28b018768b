//! Packed transformer: parity with the diffusers fixtures, bf16, real checkpoint keys, strict
//! loading errors and shape/batch generality.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use framepack::models::transformer::{Config, Transformer, TransformerInputs};
use framepack::weights::{self, WeightFiles};
use framepack::{Error, WeightsError};

mod common;

use common::{errors as metrics, fixture_path as fixture, load_fixture};

/// `tiny`: the reference harness's config (cases a, b, c). `odd`: a config whose sizes all differ
/// from the released model's, made by `tools/fixtures_transformer.py` (cases d, e).
fn fixture_config(set: &str) -> Config {
    let text = std::fs::read_to_string(fixture(&format!("transformer_{set}_config.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tiny_config() -> Config {
    fixture_config("tiny")
}

fn fixture_model(set: &str, dtype: DType) -> Transformer {
    let cfg = fixture_config(set);
    let files = WeightFiles::open(&[fixture(&format!("transformer_{set}_weights.safetensors"))]).unwrap();
    weights::load(files, dtype, &Device::Cpu, |vb| Transformer::new(vb, &cfg)).unwrap()
}

fn case_file(case: &str) -> String {
    let set = if matches!(case, "d" | "e") { "odd" } else { "tiny" };
    format!("transformer_{set}_case_{case}.safetensors")
}

fn load_case(case: &str) -> HashMap<String, Tensor> {
    load_fixture(&case_file(case))
}

fn case_inputs(t: &HashMap<String, Tensor>) -> TransformerInputs<'_> {
    let g = |k: &str| t.get(&format!("in.{k}")).unwrap_or_else(|| panic!("fixture lacks in.{k}"));
    TransformerInputs {
        hidden_states: g("hidden_states"),
        timestep: g("timestep"),
        encoder_hidden_states: g("encoder_hidden_states"),
        encoder_attention_mask: g("encoder_attention_mask"),
        pooled_projections: g("pooled_projections"),
        image_embeds: Some(g("image_embeds")),
        guidance: Some(g("guidance")),
        indices_latents: g("indices_latents"),
        latents_clean: Some(g("latents_clean")),
        indices_latents_clean: Some(g("indices_latents_clean")),
        latents_history_2x: Some(g("latents_history_2x")),
        indices_latents_history_2x: Some(g("indices_latents_history_2x")),
        latents_history_4x: Some(g("latents_history_4x")),
        indices_latents_history_4x: Some(g("indices_latents_history_4x")),
    }
}

/// Prints the metrics; returns them and a failure message if a tolerance is exceeded.
fn measure(label: &str, got: &Tensor, want: &Tensor, rel_tol: f64, abs_tol: f64) -> (f64, f64, Option<String>) {
    let (rel, max) = metrics(got, want);
    let ok = rel <= rel_tol && max <= abs_tol;
    println!("{label:<48} rel-L2 {rel:.3e}  max-abs {max:.3e}{}", if ok { "" } else { "  FAIL" });
    let failure =
        (!ok).then(|| format!("{label}: rel-L2 {rel:.3e} (≤ {rel_tol:e}), max-abs {max:.3e} (≤ {abs_tol:e})"));
    (rel, max, failure)
}

fn check(label: &str, got: &Tensor, want: &Tensor, rel_tol: f64, abs_tol: f64) -> (f64, f64) {
    let (rel, max, failure) = measure(label, got, want, rel_tol, abs_tol);
    if let Some(f) = failure {
        panic!("{f}");
    }
    (rel, max)
}

fn run_traced(model: &Transformer, inputs: &TransformerInputs<'_>) -> (Tensor, HashMap<String, Tensor>) {
    let mut inter = HashMap::new();
    let out = model
        .forward_traced(inputs, &mut |name, t| {
            inter.insert(name.to_string(), t.clone());
        })
        .unwrap();
    (out, inter)
}

fn parity(case: &str) {
    let model = fixture_model(if matches!(case, "d" | "e") { "odd" } else { "tiny" }, DType::F32);
    let t = load_case(case);
    let (out, inter) = run_traced(&model, &case_inputs(&t));
    // The untraced forward computes the last block for the noisy tokens only.
    let plain = model.forward(&case_inputs(&t)).unwrap();
    println!("case {case}:");
    let mut failures = Vec::new();
    for reference in ["out.sample", "out.sample_f64"] {
        for (label, got) in [("traced", &out), ("forward", &plain)] {
            let (_, _, f) = measure(&format!("{case}: {reference} ({label})"), got, &t[reference], 1e-5, 1e-4);
            failures.extend(f);
        }
    }

    let mut worst = (String::new(), 0f64, 0f64);
    let mut compared = 0;
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    for key in keys {
        let want = &t[key];
        let Some(name) = key.strip_prefix("inter.") else { continue };
        let got = inter.get(name).unwrap_or_else(|| panic!("no intermediate `{name}` traced"));
        let want = match name {
            "rope_cos" | "rope_sin" => {
                // The reference repeats every value for both channels of a pair.
                let (n, d) = want.dims2().unwrap();
                let pairs = want.reshape((n, d / 2, 2)).unwrap();
                let (even, odd) = (pairs.i((.., .., 0)).unwrap(), pairs.i((.., .., 1)).unwrap());
                assert_eq!(metrics(&even, &odd).1, 0.0, "{name}: reference pairs differ");
                even.contiguous().unwrap()
            }
            // Batch 1 crops the text to its valid tokens before the refiner; padded rows of the
            // reference are never used.
            "context_embedder" => want.narrow(1, 0, got.dim(1).unwrap()).unwrap(),
            _ => want.clone(),
        };
        let (rel, max, f) = measure(&format!("{case}: {name}"), got, &want, 1e-5, 1e-4);
        failures.extend(f);
        if rel > worst.1 {
            worst = (name.to_string(), rel, max);
        }
        compared += 1;
    }
    println!("{case}: worst intermediate {} rel-L2 {:.3e} max-abs {:.3e}", worst.0, worst.1, worst.2);
    assert!(compared >= 15, "only {compared} intermediates compared");
    assert!(failures.is_empty(), "case {case}:\n{}", failures.join("\n"));
}

#[test]
fn parity_case_a() {
    parity("a");
}

#[test]
fn parity_case_b() {
    parity("b");
}

#[test]
fn parity_case_c() {
    parity("c");
}

#[test]
fn parity_odd_config_case_d() {
    parity("d");
}

#[test]
fn parity_odd_config_case_e() {
    parity("e");
}

#[test]
fn bf16_close_to_f32_reference() {
    for (set, cases) in [("tiny", ["a", "b", "c"].as_slice()), ("odd", ["d", "e"].as_slice())] {
        let model = fixture_model(set, DType::BF16);
        assert_eq!(model.dtype(), DType::BF16);
        for &case in cases {
            bf16_case(&model, case);
        }
    }
}

fn bf16_case(model: &Transformer, case: &str) {
    let t = load_case(case);
    let out = model.forward(&case_inputs(&t)).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let (rel, max) = metrics(&out, &t["out.sample"]);
    println!("bf16 case {case}: rel-L2 {rel:.3e} max-abs {max:.3e}");
    assert!(rel <= 2e-2, "bf16 case {case}: rel-L2 {rel:.3e}");
}

fn real_keys() -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture("real_keys.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &json["framepack_transformer"];
    let keys: BTreeMap<String, Vec<usize>> = serde_json::from_value(entry["keys"].clone()).unwrap();
    assert_eq!(keys.len(), 1274);
    assert_eq!(entry["num_tensors"], 1274);
    let cfg: Config = serde_json::from_value(entry["config"].clone()).unwrap();
    assert_eq!(cfg, Config::framepack_13b(), "real config parses to the 13B preset");
    keys
}

#[test]
fn real_checkpoint_keys_and_shapes() {
    let keys = real_keys();
    let requested = weights::requested_shapes(|vb| Transformer::new(vb, &Config::framepack_13b())).unwrap();
    let missing: Vec<_> = keys.keys().filter(|k| !requested.contains_key(*k)).collect();
    let extra: Vec<_> = requested.keys().filter(|k| !keys.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not requested: {missing:?}; not in checkpoint: {extra:?}");
    for (k, shape) in &keys {
        assert_eq!(&requested[k], shape, "shape of {k}");
    }
    assert_eq!(requested, keys);
    let params: usize = requested.values().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(params, 12_874_314_816);
    weights::check_shapes("real_keys.json", keys, |vb| Transformer::new(vb, &Config::framepack_13b())).unwrap();
}

fn build_13b(vb: VarBuilder<'_>) -> candle_core::Result<Transformer> {
    Transformer::new(vb, &Config::framepack_13b())
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let keys = real_keys();

    let mut m = keys.clone();
    m.remove("single_transformer_blocks.7.attn.norm_k.weight");
    match weights::check_shapes("ckpt", m, build_13b) {
        Err(Error::Weights(WeightsError::Missing { name, .. })) => {
            assert_eq!(name, "single_transformer_blocks.7.attn.norm_k.weight")
        }
        other => panic!("expected Missing, got {other:?}"),
    }

    let mut m = keys.clone();
    m.insert("transformer_blocks.3.attn.to_extra.weight".into(), vec![3072, 3072]);
    match weights::check_shapes("ckpt", m, build_13b) {
        Err(Error::Weights(WeightsError::Unexpected { names, .. })) => {
            assert_eq!(names, vec!["transformer_blocks.3.attn.to_extra.weight".to_string()])
        }
        other => panic!("expected Unexpected, got {other:?}"),
    }

    let mut m = keys;
    m.insert("clean_x_embedder.proj_4x.weight".into(), vec![3072, 16, 2, 4, 4]);
    match weights::check_shapes("ckpt", m, build_13b) {
        Err(Error::Weights(WeightsError::ShapeMismatch { name, expected, actual, .. })) => {
            assert_eq!(name, "clean_x_embedder.proj_4x.weight");
            assert_eq!(expected, vec![3072, 16, 4, 8, 8]);
            assert_eq!(actual, vec![3072, 16, 2, 4, 4]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn loading_a_file_with_a_missing_tensor_names_file_and_tensor() {
    let cfg = tiny_config();
    let mut tensors =
        candle_core::safetensors::load(fixture("transformer_tiny_weights.safetensors"), &Device::Cpu).unwrap();
    assert!(tensors.remove("transformer_blocks.1.ff_context.net.2.bias").is_some());
    let dir = std::env::temp_dir().join(format!("framepack-transformer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken_transformer.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let result =
        weights::load(WeightFiles::open(&[&path]).unwrap(), DType::F32, &Device::Cpu, |vb| Transformer::new(vb, &cfg));
    std::fs::remove_dir_all(&dir).ok();
    let msg = result.map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("transformer_blocks.1.ff_context.net.2.bias"), "{msg}");
    assert!(msg.contains("broken_transformer.safetensors"), "{msg}");
}

#[test]
fn diffusers_config_json_parses() {
    let json = r#"{
        "_class_name": "HunyuanVideoTransformer3DModelPacked",
        "_diffusers_version": "0.33.0.dev0",
        "attention_head_dim": 128, "guidance_embeds": true, "has_clean_x_embedder": 1,
        "has_image_proj": 1, "image_proj_dim": 1152, "in_channels": 16, "mlp_ratio": 4.0,
        "num_attention_heads": 24, "num_layers": 20, "num_refiner_layers": 2,
        "num_single_layers": 40, "out_channels": 16, "patch_size": 2, "patch_size_t": 1,
        "pooled_projection_dim": 768, "qk_norm": "rms_norm", "rope_axes_dim": [16, 56, 56],
        "rope_theta": 256.0, "text_embed_dim": 4096
    }"#;
    let cfg: Config = serde_json::from_str(json).unwrap();
    assert_eq!(cfg, Config::framepack_13b());
    let defaults: Config = serde_json::from_str("{}").unwrap();
    assert!(!defaults.has_image_proj && !defaults.has_clean_x_embedder);
    assert_eq!(Config { has_image_proj: true, has_clean_x_embedder: true, ..defaults }, Config::framepack_13b());
}

#[test]
fn tiny_config_parses() {
    let cfg = tiny_config();
    assert_eq!(cfg.inner_dim(), 32);
    assert_eq!(cfg.rope_axes_dim, [4, 6, 6]);
    assert!(cfg.has_image_proj && cfg.has_clean_x_embedder && cfg.guidance_embeds);
    assert_eq!(cfg.mlp_dim(), 128);
}

// ---------------------------------------------------------------------------------------------
// Generality: random weights, shapes other than the fixtures'.

/// A model with seeded random weights of the sizes `cfg` asks for.
fn random_model(cfg: &Config, seed: u64) -> Transformer {
    let shapes = weights::requested_shapes(|vb| Transformer::new(vb, cfg)).unwrap();
    let mut rng = Lcg(seed);
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let fan_in = (n / shape[0]).max(1) as f32;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let r = rng.normal();
                    if shape.len() >= 2 {
                        r / fan_in.sqrt()
                    } else if name.ends_with("weight") {
                        1.0 + 0.1 * r
                    } else {
                        0.1 * r
                    }
                })
                .collect();
            (name, Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    Transformer::new(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), cfg).unwrap()
}

struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| self.normal()).collect::<Vec<f32>>(), shape, &Device::Cpu).unwrap()
    }
}

fn odd_config() -> Config {
    Config {
        in_channels: 4,
        out_channels: 6,
        num_attention_heads: 3,
        attention_head_dim: 12,
        num_layers: 1,
        num_single_layers: 2,
        num_refiner_layers: 1,
        mlp_ratio: 2.5,
        rope_axes_dim: [2, 4, 6],
        text_embed_dim: 10,
        pooled_projection_dim: 6,
        image_proj_dim: 7,
        has_image_proj: true,
        has_clean_x_embedder: true,
        ..Config::default()
    }
}

/// Owned inputs for `odd_config`-style models.
struct Owned {
    hidden: Tensor,
    timestep: Tensor,
    text: Tensor,
    mask: Tensor,
    pooled: Tensor,
    image: Tensor,
    guidance: Tensor,
    idx: Tensor,
    clean: Tensor,
    idx_clean: Tensor,
    h2: Tensor,
    idx_2x: Tensor,
    h4: Tensor,
    idx_4x: Tensor,
}

impl Owned {
    fn new(
        cfg: &Config,
        seed: u64,
        b: usize,
        (t, h, w): (usize, usize, usize),
        lens: &[usize],
        text_len: usize,
    ) -> Self {
        let mut r = Lcg(seed);
        let c = cfg.in_channels;
        let mask: Vec<f32> = lens.iter().flat_map(|&n| (0..text_len).map(move |i| (i < n) as u8 as f32)).collect();
        let (n1, n2, n4) = (2, 3, 5);
        let idx = |start: i64, n: usize| Tensor::arange(start, start + n as i64, &Device::Cpu).unwrap();
        Self {
            hidden: r.tensor(&[b, c, t, h, w]),
            timestep: Tensor::from_vec((0..b).map(|i| 900.0 - 300.0 * i as f32).collect::<Vec<_>>(), b, &Device::Cpu)
                .unwrap(),
            text: r.tensor(&[b, text_len, cfg.text_embed_dim]),
            mask: Tensor::from_vec(mask, (b, text_len), &Device::Cpu).unwrap(),
            pooled: r.tensor(&[b, cfg.pooled_projection_dim]),
            image: r.tensor(&[b, 5, cfg.image_proj_dim]),
            guidance: Tensor::from_vec(
                (0..b).map(|i| 10000.0 - 2000.0 * i as f32).collect::<Vec<_>>(),
                b,
                &Device::Cpu,
            )
            .unwrap(),
            idx: idx(20, t),
            clean: r.tensor(&[b, c, n1, h, w]),
            idx_clean: Tensor::new(&[0i64, 19], &Device::Cpu).unwrap(),
            h2: r.tensor(&[b, c, n2, h, w]),
            idx_2x: idx(16, n2),
            h4: r.tensor(&[b, c, n4, h, w]),
            idx_4x: idx(1, n4),
        }
    }

    fn inputs(&self) -> TransformerInputs<'_> {
        TransformerInputs {
            hidden_states: &self.hidden,
            timestep: &self.timestep,
            encoder_hidden_states: &self.text,
            encoder_attention_mask: &self.mask,
            pooled_projections: &self.pooled,
            image_embeds: Some(&self.image),
            guidance: Some(&self.guidance),
            indices_latents: &self.idx,
            latents_clean: Some(&self.clean),
            indices_latents_clean: Some(&self.idx_clean),
            latents_history_2x: Some(&self.h2),
            indices_latents_history_2x: Some(&self.idx_2x),
            latents_history_4x: Some(&self.h4),
            indices_latents_history_4x: Some(&self.idx_4x),
        }
    }

    /// Sample `i` alone, its text cropped to `text_len` tokens.
    fn sample(&self, i: usize, text_len: usize) -> Self {
        let s = |t: &Tensor| t.narrow(0, i, 1).unwrap();
        Self {
            hidden: s(&self.hidden),
            timestep: s(&self.timestep),
            text: s(&self.text).narrow(1, 0, text_len).unwrap(),
            mask: s(&self.mask).narrow(1, 0, text_len).unwrap(),
            pooled: s(&self.pooled),
            image: s(&self.image),
            guidance: s(&self.guidance),
            idx: self.idx.clone(),
            clean: s(&self.clean),
            idx_clean: self.idx_clean.clone(),
            h2: s(&self.h2),
            idx_2x: self.idx_2x.clone(),
            h4: s(&self.h4),
            idx_4x: self.idx_4x.clone(),
        }
    }
}

#[test]
fn non_square_other_heads_runs_with_right_shape() {
    let cfg = odd_config();
    let model = random_model(&cfg, 1);
    let x = Owned::new(&cfg, 2, 1, (3, 6, 10), &[4], 7);
    let mut inter = HashMap::new();
    let out = model
        .forward_traced(&x.inputs(), &mut |n, t| {
            inter.insert(n.to_string(), t.dims().to_vec());
        })
        .unwrap();
    assert_eq!(out.dims(), &[1, 6, 3, 6, 10]);
    // 4x: 5 frames → 2, 6×10 (padded 8×16) → 1×2; 2x: 3 → 2, 6×10 (padded 8×12) → 2×3;
    // 1x: 2×3×5; noisy: 3×3×5.
    let n = (2 * 2) + 2 * 2 * 3 + 2 * 3 * 5 + 3 * 3 * 5;
    assert_eq!(inter["packed_tokens"], vec![1, n, 36]);
    assert_eq!(inter["rope_cos"], vec![n, 6]);
    assert_eq!(inter["transformer_blocks.0.encoder"], vec![1, 5 + 4, 36]);
    let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(v.iter().map(|x| x.abs()).sum::<f32>() > 0.0);
}

#[test]
fn patch_size_one_and_no_guidance_or_image_projection() {
    let cfg = Config { patch_size: 1, guidance_embeds: false, has_image_proj: false, ..odd_config() };
    let model = random_model(&cfg, 3);
    let x = Owned::new(&cfg, 4, 1, (2, 3, 5), &[7], 7);
    let inputs = TransformerInputs { image_embeds: None, guidance: None, ..x.inputs() };
    let out = model.forward(&inputs).unwrap();
    assert_eq!(out.dims(), &[1, 6, 2, 3, 5]);
    for (label, bad) in [
        ("guidance", TransformerInputs { image_embeds: None, ..x.inputs() }),
        ("image", TransformerInputs { guidance: None, ..x.inputs() }),
    ] {
        assert!(matches!(model.forward(&bad), Err(Error::Invalid { .. })), "{label} given to a model without it");
    }
}

#[test]
fn history_groups_are_optional() {
    let cfg = odd_config();
    let model = random_model(&cfg, 5);
    let x = Owned::new(&cfg, 6, 1, (2, 4, 6), &[5], 5);
    let full = model.pack(&x.inputs()).unwrap();
    let no_4x = TransformerInputs { latents_history_4x: None, indices_latents_history_4x: None, ..x.inputs() };
    let only_noisy = TransformerInputs {
        latents_clean: None,
        indices_latents_clean: None,
        latents_history_2x: None,
        indices_latents_history_2x: None,
        ..no_4x
    };
    let a = model.pack(&no_4x).unwrap();
    let b = model.pack(&only_noisy).unwrap();
    assert_eq!(b.tokens.dim(1).unwrap(), b.noisy_tokens);
    // Dropping a group removes exactly its tokens from the front of the sequence.
    let n4 = full.tokens.dim(1).unwrap() - a.tokens.dim(1).unwrap();
    assert_eq!(metrics(&full.tokens.narrow(1, n4, a.tokens.dim(1).unwrap()).unwrap(), &a.tokens).1, 0.0);
    assert_eq!(metrics(&full.cos.narrow(0, n4, a.cos.dim(0).unwrap()).unwrap(), &a.cos).1, 0.0);
    for inputs in [no_4x, only_noisy] {
        assert_eq!(model.forward(&inputs).unwrap().dims(), &[1, 6, 2, 4, 6]);
    }
    // Latents without indices (or the reverse) are refused.
    let half = TransformerInputs { indices_latents_clean: None, ..x.inputs() };
    assert!(matches!(model.forward(&half), Err(Error::Invalid { .. })));
}

#[test]
fn batch_of_identical_samples_equals_single_sample() {
    let cfg = odd_config();
    let model = random_model(&cfg, 7);
    let one = Owned::new(&cfg, 8, 1, (2, 4, 6), &[5], 6);
    let cat2 = |t: &Tensor| Tensor::cat(&[t, t], 0).unwrap();
    let two = Owned {
        hidden: cat2(&one.hidden),
        timestep: cat2(&one.timestep),
        text: cat2(&one.text),
        mask: cat2(&one.mask),
        pooled: cat2(&one.pooled),
        image: cat2(&one.image),
        guidance: cat2(&one.guidance),
        clean: cat2(&one.clean),
        h2: cat2(&one.h2),
        h4: cat2(&one.h4),
        ..one.sample(0, 6)
    };
    let single = model.forward(&one.inputs()).unwrap();
    let batch = model.forward(&two.inputs()).unwrap();
    for i in 0..2 {
        check(&format!("identical batch, sample {i}"), &batch.narrow(0, i, 1).unwrap(), &single, 1e-5, 1e-5);
    }
}

#[test]
fn batch_with_different_text_lengths_equals_separate_runs() {
    let cfg = odd_config();
    let model = random_model(&cfg, 9);
    let lens = [7, 3];
    let batch = Owned::new(&cfg, 10, 2, (2, 4, 6), &lens, 9);
    let out = model.forward(&batch.inputs()).unwrap();
    for (i, &n) in lens.iter().enumerate() {
        // Alone, both with the padding kept (masked) and cropped to the valid tokens.
        for text_len in [9, n] {
            let alone = model.forward(&batch.sample(i, text_len).inputs()).unwrap();
            check(
                &format!("batch of 2, sample {i} vs alone (text {text_len})"),
                &out.narrow(0, i, 1).unwrap(),
                &alone,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn per_sample_indices_equal_separate_runs() {
    let cfg = odd_config();
    let model = random_model(&cfg, 11);
    let batch = Owned::new(&cfg, 12, 2, (2, 4, 4), &[4, 4], 4);
    let rows = Tensor::new(&[[20i64, 21], [5, 9]], &Device::Cpu).unwrap();
    let out = model.forward(&TransformerInputs { indices_latents: &rows, ..batch.inputs() }).unwrap();
    for i in 0..2 {
        let s = batch.sample(i, 4);
        let idx = rows.i(i).unwrap();
        let alone = model.forward(&TransformerInputs { indices_latents: &idx, ..s.inputs() }).unwrap();
        check(&format!("per-sample indices, sample {i}"), &out.narrow(0, i, 1).unwrap(), &alone, 1e-5, 1e-5);
    }
    let a = model.forward(&batch.inputs()).unwrap();
    assert!(metrics(&a, &out).1 > 1e-3, "frame indices must change the output");
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = odd_config();
    let model = random_model(&cfg, 13);
    let x = Owned::new(&cfg, 14, 1, (2, 4, 6), &[3], 5);
    let odd = Tensor::zeros((1, 4, 2, 5, 6), DType::F32, &Device::Cpu).unwrap();
    let channels = Tensor::zeros((1, 3, 2, 4, 6), DType::F32, &Device::Cpu).unwrap();
    let clean_hw = Tensor::zeros((1, 4, 2, 4, 8), DType::F32, &Device::Cpu).unwrap();
    let three = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
    let holes = Tensor::new(&[[1f32, 0., 1., 0., 0.]], &Device::Cpu).unwrap();
    let none = Tensor::zeros((1, 5), DType::F32, &Device::Cpu).unwrap();
    let ts = Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap();
    let base = x.inputs();
    let cases = [
        ("odd height", TransformerInputs { hidden_states: &odd, ..base }),
        ("channels", TransformerInputs { hidden_states: &channels, ..base }),
        ("clean size", TransformerInputs { latents_clean: Some(&clean_hw), ..base }),
        ("index count", TransformerInputs { indices_latents: &three, ..base }),
        ("mask holes", TransformerInputs { encoder_attention_mask: &holes, ..base }),
        ("empty mask", TransformerInputs { encoder_attention_mask: &none, ..base }),
        ("timestep count", TransformerInputs { timestep: &ts, ..base }),
        ("no guidance", TransformerInputs { guidance: None, ..base }),
        ("no image", TransformerInputs { image_embeds: None, ..base }),
        ("pooled shape", TransformerInputs { pooled_projections: &x.image, ..base }),
        ("text width", TransformerInputs { encoder_hidden_states: &x.image, ..base }),
        ("image width", TransformerInputs { image_embeds: Some(&x.text), ..base }),
        ("index rows", TransformerInputs { indices_latents: &holes, ..base }),
    ];
    for (label, inputs) in cases {
        match model.forward(&inputs) {
            Err(Error::Invalid { .. }) => {}
            other => panic!("{label}: expected Error::Invalid, got {:?}", other.map(|t| t.dims().to_vec())),
        }
    }
    assert!(model.forward(&base).is_ok());
}

#[test]
fn invalid_configs_are_refused() {
    let bad = [
        Config { rope_axes_dim: [16, 56, 54], ..Config::framepack_13b() },
        Config { patch_size_t: 2, ..Config::framepack_13b() },
        Config { qk_norm: "layer_norm".into(), ..Config::framepack_13b() },
        Config { image_condition_type: Some("token_replace".into()), ..Config::framepack_13b() },
        Config { rope_theta: -1.0, ..Config::framepack_13b() },
        Config { mlp_ratio: 0.0, ..Config::framepack_13b() },
    ];
    for cfg in bad {
        assert!(matches!(cfg.validate(), Err(Error::Invalid { .. })), "{cfg:?}");
        assert!(weights::requested_shapes(|vb| Transformer::new(vb, &cfg)).is_err());
    }
    Config::framepack_13b().validate().unwrap();
}
