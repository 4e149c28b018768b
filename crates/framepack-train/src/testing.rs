//! Tiny random models for tests, examples and demos (feature `testing`).
//!
//! Every model is built by walking its constructor with
//! [`weights::requested_shapes`](framepack::weights::requested_shapes) and filling each tensor from
//! a hash of `(seed, tensor index, element index)`: deterministic, platform-independent, and
//! scaled like a fan-in initialisation so activations stay finite. Nothing here is meant to
//! produce a meaningful video — only the full pipeline at toy sizes, in seconds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use framepack::models::taehv::{self, Taehv};
use framepack::models::transformer::{self, Transformer};
use framepack::models::vae::{self, AutoencoderKLHunyuanVideo};
use framepack::weights;
use framepack::{Error, Result};

/// A transformer of width 16 (2 heads × 8), one dual and one single block, every history
/// embedder and the image projection, 16 latent channels.
pub fn tiny_transformer_config() -> transformer::Config {
    transformer::Config {
        num_attention_heads: 2,
        attention_head_dim: 8,
        num_layers: 1,
        num_single_layers: 1,
        num_refiner_layers: 1,
        mlp_ratio: 2.0,
        text_embed_dim: 16,
        pooled_projection_dim: 8,
        rope_axes_dim: [2, 2, 4],
        has_image_proj: true,
        image_proj_dim: 8,
        has_clean_x_embedder: true,
        ..transformer::Config::default()
    }
}

/// A VAE with 16 latent channels, ×8 spatial and ×4 temporal compression, channels 8/8/8/8,
/// one resnet per block.
pub fn tiny_vae_config() -> vae::Config {
    vae::Config {
        block_out_channels: vec![8, 8, 8, 8],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..vae::Config::hunyuan_video()
    }
}

fn unit(seed: u64, tensor: u64, k: u64) -> f64 {
    let mut z = seed ^ tensor.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// Deterministic random tensors for a name → shape list: matrices and kernels uniform in
/// `±√(3/fan_in)·gain`, 1-d weights `1 ± 0.1`, biases `± 0.1`.
pub fn random_tensors(shapes: &BTreeMap<String, Vec<usize>>, seed: u64, gain: f64) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let fan_in = (n / shape.first().copied().unwrap_or(1).max(1)).max(1) as f64;
        let vals: Vec<f32> = (0..n)
            .map(|k| {
                let u = unit(seed, i as u64, k as u64);
                (if shape.len() > 1 {
                    u * (3.0 / fan_in).sqrt() * gain
                } else if name.ends_with("weight") {
                    1.0 + 0.1 * u
                } else {
                    0.1 * u
                }) as f32
            })
            .collect();
        out.insert(name.clone(), Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu)?);
    }
    Ok(out)
}

/// Random weights for any model constructor.
pub fn random_weights<M>(
    seed: u64,
    gain: f64,
    build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<M>,
) -> Result<HashMap<String, Tensor>> {
    random_tensors(&weights::requested_shapes(build)?, seed, gain)
}

/// A tiny random transformer (in memory).
pub fn tiny_transformer(seed: u64, dtype: DType, device: &Device) -> Result<Transformer> {
    let cfg = tiny_transformer_config();
    let ws = random_weights(seed, 1.0, |vb| Transformer::new(vb, &cfg))?;
    Ok(Transformer::new(VarBuilder::from_tensors(ws, dtype, device), &cfg)?)
}

/// A tiny random VAE (in memory).
pub fn tiny_vae(seed: u64, dtype: DType, device: &Device) -> Result<AutoencoderKLHunyuanVideo> {
    let cfg = tiny_vae_config();
    let ws = random_weights(seed, 1.0, |vb| AutoencoderKLHunyuanVideo::new(vb, &cfg))?;
    Ok(AutoencoderKLHunyuanVideo::new(VarBuilder::from_tensors(ws, dtype, device), &cfg)?)
}

