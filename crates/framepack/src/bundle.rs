//! A complete FramePack setup on disk, laid out like the released repositories:
//!
//! ```text
//! DIR/                        (or DIR/transformer/)  lllyasviel/FramePackI2V_HY (or the F1 model)
//!   config.json
//!   diffusion_pytorch_model.safetensors.index.json + diffusion_pytorch_model-0000k-of-0000n.safetensors
//!     (or one diffusion_pytorch_model.safetensors)
//!   vae/config.json, vae/diffusion_pytorch_model.safetensors      hunyuanvideo-community/HunyuanVideo
//!     (or a TAEHV as the VAE: config.json with "_class_name": "TAEHV", the nano model)
//!   text_encoder/config.json, model(.safetensors.index.json | .safetensors), tokenizer/tokenizer.json
//!   text_encoder_2/config.json, model.safetensors, tokenizer_2/tokenizer.json
//!   image_encoder/config.json, model.safetensors, feature_extractor/preprocessor_config.json
//!                                                                 lllyasviel/flux_redux_bfl
//!   vae_tiny/taehv.safetensors [+ config.json]   optional tiny decoder (madebyollin/taehv)
//! ```
//!
//! [`BundlePaths`] names every component's folder (all inside one root by default; any of them
//! can point elsewhere, e.g. into a Hugging Face cache). [`BundlePaths::inspect`] reports for
//! every component whether it is present, missing (which file) or mismatched (which tensor or
//! config field), reading only configs and safetensors headers. [`BundlePaths::load_models`]
//! loads the transformer and the VAE with strict checks for a [`Generator`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::de::DeserializeOwned;

use crate::error::{BundleError, Error, Result};
use crate::files::FileStore;
use crate::generator::{Generator, Models};
use crate::models::taehv::{self, Taehv};
use crate::models::text::clip::{ClipTextConfig, ClipTextModel};
use crate::models::text::llama::{Llama, LlamaConfig};
use crate::models::transformer::{self, Residency, Transformer};
use crate::models::vae::AutoencoderKLHunyuanVideo;
use crate::models::vision::{SiglipVisionConfig, SiglipVisionModel};
use crate::models::{Autoencoder, AutoencoderConfig};
use crate::weights;

/// Where a job runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` feature).
    Cuda(usize),
    /// A Metal GPU by ordinal (needs the `metal` feature).
    Metal(usize),
}

impl DeviceChoice {
    /// Opens the device; a clear error when this build lacks the backend.
    pub fn open(self) -> Result<Device> {
        let unavailable = |what: &str, feature: &str, e: candle_core::Error| {
            Error::invalid(
                "device",
                format!("cannot open {what} (is this build compiled with the `{feature}` feature?): {e}"),
            )
        };
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => {
                Device::new_cuda(i).map_err(|e| unavailable(&format!("CUDA device {i}"), "cuda", e))
            }
            DeviceChoice::Metal(i) => {
                Device::new_metal(i).map_err(|e| unavailable(&format!("Metal device {i}"), "metal", e))
            }
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;
    /// `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => (
                k.to_string(),
                i.parse::<usize>().map_err(|_| {
                    Error::invalid("device", format!("bad device index in `{s}` (expected e.g. cuda:0)"))
                })?,
            ),
            None => (s.clone(), 0),
        };
        match kind.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(index)),
            "metal" | "mps" => Ok(DeviceChoice::Metal(index)),
            _ => Err(Error::invalid("device", format!("unknown device `{s}` (expected cpu, cuda[:N] or metal[:N])"))),
        }
    }
}

/// Parses `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::invalid("dtype", format!("unknown dtype `{other}` (expected f32, f16 or bf16)"))),
    }
}

