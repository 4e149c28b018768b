//! Text conditioning: HunyuanVideo's Llama features and CLIP-L pooled vector for a prompt.
//!
//! [`PromptEncoder`] holds both text encoders (~15 GB for the real Llama in bf16) and their
//! tokenizers. It is only needed when a prompt changes: load it, fill a [`PromptCache`], drop it,
//! and keep the features (a few MB per prompt):
//!
//! ```no_run
//! # fn demo(files: framepack::models::text::PromptEncoderFiles) -> framepack::Result<()> {
//! use framepack::models::text::{PromptCache, PromptEncoder, PromptEncoderOptions, PADDED_TEXT_LEN};
//! let device = candle_core::Device::Cpu;
//! let mut cache = PromptCache::new();
//! // Loads the encoders only if a prompt is missing; they are dropped when this returns.
//! cache.encode_missing(&["a cat runs on the grass", ""], || {
//!     PromptEncoder::load(&files, PromptEncoderOptions::default(), candle_core::DType::BF16, &device)
//! })?;
//! let feats = cache.get("a cat runs on the grass").expect("encoded above");
//! let (llama_512, mask) = feats.padded(PADDED_TEXT_LEN)?; // (1, 512, 4096), (1, 512) u8
//! # let _ = (llama_512, mask, &feats.clip_pooled);
//! # Ok(()) }
//! ```
//!
//! Any prompt is accepted, including the empty one FramePack encodes as its default negative
//! prompt: the template's trailing `<|eot_id|>` always remains, so L ≥ 1.

pub mod clip;
pub mod llama;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::files::FileStore;
use clip::{ClipTextConfig, ClipTextModel};
use llama::{Llama, LlamaConfig};

/// HunyuanVideo's prompt template (diffusers `DEFAULT_PROMPT_TEMPLATE`); `{}` is the prompt.
pub const HUNYUAN_VIDEO_TEMPLATE: &str = "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: 1. The main content and theme of the video.2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.4. background environment, light, style and atmosphere.5. camera angles, movements, and transitions used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>";

/// Tokens of [`HUNYUAN_VIDEO_TEMPLATE`] before the prompt (BOS included) with the real Llama-3
/// tokenizer: HunyuanVideo's `crop_start`.
pub const HUNYUAN_VIDEO_CROP_START: usize = 95;

/// Most prompt tokens kept after the template prefix (longer prompts are truncated).
pub const MAX_PROMPT_TOKENS: usize = 256;

/// Length the Llama features are padded to for the transformer (`crop_or_pad_yield_mask`).
pub const PADDED_TEXT_LEN: usize = 512;

/// Llama-3's BOS token: its presence marks a Llama-3 tokenizer, for which the HunyuanVideo
/// template must give exactly [`HUNYUAN_VIDEO_CROP_START`] prefix tokens.
const LLAMA3_BOS: &str = "<|begin_of_text|>";

/// Reads a `tokenizer.json`, with any padding or truncation it declares switched off.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    read_tokenizer(&FileStore::Disk, path)
}