/// A TAEHV with 16 latent channels and the released flags, encoder width 8, decoder 16/8/8/8.
pub fn tiny_taehv_config() -> taehv::Config {
    taehv::Config { encoder_width: 8, decoder_widths: [16, 8, 8, 8], ..taehv::Config::hunyuan_video() }
}

/// A tiny random TAEHV (in memory).
pub fn tiny_taehv(seed: u64, dtype: DType, device: &Device) -> Result<Taehv> {
    let cfg = tiny_taehv_config();
    let ws = random_weights(seed, 1.0, |vb| Taehv::new(vb, &cfg))?;
    Ok(Taehv::new(VarBuilder::from_tensors(ws, dtype, device), &cfg)?)
}

/// A deterministic test image `(1, 3, H, W)` in `[-1, 1]` (smooth gradients plus a pattern).
pub fn test_image(width: usize, height: usize, seed: u64) -> Result<Tensor> {
    let mut v = Vec::with_capacity(3 * width * height);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let g = (x as f64 / width as f64 - 0.5) * (c as f64 - 1.0) + (y as f64 / height as f64 - 0.5);
                v.push((g + 0.3 * unit(seed, c as u64, (y * width + x) as u64)).clamp(-1.0, 1.0) as f32);
            }
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, height, width), &Device::Cpu)?)
}

/// Saves tensors as a safetensors file (creating the parent directory).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    candle_core::safetensors::save(tensors, path)?;
    Ok(())
}

/// Writes a text file (creating the parent directory).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    crate::invalid("path", format!("{}: {e}", path.display()))
}

fn vae_config_json(cfg: &vae::Config) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "_class_name": "AutoencoderKLHunyuanVideo",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "latent_channels": cfg.latent_channels,
        "down_block_types": cfg.down_block_types,
        "up_block_types": cfg.up_block_types,
        "block_out_channels": cfg.block_out_channels,
        "layers_per_block": cfg.layers_per_block,
        "act_fn": cfg.act_fn,
        "norm_num_groups": cfg.norm_num_groups,
        "scaling_factor": cfg.scaling_factor,
        "spatial_compression_ratio": cfg.spatial_compression_ratio,
        "temporal_compression_ratio": cfg.temporal_compression_ratio,
        "mid_block_add_attention": cfg.mid_block_add_attention,
    }))
    .expect("json")
}

/// Writes `tensors` as `shards` safetensors files `<stem>-0000k-of-0000n.safetensors` plus
/// `<stem>.safetensors.index.json`, like the released checkpoints.
pub fn save_sharded(tensors: &HashMap<String, Tensor>, dir: &Path, stem: &str, shards: usize) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let shards = shards.clamp(1, names.len().max(1));
    let per = names.len().div_ceil(shards).max(1);
    let mut weight_map = serde_json::Map::new();
    for (k, chunk) in names.chunks(per).enumerate() {
        let file = format!("{stem}-{:05}-of-{:05}.safetensors", k + 1, shards);
        let part: HashMap<String, Tensor> = chunk.iter().map(|n| ((*n).clone(), tensors[*n].clone())).collect();
        save_safetensors(&part, &dir.join(&file))?;
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    write_text(
        &dir.join(format!("{stem}.safetensors.index.json")),
        &serde_json::to_string_pretty(&index).expect("json"),
    )
}

/// Words of the tiny tokenizers (anything else is `<unk>`); the last ones are the nano clips'
/// prompt words ([`crate::clips::Action::phrase`]).
pub const TINY_WORDS: [&str; 35] = [
    "a", "cat", "dog", "runs", "jumps", "sits", "on", "the", "grass", "in", "garden", "video", "system", "user",
    "describe", "objects", "camera", "moves", "slowly", "man", "dances", "light", "red", "blue", "green", "square",
    "walks", "left", "right", "ball", "bounces", "pans", "scene", "is", "still",
];

