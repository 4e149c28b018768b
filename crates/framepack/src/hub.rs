//! Fetching the released repositories from the Hugging Face Hub (feature `hf-hub`).
//!
//! [`fetch`] downloads (or finds in the local Hugging Face cache, shared with Python's
//! `huggingface_hub`) every file a bundle needs and returns [`BundlePaths`] pointing into the
//! cache snapshots:
//!
//! - the transformer from [`ORIGINAL`] or [`F1`] (config, index, shards);
//! - `vae/`, `text_encoder/`, `tokenizer/`, `text_encoder_2/`, `tokenizer_2/` from [`HUNYUAN_VIDEO`];
//! - `image_encoder/`, `feature_extractor/` from [`FLUX_REDUX`].
//!
//! The client follows the Hub's environment variables: `HF_HOME` (the cache folder),
//! `HF_ENDPOINT` (a mirror) and `HF_TOKEN` (else the token `huggingface-cli login` saved under
//! `HF_HOME`), which gated repositories need. Failed downloads are retried.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiRepo};

use crate::bundle::BundlePaths;
use crate::error::{Error, Result};

/// The original (inverted anti-drifting) FramePack transformer.
pub const ORIGINAL: &str = "lllyasviel/FramePackI2V_HY";
/// The F1 (forward) FramePack transformer.
pub const F1: &str = "lllyasviel/FramePack_F1_I2V_HY_20250503";
/// VAE and text encoders (diffusers layout).
pub const HUNYUAN_VIDEO: &str = "hunyuanvideo-community/HunyuanVideo";
/// SigLIP image encoder and its preprocessor config.
pub const FLUX_REDUX: &str = "lllyasviel/flux_redux_bfl";

fn hub_error(repo: &str, file: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("hub download", format!("{repo}/{file}: {e}"))
}

fn get(api: &Api, repo: &str, file: &str) -> Result<PathBuf> {
    api.model(repo.to_string()).get(file).map_err(|e| hub_error(repo, file, e))
}

/// Downloads a model folder: `config.json` and the weights (`<stem>.safetensors.index.json` and
/// its shards, or `<stem>.safetensors`). Returns the folder in the cache snapshot.
fn get_model(repo: &ApiRepo, name: &str, folder: &str, stem: &str) -> Result<PathBuf> {
    let file = |f: &str| if folder.is_empty() { f.to_string() } else { format!("{folder}/{f}") };
    let config = repo.get(&file("config.json")).map_err(|e| hub_error(name, &file("config.json"), e))?;
    let index_name = file(&format!("{stem}.safetensors.index.json"));
    match repo.get(&index_name) {
        Ok(index) => {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: std::collections::BTreeMap<String, String>,
            }
            let text = std::fs::read_to_string(&index).map_err(|e| hub_error(name, &index_name, e))?;
            let idx: Index = serde_json::from_str(&text).map_err(|e| hub_error(name, &index_name, e))?;
            let shards: std::collections::BTreeSet<&String> = idx.weight_map.values().collect();
            for s in shards {
                repo.get(&file(s)).map_err(|e| hub_error(name, &file(s), e))?;
            }
        }
        Err(_) => {
            let single = file(&format!("{stem}.safetensors"));
            repo.get(&single).map_err(|e| hub_error(name, &single, e))?;
        }
    }
    Ok(parent(&config))
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// How downloads behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// Show a progress bar per file.
    pub progress: bool,
    /// Attempts after a failed download of a file.
    pub retries: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self { progress: true, retries: 3 }
    }
}

/// A client configured from the environment (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`).
fn api(options: HubOptions) -> Result<Api> {
    let mut builder = ApiBuilder::from_env().with_progress(options.progress).with_retries(options.retries);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    builder.build().map_err(|e| Error::invalid("hub download", e.to_string()))
}

/// [`fetch_with`] with progress bars and 3 retries.
pub fn fetch(transformer_repo: &str) -> Result<BundlePaths> {
    fetch_with(transformer_repo, HubOptions::default())
}

/// Fetches a complete bundle with the transformer from `transformer_repo` ([`ORIGINAL`] or
/// [`F1`]); files already in the cache are not downloaded again.
pub fn fetch_with(transformer_repo: &str, options: HubOptions) -> Result<BundlePaths> {
    let api = api(options)?;
    let transformer = get_model(&api.model(transformer_repo.into()), transformer_repo, "", "diffusion_pytorch_model")?;
    let hunyuan = api.model(HUNYUAN_VIDEO.into());
    let vae = get_model(&hunyuan, HUNYUAN_VIDEO, "vae", "diffusion_pytorch_model")?;
    let text_encoder = get_model(&hunyuan, HUNYUAN_VIDEO, "text_encoder", "model")?;
    let text_encoder_2 = get_model(&hunyuan, HUNYUAN_VIDEO, "text_encoder_2", "model")?;
    let tokenizer = parent(&get(&api, HUNYUAN_VIDEO, "tokenizer/tokenizer.json")?);
    let tokenizer_2 = parent(&get(&api, HUNYUAN_VIDEO, "tokenizer_2/tokenizer.json")?);
    let redux = api.model(FLUX_REDUX.into());
    let image_encoder = get_model(&redux, FLUX_REDUX, "image_encoder", "model")?;
    let feature_extractor = parent(&get(&api, FLUX_REDUX, "feature_extractor/preprocessor_config.json")?);
    Ok(BundlePaths {
        transformer,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        image_encoder,
        feature_extractor,
        vae_tiny: PathBuf::new(),
        store: crate::files::FileStore::Disk,
    })
}