/// [`load_tokenizer`] from a [`FileStore`].
pub fn read_tokenizer(store: &FileStore, path: &Path) -> Result<Tokenizer> {
    let reason = |e: String| Error::invalid("tokenizer file", format!("{}: {e}", path.display()));
    let bytes = store.read(path).map_err(|e| reason(e.to_string()))?;
    let mut tok = Tokenizer::from_bytes(&*bytes).map_err(|e| reason(e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| reason(e.to_string()))?;
    Ok(tok)
}

fn truncate_to(tok: &mut Tokenizer, max_length: usize, what: &'static str) -> Result<()> {
    tok.with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
        .map_err(|e| Error::invalid(what, e.to_string()))?;
    Ok(())
}

fn encode_ids(tok: &Tokenizer, text: &str, what: &'static str) -> Result<Vec<u32>> {
    let enc = tok.encode(text, true).map_err(|e| Error::invalid(what, e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// A prompt template with exactly one `{}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    prefix: String,
    suffix: String,
}

impl PromptTemplate {
    /// Parses a template; it must contain `{}` exactly once.
    pub fn new(template: &str) -> Result<Self> {
        let mut parts = template.split("{}");
        match (parts.next(), parts.next(), parts.next()) {
            (Some(prefix), Some(suffix), None) => Ok(Self { prefix: prefix.into(), suffix: suffix.into() }),
            _ => Err(Error::invalid("prompt template", format!("needs exactly one `{{}}`: {template:?}"))),
        }
    }

    /// [`HUNYUAN_VIDEO_TEMPLATE`].
    pub fn hunyuan_video() -> Self {
        Self::new(HUNYUAN_VIDEO_TEMPLATE).expect("the built-in template has one placeholder")
    }

    /// The template text before the prompt.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The template with `prompt` inserted.
    pub fn apply(&self, prompt: &str) -> String {
        format!("{}{prompt}{}", self.prefix, self.suffix)
    }

    /// Number of leading tokens to drop from an encoded prompt: the tokens of the prefix,
    /// including the special tokens the tokenizer adds in front (BOS).
    pub fn crop_start(&self, tokenizer: &Tokenizer) -> Result<usize> {
        let ids = tokenizer
            .encode(self.prefix.as_str(), true)
            .map_err(|e| Error::invalid("prompt template", e.to_string()))?;
        let n = ids.get_ids().len();
        if *self == Self::hunyuan_video()
            && tokenizer.token_to_id(LLAMA3_BOS).is_some()
            && n != HUNYUAN_VIDEO_CROP_START
        {
            return Err(Error::invalid(
                "Llama tokenizer",
                format!(
                    "the HunyuanVideo template prefix encodes to {n} tokens, expected {HUNYUAN_VIDEO_CROP_START} \
                     (BOS + 94); is the BOS post-processor missing from tokenizer.json?"
                ),
            ));
        }
        Ok(n)
    }
}

/// Text features of one prompt.
#[derive(Debug, Clone)]
pub struct PromptFeatures {
    /// Llama features of the prompt tokens after the template prefix: (1, L, hidden), 1 ≤ L ≤ 256.
    pub llama: Tensor,
    /// CLIP-L pooled output: (1, 768) for the real model.
    pub clip_pooled: Tensor,
}

impl PromptFeatures {
    /// Number of Llama tokens L.
    pub fn llama_len(&self) -> usize {
        self.llama.dims().get(1).copied().unwrap_or(0)
    }

    /// The Llama features zero-padded (or cropped) to `len` tokens and the boolean mask (u8, 1 for
    /// the first min(L, len) tokens): FramePack's `crop_or_pad_yield_mask`, used with `len = 512`.
    pub fn padded(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let (b, l, c) = self.llama.dims3()?;
        let device = self.llama.device();
        if l >= len {
            return Ok((self.llama.narrow(1, 0, len)?, Tensor::ones((b, len), DType::U8, device)?));
        }
        let pad = Tensor::zeros((b, len - l, c), self.llama.dtype(), device)?;
        let x = Tensor::cat(&[&self.llama, &pad], 1)?;
        let mask = Tensor::cat(
            &[Tensor::ones((b, l), DType::U8, device)?, Tensor::zeros((b, len - l), DType::U8, device)?],
            1,
        )?;
        Ok((x, mask))
    }

    /// Zeros of the same shapes: FramePack's negative prompt when CFG is off.
    pub fn zeros_like(&self) -> Result<Self> {
        Ok(Self { llama: self.llama.zeros_like()?, clip_pooled: self.clip_pooled.zeros_like()? })
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self { llama: self.llama.to_device(device)?, clip_pooled: self.clip_pooled.to_device(device)? })
    }
}

/// Anything that turns a prompt into [`PromptFeatures`].
pub trait EncodePrompt {
    /// Encodes one prompt.
    fn encode_prompt(&self, prompt: &str) -> Result<PromptFeatures>;
}

/// Settings of a [`PromptEncoder`].
#[derive(Debug, Clone)]
pub struct PromptEncoderOptions {
    /// Template wrapped around the prompt for the Llama encoder.
    pub template: PromptTemplate,
    /// Most prompt tokens kept after the template prefix.
    pub max_prompt_tokens: usize,
    /// Llama layers skipped at the end: 2 gives `hidden_states[-3]`.
    pub skip_last_layers: usize,
}

impl Default for PromptEncoderOptions {
    fn default() -> Self {
        Self { template: PromptTemplate::hunyuan_video(), max_prompt_tokens: MAX_PROMPT_TOKENS, skip_last_layers: 2 }
    }
}

/// Where the text encoders' files are.
#[derive(Debug, Clone)]
pub struct PromptEncoderFiles {
    /// Llama configuration.
    pub llama_config: LlamaConfig,
    /// Llama `LlamaModel` safetensors shards.
    pub llama_weights: Vec<PathBuf>,
    /// Llama `tokenizer.json`.
    pub llama_tokenizer: PathBuf,
    /// CLIP text configuration.
    pub clip_config: ClipTextConfig,
    /// CLIP `CLIPTextModel` safetensors.
    pub clip_weights: Vec<PathBuf>,
    /// CLIP `tokenizer.json`.
    pub clip_tokenizer: PathBuf,
    /// Where the paths are read from.
    pub store: FileStore,
}

fn safetensors_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |reason: String| Error::invalid("text encoder weights", format!("{}: {reason}", dir.display()));
    let files: Vec<PathBuf> = FileStore::Disk
        .list(dir)
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(err("no .safetensors files".into()));
    }
    Ok(files)
}