/// A WordLevel `tokenizer.json` over [`TINY_WORDS`] (whitespace/punctuation split): ids 0 `<unk>`,
/// 1 `bos`, then the special tokens, then the words; `eos` (if any) is appended to every encoding
/// and gets the id `eos_id`.
pub fn tiny_tokenizer_json(bos: &str, specials: &[&str], eos: Option<(&str, u32)>, lowercase: bool) -> String {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    let special = |content: &str, id: u32| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    vocab.insert("<unk>".into(), 0.into());
    vocab.insert(bos.into(), 1.into());
    added.push(special(bos, 1));
    let mut next = 2u32;
    for sp in specials {
        vocab.insert((*sp).into(), next.into());
        added.push(special(sp, next));
        next += 1;
    }
    for w in TINY_WORDS {
        vocab.insert(w.into(), next.into());
        next += 1;
    }
    let mut single = vec![
        serde_json::json!({"SpecialToken": {"id": bos, "type_id": 0}}),
        serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}),
    ];
    let mut special_tokens = serde_json::Map::new();
    special_tokens.insert(bos.into(), serde_json::json!({"id": bos, "ids": [1], "tokens": [bos]}));
    if let Some((e, id)) = eos {
        vocab.insert(e.into(), id.into());
        added.push(special(e, id));
        single.push(serde_json::json!({"SpecialToken": {"id": e, "type_id": 0}}));
        special_tokens.insert(e.into(), serde_json::json!({"id": e, "ids": [id], "tokens": [e]}));
    }
    let mut pair = single.clone();
    pair.push(serde_json::json!({"Sequence": {"id": "B", "type_id": 1}}));
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": if lowercase { serde_json::json!({"type": "Lowercase"}) } else { serde_json::Value::Null },
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// Tiny Llama `config.json`: width 16 (the tiny transformer's text width), 3 layers (FramePack
/// uses the output of all but the last 2), 2 query heads and 1 key/value head of 8.
pub fn tiny_llama_config_json() -> String {
    serde_json::json!({
        "architectures": ["LlamaModel"], "model_type": "llama", "vocab_size": 64, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
        "attention_bias": false, "mlp_bias": false
    })
    .to_string()
}

/// Tiny CLIP text `config.json`: width 8 (the tiny transformer's pooled width), one layer.
pub fn tiny_clip_config_json() -> String {
    serde_json::json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 64, "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 2
    })
    .to_string()
}

/// Tiny SigLIP vision `config.json`: width 8 (the tiny transformer's image width), one layer,
/// 28² input in 14² patches (4 tokens), no pooling head.
pub fn tiny_siglip_config_json() -> String {
    serde_json::json!({
        "architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_channels": 3,
        "image_size": 28, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
        "vision_use_head": false
    })
    .to_string()
}

fn tiny_preprocessor_json() -> String {
    serde_json::json!({
        "image_processor_type": "SiglipImageProcessor", "do_resize": true, "size": {"height": 28, "width": 28},
        "resample": 3, "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
    })
    .to_string()
}

/// Writes a tiny random bundle in the released layout into `root`: the transformer at the root
/// (two shards + index + config), `vae/`, `vae_tiny/` (a TAEHV), `text_encoder/` (two shards +
/// index), `tokenizer/`, `text_encoder_2/`, `tokenizer_2/`, `image_encoder/` and
/// `feature_extractor/`. Every model is
/// random ([`random_weights`]); the widths fit together so the whole pipeline runs.
pub fn write_tiny_bundle(root: &Path, seed: u64) -> Result<framepack::bundle::BundlePaths> {
    let tcfg = tiny_transformer_config();
    let tw = random_weights(seed, 1.0, |vb| Transformer::new(vb, &tcfg))?;
    save_sharded(&tw, root, "diffusion_pytorch_model", 2)?;
    write_text(&root.join("config.json"), &serde_json::to_string_pretty(&tcfg).expect("json"))?;

    let vcfg = tiny_vae_config();
    let vw = random_weights(seed + 1, 1.0, |vb| AutoencoderKLHunyuanVideo::new(vb, &vcfg))?;
    save_safetensors(&vw, &root.join("vae/diffusion_pytorch_model.safetensors"))?;
    write_text(&root.join("vae/config.json"), &vae_config_json(&vcfg))?;

    let tcfg = tiny_taehv_config();
    let tw = random_weights(seed + 3, 1.0, |vb| Taehv::new(vb, &tcfg))?;
    save_safetensors(&tw, &root.join("vae_tiny/taehv.safetensors"))?;
    write_text(&root.join("vae_tiny/config.json"), &serde_json::to_string_pretty(&tcfg).expect("json"))?;

    write_tiny_encoders(root, seed + 2)?;
    Ok(framepack::bundle::BundlePaths::from_dir(root))
}

