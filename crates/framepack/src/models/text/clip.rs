//! CLIP text tower (HunyuanVideo's `text_encoder_2`, openai clip-vit-large-patch14), returning
//! transformers' `pooler_output`: the final-LayerNorm state at the EOS position, no projection.
//!
//! Loads a transformers `CLIPTextModel` checkpoint with its exact keys (`embeddings.*`,
//! `encoder.layers.N.*`, `final_layer_norm.*`; no `text_model.` prefix).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use serde::Deserialize;

use super::llama::causal_mask;
use crate::error::{Error, Result};
use crate::models::kernels::attention::SelfAttention;
use crate::weights::{self, WeightSource};

/// MLP activation of a CLIP text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x · sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Module for ClipActivation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Self::Gelu => x.gelu_erf(),
        }
    }
}

/// Hyper-parameters of a CLIP text tower (the fields of `CLIPTextConfig` that matter here).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Maximum sequence length (rows of the position embedding).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// EOS token id. The value 2 selects transformers' legacy rule (pool at the largest token
    /// id), which is what the original CLIP configs, including HunyuanVideo's, rely on.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_ln_eps() -> f64 {
    1e-5
}

fn default_eos() -> u32 {
    2
}

impl ClipTextConfig {
    /// The text tower of openai/clip-vit-large-patch14 (HunyuanVideo's `text_encoder_2`).
    pub fn clip_vit_large_patch14() -> Self {
        Self {
            vocab_size: 49_408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }

    /// Parses a HF `config.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(json).map_err(|e| Error::invalid("CLIP config", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.hidden_size == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(
                "CLIP config",
                format!("hidden_size {} is not a multiple of {} heads", self.hidden_size, self.num_attention_heads),
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 {
            return Err(Error::invalid("CLIP config", format!("zero size in {self:?}")));
        }
        Ok(())
    }

    /// Index of the pooled token in `ids`, as transformers picks it: the first maximal id when
    /// `eos_token_id == 2` (legacy configs), else the first `eos_token_id` (0 if there is none).
    pub fn pooled_index(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&i| i == max).unwrap_or(0)
        } else {
            ids.iter().position(|&i| i == self.eos_token_id).unwrap_or(0)
        }
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder<'_>, cfg: &ClipTextConfig) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(vb.pp("self_attn"), cfg.hidden_size, cfg.num_attention_heads)?,
            layer_norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: linear(h, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, h, vb.pp("mlp").pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?, Some(mask))?)?;
        let m = self.fc2.forward(&self.act.forward(&self.fc1.forward(&self.layer_norm2.forward(&h)?)?)?)?;
        h + m
    }
}

/// Outputs of [`ClipTextModel::forward`].
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// Final-LayerNorm states (batch, seq_len, hidden).
    pub last_hidden_state: Tensor,
    /// The state at the pooled (EOS) position of each row (batch, hidden).
    pub pooler_output: Tensor,
}

/// CLIP text transformer (`CLIPTextModel` without projection).
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    cfg: ClipTextConfig,
}

impl ClipTextModel {
    /// Loads the tower from a `CLIPTextModel` checkpoint root.
    pub fn new(vb: VarBuilder<'_>, cfg: &ClipTextConfig) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?,
            position_embedding: embedding(cfg.max_position_embeddings, cfg.hidden_size, emb.pp("position_embedding"))?,
            layers,
            final_layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            cfg: cfg.clone(),
        })
    }

    /// Loads `CLIPTextModel` safetensors (exact names) in `dtype` on `device`.
    pub fn load(weights: impl WeightSource, cfg: &ClipTextConfig, dtype: DType, device: &Device) -> Result<Self> {
        weights::load(weights.into_weight_files()?, dtype, device, |vb| Self::new(vb, cfg))
    }

    /// The model's configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        self.token_embedding.embeddings().device()
    }

    /// Runs the tower on (batch, seq_len) token ids (causal attention, no padding mask, as
    /// FramePack calls it). `seq_len` must not exceed `max_position_embeddings`.
    pub fn forward(&self, ids: &Tensor) -> Result<ClipTextOutput> {
        let (b, t) = ids.dims2().map_err(|_| {
            Error::invalid("token ids", format!("expected shape (batch, seq_len), got {:?}", ids.dims()))
        })?;
        if b == 0 || t == 0 || t > self.cfg.max_position_embeddings {
            return Err(Error::invalid(
                "token ids",
                format!("shape {:?}: need 1..={} tokens per row", ids.dims(), self.cfg.max_position_embeddings),
            ));
        }
        let rows = ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        let mut pooled_idx = Vec::with_capacity(b);
        for row in &rows {
            if let Some(bad) = row.iter().find(|&&i| i < 0 || i as usize >= self.cfg.vocab_size) {
                return Err(Error::invalid(
                    "token ids",
                    format!("id {bad} is outside the vocabulary of {} tokens", self.cfg.vocab_size),
                ));
            }
            let row: Vec<u32> = row.iter().map(|&i| i as u32).collect();
            pooled_idx.push(self.cfg.pooled_index(&row) as u32);
        }
        let ids = ids.to_dtype(DType::U32)?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?;
        let mut h = self.token_embedding.forward(&ids)?.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(t, ids.device())?;
        for layer in &self.layers {
            h = layer.forward(&h, &mask)?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&h)?;
        let pooled = (0..b)
            .map(|i| last_hidden_state.get(i)?.get(pooled_idx[i] as usize))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooler_output = Tensor::stack(&pooled, 0)?;
        Ok(ClipTextOutput { last_hidden_state, pooler_output })
    }
}
