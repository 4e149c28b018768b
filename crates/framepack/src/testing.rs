//! Tiny random models for tests, examples and demos (feature `testing`).
//!
//! Every model is built by walking its constructor with
//! [`weights::requested_shapes`](crate::weights::requested_shapes) and filling each tensor from
//! a hash of `(seed, tensor index, element index)`: deterministic, platform-independent, and
//! scaled like a fan-in initialisation so activations stay finite. Nothing here is meant to
//! produce a meaningful video — only the full pipeline at toy sizes, in seconds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::models::transformer::{self, Transformer};
use crate::models::vae::{self, AutoencoderKLHunyuanVideo};
use crate::weights;

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
    Error::invalid("path", format!("{}: {e}", path.display()))
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

/// Writes a tiny random bundle in the released layout into `root`: the transformer at the root
/// (two shards + index + config), `vae/`. Returns the paths.
pub fn write_tiny_bundle(root: &Path, seed: u64) -> Result<crate::bundle::BundlePaths> {
    let tcfg = tiny_transformer_config();
    let tw = random_weights(seed, 1.0, |vb| Transformer::new(vb, &tcfg))?;
    save_sharded(&tw, root, "diffusion_pytorch_model", 2)?;
    write_text(&root.join("config.json"), &serde_json::to_string_pretty(&tcfg).expect("json"))?;
    let vcfg = tiny_vae_config();
    let vw = random_weights(seed + 1, 1.0, |vb| AutoencoderKLHunyuanVideo::new(vb, &vcfg))?;
    save_safetensors(&vw, &root.join("vae/diffusion_pytorch_model.safetensors"))?;
    write_text(&root.join("vae/config.json"), &vae_config_json(&vcfg))?;
    Ok(crate::bundle::BundlePaths::from_dir(root))
}