fn read_config(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::invalid("text encoder config", format!("{}: {e}", path.display()))),
    }
}

impl PromptEncoderFiles {
    /// The files of a HunyuanVideo diffusers snapshot (hunyuanvideo-community/HunyuanVideo):
    /// `text_encoder/` and `text_encoder_2/` (every `*.safetensors` shard, `config.json` if
    /// present, else the built-in real configs), `tokenizer/tokenizer.json` and
    /// `tokenizer_2/tokenizer.json`.
    pub fn hunyuan_video(root: &Path) -> Result<Self> {
        let llama_config = match read_config(&root.join("text_encoder/config.json"))? {
            Some(json) => LlamaConfig::from_json(&json)?,
            None => LlamaConfig::llava_llama3_8b(),
        };
        let clip_config = match read_config(&root.join("text_encoder_2/config.json"))? {
            Some(json) => ClipTextConfig::from_json(&json)?,
            None => ClipTextConfig::clip_vit_large_patch14(),
        };
        Ok(Self {
            llama_config,
            llama_weights: safetensors_in(&root.join("text_encoder"))?,
            llama_tokenizer: root.join("tokenizer/tokenizer.json"),
            clip_config,
            clip_weights: safetensors_in(&root.join("text_encoder_2"))?,
            clip_tokenizer: root.join("tokenizer_2/tokenizer.json"),
            store: FileStore::Disk,
        })
    }
}

/// Both text encoders and their tokenizers.
pub struct PromptEncoder {
    llama: Llama,
    llama_tokenizer: Tokenizer,
    clip: ClipTextModel,
    clip_tokenizer: Tokenizer,
    template: PromptTemplate,
    crop_start: usize,
    llama_layers: usize,
}

impl PromptEncoder {
    /// Assembles an encoder from loaded parts. `llama` must hold at least
    /// `num_hidden_layers - options.skip_last_layers` layers.
    pub fn new(
        llama: Llama,
        llama_tokenizer: Tokenizer,
        clip: ClipTextModel,
        clip_tokenizer: Tokenizer,
        options: PromptEncoderOptions,
    ) -> Result<Self> {
        let total = llama.config().num_hidden_layers;
        let llama_layers = total.checked_sub(options.skip_last_layers).ok_or_else(|| {
            Error::invalid("skip_last_layers", format!("{} exceeds the {total} Llama layers", options.skip_last_layers))
        })?;
        if llama_layers > llama.loaded_layers() {
            return Err(Error::invalid(
                "Llama",
                format!("{llama_layers} layers needed, only {} loaded", llama.loaded_layers()),
            ));
        }
        if options.max_prompt_tokens == 0 {
            return Err(Error::invalid("max_prompt_tokens", "must be at least 1"));
        }
        let crop_start = options.template.crop_start(&llama_tokenizer)?;
        let (mut llama_tokenizer, mut clip_tokenizer) = (llama_tokenizer, clip_tokenizer);
        truncate_to(&mut llama_tokenizer, crop_start + options.max_prompt_tokens, "Llama tokenizer")?;
        truncate_to(&mut clip_tokenizer, clip.config().max_position_embeddings, "CLIP tokenizer")?;
        Ok(Self { llama, llama_tokenizer, clip, clip_tokenizer, template: options.template, crop_start, llama_layers })
    }