/// One part of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BundlePart {
    /// The packed transformer (root or `transformer/`).
    Transformer,
    /// `vae/`.
    Vae,
    /// `text_encoder/` (Llama).
    TextEncoder,
    /// `tokenizer/` (Llama).
    Tokenizer,
    /// `text_encoder_2/` (CLIP-L text).
    TextEncoder2,
    /// `tokenizer_2/` (CLIP).
    Tokenizer2,
    /// `image_encoder/` (SigLIP).
    ImageEncoder,
    /// `feature_extractor/` (SigLIP preprocessing).
    FeatureExtractor,
}

impl BundlePart {
    /// Every component, in report order.
    pub const ALL: [BundlePart; 8] = [
        BundlePart::Transformer,
        BundlePart::Vae,
        BundlePart::TextEncoder,
        BundlePart::Tokenizer,
        BundlePart::TextEncoder2,
        BundlePart::Tokenizer2,
        BundlePart::ImageEncoder,
        BundlePart::FeatureExtractor,
    ];

    /// The folder name in the released layout.
    pub fn folder(self) -> &'static str {
        match self {
            BundlePart::Transformer => "transformer",
            BundlePart::Vae => "vae",
            BundlePart::TextEncoder => "text_encoder",
            BundlePart::Tokenizer => "tokenizer",
            BundlePart::TextEncoder2 => "text_encoder_2",
            BundlePart::Tokenizer2 => "tokenizer_2",
            BundlePart::ImageEncoder => "image_encoder",
            BundlePart::FeatureExtractor => "feature_extractor",
        }
    }

    /// What it is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            BundlePart::Transformer => "packed HunyuanVideo transformer",
            BundlePart::Vae => "HunyuanVideo VAE",
            BundlePart::TextEncoder => "Llama text encoder",
            BundlePart::Tokenizer => "Llama tokenizer",
            BundlePart::TextEncoder2 => "CLIP-L text encoder",
            BundlePart::Tokenizer2 => "CLIP tokenizer",
            BundlePart::ImageEncoder => "SigLIP image encoder",
            BundlePart::FeatureExtractor => "SigLIP preprocessor config",
        }
    }
}

impl fmt::Display for BundlePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// The folder of every component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundlePaths {
    /// Transformer folder (config + shards).
    pub transformer: PathBuf,
    /// VAE folder.
    pub vae: PathBuf,
    /// Llama folder.
    pub text_encoder: PathBuf,
    /// Llama tokenizer folder.
    pub tokenizer: PathBuf,
    /// CLIP text folder.
    pub text_encoder_2: PathBuf,
    /// CLIP tokenizer folder.
    pub tokenizer_2: PathBuf,
    /// SigLIP folder.
    pub image_encoder: PathBuf,
    /// SigLIP preprocessor folder.
    pub feature_extractor: PathBuf,
    /// Optional tiny decoder (TAEHV): a folder (see [`load_taehv`]) or a safetensors file;
    /// nothing is loaded when it does not exist.
    pub vae_tiny: PathBuf,
    /// Where the paths are read from: the file system, or memory ([`Self::from_memory`]).
    pub store: FileStore,
}

/// The state of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every file is there and matches the model its config describes.
    Present {
        /// Short facts (tensor count, size, key config values).
        summary: String,
    },
    /// A file or folder is missing.
    Missing {
        /// What is missing.
        what: String,
    },
    /// Files exist but do not fit (bad config, missing/extra/mis-shaped tensors, corrupt file).
    Mismatched {
        /// The first problem found.
        reason: String,
    },
}

/// What [`BundlePaths::inspect`] found for one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentReport {
    /// The component.
    pub component: BundlePart,
    /// Its folder.
    pub dir: PathBuf,
    /// Present, missing or mismatched.
    pub status: Status,
}

/// What [`BundlePaths::inspect`] found for every component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    /// One entry per [`BundlePart::ALL`].
    pub components: Vec<ComponentReport>,
}

impl BundleReport {
    /// The report of one component.
    pub fn get(&self, c: BundlePart) -> &ComponentReport {
        self.components.iter().find(|r| r.component == c).expect("every component is reported")
    }