/// [`write_tiny_bundle`] with a TAEHV as the VAE (the nano model's layout): `vae/` holds
/// [`tiny_taehv_config`] with `scaling_factor` 2 and `_class_name` `"TAEHV"`, and there is no
/// `vae_tiny/`.
pub fn write_tiny_taehv_bundle(root: &Path, seed: u64) -> Result<framepack::bundle::BundlePaths> {
    use framepack::models::AutoencoderConfig;
    let paths = write_tiny_bundle(root, seed)?;
    std::fs::remove_dir_all(root.join("vae")).map_err(|e| io_error(&root.join("vae"), e))?;
    std::fs::remove_dir_all(root.join("vae_tiny")).map_err(|e| io_error(&root.join("vae_tiny"), e))?;
    let cfg = taehv::Config { scaling_factor: 2.0, ..tiny_taehv_config() };
    let w = random_weights(seed + 3, 1.0, |vb| Taehv::new(vb, &cfg))?;
    save_safetensors(&w, &root.join("vae/diffusion_pytorch_model.safetensors"))?;
    write_text(&root.join("vae/config.json"), &AutoencoderConfig::Taehv(cfg).to_json())?;
    Ok(paths)
}

/// Writes the tiny random text and image encoders of a bundle into `root`: `text_encoder/`
/// (two shards + index), `tokenizer/`, `text_encoder_2/`, `tokenizer_2/`, `image_encoder/` and
/// `feature_extractor/`, with widths 16 (Llama), 8 (CLIP pooled) and 8 (SigLIP).
pub fn write_tiny_encoders(root: &Path, seed: u64) -> Result<()> {
    use framepack::models::text::clip::{ClipTextConfig, ClipTextModel};
    use framepack::models::text::llama::{Llama, LlamaConfig};
    use framepack::models::vision::{SiglipVisionConfig, SiglipVisionModel};

    let llama_json = tiny_llama_config_json();
    let llama_cfg = LlamaConfig::from_json(&llama_json)?;
    let lw = random_weights(seed, 1.0, |vb| Llama::new(vb, &llama_cfg))?;
    save_sharded(&lw, &root.join("text_encoder"), "model", 2)?;
    write_text(&root.join("text_encoder/config.json"), &llama_json)?;
    let specials = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
    write_text(&root.join("tokenizer/tokenizer.json"), &tiny_tokenizer_json("<s>", &specials, None, true))?;

    let clip_json = tiny_clip_config_json();
    let clip_cfg = ClipTextConfig::from_json(&clip_json)?;
    let cw = random_weights(seed + 1, 1.0, |vb| ClipTextModel::new(vb, &clip_cfg))?;
    save_safetensors(&cw, &root.join("text_encoder_2/model.safetensors"))?;
    write_text(&root.join("text_encoder_2/config.json"), &clip_json)?;
    let clip_tok = tiny_tokenizer_json("<|startoftext|>", &[], Some(("<|endoftext|>", 63)), true);
    write_text(&root.join("tokenizer_2/tokenizer.json"), &clip_tok)?;

    let siglip_json = tiny_siglip_config_json();
    let siglip_cfg = SiglipVisionConfig::from_json(&siglip_json)?;
    let sw = random_weights(seed + 2, 1.0, |vb| SiglipVisionModel::new(vb, &siglip_cfg))?;
    save_safetensors(&sw, &root.join("image_encoder/model.safetensors"))?;
    write_text(&root.join("image_encoder/config.json"), &siglip_json)?;
    write_text(&root.join("feature_extractor/preprocessor_config.json"), &tiny_preprocessor_json())?;
    Ok(())
}