    /// Loads tokenizers and weights (strict names: the released `LlamaModel` and `CLIPTextModel`
    /// checkpoints). Only the Llama layers that are used stay in memory.
    pub fn load(
        files: &PromptEncoderFiles,
        options: PromptEncoderOptions,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let llama_tokenizer = read_tokenizer(&files.store, &files.llama_tokenizer)?;
        let clip_tokenizer = read_tokenizer(&files.store, &files.clip_tokenizer)?;
        let cfg = &files.llama_config;
        cfg.validate()?;
        files.clip_config.validate()?;
        let keep = cfg.num_hidden_layers.checked_sub(options.skip_last_layers).ok_or_else(|| {
            Error::invalid(
                "skip_last_layers",
                format!("{} exceeds the {} Llama layers", options.skip_last_layers, cfg.num_hidden_layers),
            )
        })?;
        let llama = Llama::load(files.store.weights(&files.llama_weights)?, cfg, keep, dtype, device)?;
        let clip = ClipTextModel::load(files.store.weights(&files.clip_weights)?, &files.clip_config, dtype, device)?;
        Self::new(llama, llama_tokenizer, clip, clip_tokenizer, options)
    }

    /// Template tokens dropped in front of the prompt (95 for HunyuanVideo).
    pub fn crop_start(&self) -> usize {
        self.crop_start
    }

    /// Token ids the Llama encoder runs on: template + prompt, truncated to
    /// `crop_start + max_prompt_tokens`, without padding.
    pub fn llama_token_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        encode_ids(&self.llama_tokenizer, &self.template.apply(prompt), "Llama tokenizer")
    }

    /// Token ids the CLIP encoder runs on: the raw prompt with BOS/EOS, truncated to the
    /// model's maximum length, without padding (the pooled output does not depend on padding).
    pub fn clip_token_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        encode_ids(&self.clip_tokenizer, prompt, "CLIP tokenizer")
    }

    /// Llama features and CLIP pooled vector of `prompt` (any text, including "").
    pub fn encode(&self, prompt: &str) -> Result<PromptFeatures> {
        let ids = self.llama_token_ids(prompt)?;
        let n = ids.len();
        if n <= self.crop_start {
            return Err(Error::invalid(
                "prompt",
                format!("encodes to {n} tokens, no more than the {} template tokens", self.crop_start),
            ));
        }
        let device = self.llama.device();
        let ids = Tensor::from_vec(ids, (1, n), device)?;
        let hidden = self.llama.forward_hidden(&ids, self.llama_layers)?;
        let llama = hidden.narrow(1, self.crop_start, n - self.crop_start)?;

        let clip_ids = self.clip_token_ids(prompt)?;
        let n = clip_ids.len();
        let clip_ids = Tensor::from_vec(clip_ids, (1, n), self.clip.device())?;
        let clip_pooled = self.clip.forward(&clip_ids)?.pooler_output;
        Ok(PromptFeatures { llama, clip_pooled })
    }
}

impl EncodePrompt for PromptEncoder {
    fn encode_prompt(&self, prompt: &str) -> Result<PromptFeatures> {
        self.encode(prompt)
    }
}

/// Prompt features keyed by the exact prompt text. Features depend on the encoder weights and
/// dtype, so keep one cache per encoder setup.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: HashMap<String, PromptFeatures>,
}

impl PromptCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cached features of `prompt`.
    pub fn get(&self, prompt: &str) -> Option<&PromptFeatures> {
        self.entries.get(prompt)
    }

    /// Stores features computed elsewhere.
    pub fn insert(&mut self, prompt: &str, features: PromptFeatures) {
        self.entries.insert(prompt.to_string(), features);
    }

    /// Forgets one prompt.
    pub fn remove(&mut self, prompt: &str) -> Option<PromptFeatures> {
        self.entries.remove(prompt)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of cached prompts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached features of `prompt`, encoding (and caching) them first if needed.
    pub fn get_or_encode<E: EncodePrompt + ?Sized>(&mut self, prompt: &str, encoder: &E) -> Result<PromptFeatures> {
        if let Some(f) = self.entries.get(prompt) {
            return Ok(f.clone());
        }
        let f = encoder.encode_prompt(prompt)?;
        self.entries.insert(prompt.to_string(), f.clone());
        Ok(f)
    }

    /// Encodes the prompts that are not cached yet. `load` is called only if one is missing, and
    /// the encoder it returns is dropped before this returns. Returns how many were encoded.
    pub fn encode_missing<E: EncodePrompt>(
        &mut self,
        prompts: &[&str],
        load: impl FnOnce() -> Result<E>,
    ) -> Result<usize> {
        let missing: Vec<&str> = prompts.iter().copied().filter(|p| !self.entries.contains_key(*p)).collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let encoder = load()?;
        let mut n = 0;
        for p in missing {
            if !self.entries.contains_key(p) {
                let f = encoder.encode_prompt(p)?;
                self.entries.insert(p.to_string(), f);
                n += 1;
            }
        }
        Ok(n)
    }
}