    /// Whether every component is present and matches.
    pub fn is_complete(&self) -> bool {
        self.components.iter().all(|r| matches!(r.status, Status::Present { .. }))
    }

    /// Fails with the first problem among `needed`, in one line.
    pub fn require(&self, needed: &[BundlePart]) -> Result<()> {
        for c in needed {
            if let Some(e) = self.get(*c).status.error(*c) {
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.components {
            let (tag, text) = match &r.status {
                Status::Present { summary } => ("ok", summary.as_str()),
                Status::Missing { what } => ("MISSING", what.as_str()),
                Status::Mismatched { reason } => ("MISMATCH", reason.as_str()),
            };
            writeln!(f, "{:<18} {:<9} {} — {}", r.component.folder(), tag, r.component.describe(), text)?;
            if matches!(r.status, Status::Present { .. }) {
                writeln!(f, "{:<18} {:<9} {}", "", "", r.dir.display())?;
            }
        }
        Ok(())
    }
}

impl Status {
    /// The error this state means for part `c`; `None` when present.
    pub fn error(&self, c: BundlePart) -> Option<BundleError> {
        match self {
            Status::Present { .. } => None,
            Status::Missing { what } => Some(BundleError::Missing { part: c, what: what.clone() }),
            Status::Mismatched { reason } => Some(BundleError::Mismatched { part: c, reason: reason.clone() }),
        }
    }
}

fn missing(what: impl Into<String>) -> Status {
    Status::Missing { what: what.into() }
}

fn mismatched(reason: impl Into<String>) -> Status {
    Status::Mismatched { reason: reason.into() }
}

/// Reads and parses a JSON config file.
pub(crate) fn read_json<T: DeserializeOwned>(store: &FileStore, path: &Path) -> std::result::Result<T, Status> {
    let text = store.read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing(format!("{} not found", path.display()))
        } else {
            mismatched(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    serde_json::from_str(&text).map_err(|e| mismatched(format!("{}: invalid config: {e}", path.display())))
}

/// The safetensors files of a model folder: the shards an index names
/// (`<stem>.safetensors.index.json`), else `<stem>.safetensors`.
pub(crate) fn weight_files(store: &FileStore, dir: &Path, stem: &str) -> std::result::Result<Vec<PathBuf>, Status> {
    if !store.is_dir(dir) {
        return Err(missing(format!("folder {} not found", dir.display())));
    }
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if store.is_file(&index) {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let idx: Index = read_json(store, &index)?;
        let files: BTreeSet<&String> = idx.weight_map.values().collect();
        if files.is_empty() {
            return Err(mismatched(format!("{} lists no tensors", index.display())));
        }
        let paths: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(p) = paths.iter().find(|p| !store.is_file(p)) {
            return Err(missing(format!("shard {} (named by {}) not found", p.display(), index.display())));
        }
        return Ok(paths);
    }
    let single = dir.join(format!("{stem}.safetensors"));
    if store.is_file(&single) {
        return Ok(vec![single]);
    }
    Err(missing(format!("no {stem}.safetensors or {stem}.safetensors.index.json in {}", dir.display())))
}

fn file_size(store: &FileStore, paths: &[PathBuf]) -> u64 {
    paths.iter().filter_map(|p| store.file_len(p)).sum()
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / (1u64 << 10) as f64),
        n => format!("{n} B"),
    }
}

/// Checks a model folder: config, weight files, and every tensor name and shape against the
/// model the config describes (headers only).
pub(crate) fn check_model<C: DeserializeOwned, M>(
    store: &FileStore,
    dir: &Path,
    stem: &str,
    describe: impl FnOnce(&C) -> String,
    build: impl FnOnce(&C, candle_nn::VarBuilder<'_>) -> candle_core::Result<M>,
) -> Status {
    let cfg: C = match read_json(store, &dir.join("config.json")) {
        Ok(c) => c,
        Err(s) => return s,
    };
    check_weights(store, dir, stem, &cfg, describe, build)
}

fn check_weights<C, M>(
    store: &FileStore,
    dir: &Path,
    stem: &str,
    cfg: &C,
    describe: impl FnOnce(&C) -> String,
    build: impl FnOnce(&C, candle_nn::VarBuilder<'_>) -> candle_core::Result<M>,
) -> Status {
    let files = match weight_files(store, dir, stem) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let opened = match store.weights(&files) {
        Ok(o) => o,
        Err(e) => return mismatched(e.to_string()),
    };
    let shapes = opened.shapes();
    let n = shapes.len();
    let label = files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    match weights::check_shapes(&label, shapes, |vb| build(cfg, vb)) {
        Ok(()) => Status::Present {
            summary: format!(
                "{n} tensors in {} file(s), {}; {}",
                files.len(),
                human_bytes(file_size(store, &files)),
                describe(cfg)
            ),
        },
        Err(e) => mismatched(e.to_string()),
    }
}

/// [`check_model`] with a config parser of the model's own (`from_json`).
pub(crate) fn check_model_json<C, M>(
    store: &FileStore,
    dir: &Path,
    stem: &str,
    parse: impl FnOnce(&str) -> Result<C>,
    describe: impl FnOnce(&C) -> String,
    build: impl FnOnce(&C, candle_nn::VarBuilder<'_>) -> candle_core::Result<M>,
) -> Status {
    let path = dir.join("config.json");
    let text = match store.read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return missing(format!("{} not found", path.display())),
        Err(e) => return mismatched(format!("cannot read {}: {e}", path.display())),
    };
    let cfg = match parse(&text) {
        Ok(c) => c,
        Err(e) => return mismatched(format!("{}: invalid config: {e}", path.display())),
    };
    check_weights(store, dir, stem, &cfg, describe, build)
}

/// SigLIP's input size in `preprocessor_config.json` (`size.height`, `size.shortest_edge`,
/// a plain `size`, or `crop_size`), if it names one.
pub(crate) fn siglip_input_size(store: &FileStore, path: &Path) -> std::result::Result<Option<usize>, Status> {
    let v: serde_json::Value = read_json(store, path)?;
    let pick = |v: &serde_json::Value| -> Option<usize> {
        match v {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as usize),
            serde_json::Value::Object(o) => {
                ["height", "shortest_edge"].iter().find_map(|k| o.get(*k)?.as_u64()).map(|n| n as usize)
            }
            _ => None,
        }
    };
    Ok(v.get("size").and_then(pick).or_else(|| v.get("crop_size").and_then(pick)))
}

fn check_file(store: &FileStore, path: &Path, what: &str) -> Status {
    if store.is_file(path) {
        Status::Present { summary: format!("{what} ({})", human_bytes(file_size(store, &[path.to_path_buf()]))) }
    } else {
        missing(format!("{} not found", path.display()))
    }
}

impl BundlePaths {
    /// The released layout inside `root`; the transformer is `root/transformer/` when that folder
    /// exists, else `root` itself.
    pub fn from_dir(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let transformer = if root.join("transformer").is_dir() { root.join("transformer") } else { root.to_path_buf() };
        Self {
            transformer,
            vae: root.join("vae"),
            text_encoder: root.join("text_encoder"),
            tokenizer: root.join("tokenizer"),
            text_encoder_2: root.join("text_encoder_2"),
            tokenizer_2: root.join("tokenizer_2"),
            image_encoder: root.join("image_encoder"),
            feature_extractor: root.join("feature_extractor"),
            vae_tiny: root.join("vae_tiny"),
            store: FileStore::Disk,
        }
    }

    /// The released layout of a bundle held in memory: `files` are `(path relative to the
    /// bundle root, bytes)`, e.g. compiled into the binary with `include_bytes!`. Errors name
    /// the files as `root/<relative path>`; weights are read from the bytes in place.
    pub fn from_memory(root: impl AsRef<Path>, files: &[(&str, &'static [u8])]) -> Self {
        let root = root.as_ref();
        let store = FileStore::memory(root, files);
        let transformer =
            if store.is_dir(&root.join("transformer")) { root.join("transformer") } else { root.to_path_buf() };
        Self { transformer, store, ..Self::from_dir(root) }
    }

    /// The folder of a component.
    pub fn dir(&self, c: BundlePart) -> &Path {
        match c {
            BundlePart::Transformer => &self.transformer,
            BundlePart::Vae => &self.vae,
            BundlePart::TextEncoder => &self.text_encoder,
            BundlePart::Tokenizer => &self.tokenizer,
            BundlePart::TextEncoder2 => &self.text_encoder_2,
            BundlePart::Tokenizer2 => &self.tokenizer_2,
            BundlePart::ImageEncoder => &self.image_encoder,
            BundlePart::FeatureExtractor => &self.feature_extractor,
        }
    }

    /// The transformer's config.
    pub fn transformer_config(&self) -> Result<transformer::Config> {
        read_json(&self.store, &self.transformer.join("config.json")).map_err(status_error(BundlePart::Transformer))
    }

    /// The VAE's config (`_class_name` `"TAEHV"` for a TAEHV as the VAE, else HunyuanVideo's).
    pub fn vae_config(&self) -> Result<AutoencoderConfig> {
        let path = self.vae.join("config.json");
        let value: serde_json::Value = read_json(&self.store, &path).map_err(status_error(BundlePart::Vae))?;
        AutoencoderConfig::from_value(value)
            .map_err(|e| mismatched(format!("{}: invalid config: {e}", path.display())))
            .map_err(status_error(BundlePart::Vae))
    }

    /// Checks every component (configs and safetensors headers only; nothing is loaded).
    pub fn inspect(&self) -> BundleReport {
        let components = BundlePart::ALL
            .iter()
            .map(|&c| ComponentReport { component: c, dir: self.dir(c).to_path_buf(), status: self.inspect_one(c) })
            .collect();
        BundleReport { components }
    }

    fn inspect_one(&self, c: BundlePart) -> Status {
        let dir = self.dir(c);
        let store = &self.store;
        if !store.is_dir(dir) {
            return missing(format!("folder {} not found", dir.display()));
        }
        match c {
            BundlePart::Transformer => check_model(
                store,
                dir,
                "diffusion_pytorch_model",
                |cfg: &transformer::Config| {
                    format!(
                        "{} dual + {} single blocks, width {}, history embedders {}, image projection {}",
                        cfg.num_layers,
                        cfg.num_single_layers,
                        cfg.inner_dim(),
                        if cfg.has_clean_x_embedder { "yes" } else { "NO" },
                        if cfg.has_image_proj { "yes" } else { "no" }
                    )
                },
                |cfg, vb| {
                    if !cfg.has_clean_x_embedder {
                        return Err(candle_core::Error::Msg(
                            "config has has_clean_x_embedder = false: not a FramePack transformer".into(),
                        ));
                    }
                    Transformer::new(vb, cfg)
                },
            ),
            BundlePart::Vae => check_model_json(
                store,
                dir,
                "diffusion_pytorch_model",
                |text| AutoencoderConfig::from_json(text).map_err(|e| Error::invalid("vae config", e.to_string())),
                AutoencoderConfig::describe,
                |cfg, vb| match cfg {
                    AutoencoderConfig::HunyuanVideo(c) => AutoencoderKLHunyuanVideo::new(vb, c).map(drop),
                    AutoencoderConfig::Taehv(c) => Taehv::new(vb, c).map(drop),
                },
            ),
            BundlePart::TextEncoder => check_model_json(
                store,
                dir,
                "model",
                LlamaConfig::from_json,
                |cfg: &LlamaConfig| format!("{} layers, width {}", cfg.num_hidden_layers, cfg.hidden_size),
                |cfg, vb| Llama::new(vb, cfg),
            ),
            BundlePart::TextEncoder2 => check_model_json(
                store,
                dir,
                "model",
                ClipTextConfig::from_json,
                |cfg: &ClipTextConfig| format!("{} layers, width {}", cfg.num_hidden_layers, cfg.hidden_size),
                |cfg, vb| ClipTextModel::new(vb, cfg),
            ),
            BundlePart::ImageEncoder => check_model_json(
                store,
                dir,
                "model",
                SiglipVisionConfig::from_json,
                |cfg: &SiglipVisionConfig| {
                    format!(
                        "{} layers, width {}, {}² input, {} tokens",
                        cfg.num_hidden_layers,
                        cfg.hidden_size,
                        cfg.image_size,
                        cfg.num_patches()
                    )
                },
                |cfg, vb| SiglipVisionModel::new(vb, cfg),
            ),
            BundlePart::Tokenizer | BundlePart::Tokenizer2 => {
                let path = dir.join("tokenizer.json");
                match check_file(store, &path, "tokenizer.json") {
                    Status::Present { summary } => match crate::models::text::read_tokenizer(store, &path) {
                        Ok(t) => Status::Present { summary: format!("{summary}, {} tokens", t.get_vocab_size(true)) },
                        Err(e) => mismatched(e.to_string()),
                    },
                    other => other,
                }
            }
            BundlePart::FeatureExtractor => {
                let path = dir.join("preprocessor_config.json");
                match check_file(store, &path, "preprocessor_config.json") {
                    Status::Present { summary } => match siglip_input_size(store, &path) {
                        Ok(Some(n)) => Status::Present { summary: format!("{summary}, {n}² input") },
                        Ok(None) => Status::Present { summary },
                        Err(s) => s,
                    },
                    other => other,
                }
            }
        }
    }

    /// Loads the transformer and the VAE (strict weight checks) in `dtype` on `device`.
    pub fn load_models(&self, device: &Device, dtype: DType) -> Result<Models> {
        self.load_models_with(device, dtype, Residency::Resident)
    }

    /// [`Self::load_models`] with the transformer's blocks placed by `residency` (low-VRAM block
    /// streaming from the memory-mapped files).
    pub fn load_models_with(&self, device: &Device, dtype: DType, residency: Residency) -> Result<Models> {
        let report_one = |c: BundlePart| BundleReport {
            components: vec![ComponentReport {
                component: c,
                dir: self.dir(c).to_path_buf(),
                status: self.inspect_one(c),
            }],
        };
        report_one(BundlePart::Transformer).require(&[BundlePart::Transformer])?;
        report_one(BundlePart::Vae).require(&[BundlePart::Vae])?;
        self.load_inspected_models(device, dtype, residency)
    }

    /// [`Self::load_models_with`] for a bundle whose report already passed (the strict loaders
    /// still check every tensor).
    pub(crate) fn load_inspected_models(&self, device: &Device, dtype: DType, residency: Residency) -> Result<Models> {
        let tcfg = self.transformer_config()?;
        let tfiles = weight_files(&self.store, &self.transformer, "diffusion_pytorch_model")
            .map_err(status_error(BundlePart::Transformer))?;
        let transformer = Transformer::load(self.store.weights(&tfiles)?, &tcfg, dtype, device, residency)?;
        let vcfg = self.vae_config()?;
        let vfiles =
            weight_files(&self.store, &self.vae, "diffusion_pytorch_model").map_err(status_error(BundlePart::Vae))?;
        let weights = self.store.weights(&vfiles)?;
        let vae = match vcfg {
            AutoencoderConfig::HunyuanVideo(c) => {
                Autoencoder::hunyuan_video(AutoencoderKLHunyuanVideo::load(weights, &c, dtype, device)?, dtype)
            }
            AutoencoderConfig::Taehv(c) => Autoencoder::Taehv(Taehv::load(weights, &c, dtype, device)?),
        };
        let tiny_decoder = self.load_tiny_decoder(device, dtype)?;
        Ok(Models { transformer, vae, tiny_decoder })
    }

    /// The tiny decoder at [`Self::vae_tiny`], or `None` when that path does not exist.
    pub fn load_tiny_decoder(&self, device: &Device, dtype: DType) -> Result<Option<Taehv>> {
        if !self.store.exists(&self.vae_tiny) {
            return Ok(None);
        }
        let (file, cfg) = taehv_files(&self.store, &self.vae_tiny)?;
        Taehv::load(self.store.weights(&[file])?, &cfg, dtype, device).map(Some)
    }

    /// The state of the optional tiny decoder (`None` when absent), reading headers only.
    pub fn inspect_tiny_decoder(&self) -> Option<Status> {
        if !self.store.exists(&self.vae_tiny) {
            return None;
        }
        let (file, cfg) = match taehv_files(&self.store, &self.vae_tiny) {
            Ok(fc) => fc,
            Err(e) => return Some(mismatched(e.to_string())),
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("taehv").to_string();
        Some(check_weights(
            &self.store,
            dir,
            &stem,
            &cfg,
            |c: &taehv::Config| format!("TAEHV, decoder widths {:?}", c.decoder_widths),
            |c, vb| Taehv::new(vb, c),
        ))
    }

    /// A [`Generator`] over [`Self::load_models`].
    pub fn load_generator(&self, device: &Device, dtype: DType) -> Result<Generator> {
        Ok(Generator::new(self.load_models(device, dtype)?))
    }
}

/// Weight file names looked for in a tiny-decoder folder, in order.
const TAEHV_FILES: [&str; 2] = ["taehv.safetensors", "diffusion_pytorch_model.safetensors"];

/// The weights file and config of a tiny decoder at `path`: a folder holding one of
/// `taehv.safetensors` / `diffusion_pytorch_model.safetensors` and optionally `config.json` (a
/// [`taehv::Config`]), or a safetensors file (the released config).
fn taehv_files(store: &FileStore, path: &Path) -> Result<(PathBuf, taehv::Config)> {
    if !store.is_dir(path) {
        return Ok((path.to_path_buf(), taehv::Config::default()));
    }
    let file = TAEHV_FILES.iter().map(|n| path.join(n)).find(|p| store.is_file(p)).ok_or_else(|| {
        Error::invalid("tiny decoder", format!("{} holds none of {}", path.display(), TAEHV_FILES.join(", ")))
    })?;
    let cfg_path = path.join("config.json");
    let cfg = if store.is_file(&cfg_path) {
        read_json(store, &cfg_path).map_err(|s| match s {
            Status::Missing { what } => Error::invalid("tiny decoder", what),
            Status::Mismatched { reason } => Error::invalid("tiny decoder", reason),
            Status::Present { summary } => Error::invalid("tiny decoder", summary),
        })?
    } else {
        taehv::Config::default()
    };
    Ok((file, cfg))
}

/// Loads a tiny decoder (TAEHV) from a folder or a safetensors file (see [`taehv_files`] for the
/// layout) with strict checks: a wrong file names the file, tensor and shapes.
pub fn load_taehv(path: &Path, device: &Device, dtype: DType) -> Result<Taehv> {
    let (file, cfg) = taehv_files(&FileStore::Disk, path)?;
    Taehv::load(&[file], &cfg, dtype, device)
}

/// A failed check of part `c` as an error (a present part where a problem was expected is
/// reported as a mismatch).
pub(crate) fn status_error(c: BundlePart) -> impl Fn(Status) -> Error {
    move |s| match s.error(c) {
        Some(e) => e.into(),
        None => BundleError::Mismatched { part: c, reason: format!("unexpected state ({s:?})") }.into(),
    }
}
