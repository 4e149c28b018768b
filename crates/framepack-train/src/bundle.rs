//! The nano model's bundle: the released folder layout (`transformer/`, `vae/`, the text and
//! image encoders with their tokenizers and preprocessor), holding the trained transformer and
//! VAE. The encoders are tiny, random and frozen (see [`super::dit`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::train::io;
use framepack::Result;
use framepack::models::{AutoencoderConfig, taehv, transformer, vae};

/// Files of the released layout that are weights (converted by [`export_f16`]); everything else
/// is copied as is.
fn is_weights(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| io(path, e))?;
    std::fs::write(path, text).map_err(|e| io(path, e))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|e| io(from, e))
}

/// Writes `vae/` of the bundle at `root`: the weights file `weights` and `cfg` as `config.json`.
pub fn write_vae(root: &Path, weights: &Path, cfg: &vae::Config) -> Result<()> {
    copy(weights, &root.join("vae/diffusion_pytorch_model.safetensors"))?;
    write_json(&root.join("vae/config.json"), cfg)
}

/// Writes `vae/` of the bundle at `root` as a TAEHV: the weights file `weights` (upstream TAEHV
/// names) and `cfg` as `config.json` with `"_class_name": "TAEHV"`.
pub fn write_taehv_vae(root: &Path, weights: &Path, cfg: &taehv::Config) -> Result<()> {
    copy(weights, &root.join("vae/diffusion_pytorch_model.safetensors"))?;
    let path = root.join("vae/config.json");
    std::fs::write(&path, AutoencoderConfig::Taehv(cfg.clone()).to_json()).map_err(|e| io(&path, e))
}

/// Replaces the decoder of the bundle's TAEHV VAE with the one in `weights`, refusing a file
/// whose encoder differs from the bundle's (the transformer was trained on that encoder's
/// latents).
pub fn refresh_taehv_decoder(root: &Path, weights: &Path) -> Result<()> {
    let target = root.join("vae/diffusion_pytorch_model.safetensors");
    let old = candle_core::safetensors::load(&target, &Device::Cpu).map_err(|e| io(&target, e))?;
    let new = candle_core::safetensors::load(weights, &Device::Cpu).map_err(|e| io(weights, e))?;
    for (name, t) in old.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        let same = match new.get(name) {
            Some(n) if n.dims() == t.dims() => (n - t)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0,
            _ => false,
        };
        if !same {
            return Err(crate::invalid(
                "taehv checkpoint",
                format!(
                    "{}: tensor {name} differs from the bundle's encoder in {} (the transformer was trained \
                     on that encoder's latents; train the decoder only)",
                    weights.display(),
                    target.display()
                ),
            ));
        }
    }
    copy(weights, &target)
}

/// Writes `transformer/` of the bundle at `root`: the weights file `weights` and `cfg`.
pub fn write_transformer(root: &Path, weights: &Path, cfg: &transformer::Config) -> Result<()> {
    copy(weights, &root.join("transformer/diffusion_pytorch_model.safetensors"))?;
    write_json(&root.join("transformer/config.json"), cfg)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Copies the bundle `src` to `dst` with every weight tensor stored as f16; returns the total
/// size of `dst` in bytes.
pub fn export_f16(src: &Path, dst: &Path) -> Result<u64> {
    let mut all = Vec::new();
    files(src, &mut all)?;
    all.sort();
    let mut total = 0;
    for path in all {
        let rel = path.strip_prefix(src).map_err(|e| io(&path, e))?;
        let to = dst.join(rel);
        if is_weights(&path) {
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| io(&path, e))?;
            let half = tensors
                .into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(DType::F16)?)))
                .collect::<Result<std::collections::HashMap<String, Tensor>>>()?;
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            }
            candle_core::safetensors::save(&half, &to).map_err(|e| io(&to, e))?;
        } else {
            copy(&path, &to)?;
        }
        total += std::fs::metadata(&to).map_err(|e| io(&to, e))?.len();
    }
    Ok(total)
}
