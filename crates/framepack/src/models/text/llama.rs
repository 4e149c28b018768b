//! Llama decoder stack used as a text encoder (HunyuanVideo's LLaVA-Llama-3-8B language model).
//!
//! Loads a transformers `LlamaModel` checkpoint (keys `embed_tokens`, `layers.N.*`, `norm`; no
//! `model.` prefix, no `lm_head`) and returns hidden states of any layer: HunyuanVideo uses the
//! residual stream after 30 of the 32 layers, without the final norm.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Embedding, Linear, RmsNorm, VarBuilder, embedding, linear_b, rms_norm};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::{self, WeightSource};

/// Hyper-parameters of a Llama model (the fields of its HF `config.json` that matter here).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawLlamaConfig")]
pub struct LlamaConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Whether the q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// MLP activation (`silu` for Llama).
    pub hidden_act: Activation,
}

#[derive(Deserialize)]
struct RawRopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

#[derive(Deserialize)]
struct RawLlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    /// transformers ≥ 5 writes the RoPE settings here instead of `rope_theta`/`rope_scaling`.
    rope_parameters: Option<RawRopeParameters>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_act")]
    hidden_act: Activation,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_act() -> Activation {
    Activation::Silu
}

impl TryFrom<RawLlamaConfig> for LlamaConfig {
    type Error = String;

    fn try_from(r: RawLlamaConfig) -> std::result::Result<Self, String> {
        if let Some(s) = r.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(format!("rope_scaling {s} is not supported (only plain RoPE)"));
        }
        let mut theta = r.rope_theta;
        if let Some(p) = r.rope_parameters {
            if let Some(t) = p.rope_type.as_deref().filter(|t| *t != "default") {
                return Err(format!("rope_type `{t}` is not supported (only `default`)"));
            }
            theta = theta.or(p.rope_theta);
        }
        let heads = r.num_attention_heads;
        let cfg = LlamaConfig {
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            intermediate_size: r.intermediate_size,
            num_hidden_layers: r.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: r.num_key_value_heads.unwrap_or(heads),
            head_dim: r.head_dim.unwrap_or(r.hidden_size.checked_div(heads).unwrap_or(0)),
            rms_norm_eps: r.rms_norm_eps,
            rope_theta: theta.unwrap_or(10_000.0),
            attention_bias: r.attention_bias,
            mlp_bias: r.mlp_bias,
            hidden_act: r.hidden_act,
        };
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

impl LlamaConfig {
    /// HunyuanVideo's `text_encoder`: the language model of LLaVA-Llama-3-8B (vocabulary 128320).
    pub fn llava_llama3_8b() -> Self {
        Self {
            vocab_size: 128_320,
            hidden_size: 4096,
            intermediate_size: 14_336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: Activation::Silu,
        }
    }

    /// Parses a HF `config.json` (both the `rope_theta` and the transformers-5 `rope_parameters`
    /// spellings).
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::invalid("Llama config", e.to_string()))
    }

    /// Checks that the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid("Llama config", reason));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_attention_heads == 0 || self.head_dim == 0 {
            return bad(format!("zero size in {self:?}"));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        Ok(())
    }
}

/// RoPE tables (cos, sin) of shape (seq_len, head_dim / 2) for positions `0..seq_len`, computed
/// like transformers: inverse frequencies and angles in f32, cos/sin of the f32 angle.
fn rope_tables(cfg: &LlamaConfig, seq_len: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let theta = cfg.rope_theta as f32;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / cfg.head_dim as f32)).collect();
    let mut cos = Vec::with_capacity(seq_len * half);
    let mut sin = Vec::with_capacity(seq_len * half);
    for p in 0..seq_len {
        for f in &inv_freq {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (seq_len, half), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (seq_len, half), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Additive causal mask (seq_len, seq_len): 0 on and below the diagonal, −∞ above.
pub(crate) fn causal_mask(seq_len: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> =
        (0..seq_len).flat_map(|i| (0..seq_len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (seq_len, seq_len), device)
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder<'_>, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        let (h, d, b) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        Ok(Self {
            q_proj: linear_b(h, cfg.num_attention_heads * d, b, vb.pp("q_proj"))?,
            k_proj: linear_b(h, cfg.num_key_value_heads * d, b, vb.pp("k_proj"))?,
            v_proj: linear_b(h, cfg.num_key_value_heads * d, b, vb.pp("v_proj"))?,
            o_proj: linear_b(cfg.num_attention_heads * d, h, b, vb.pp("o_proj"))?,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// Repeats each key/value head for its group of query heads: (b, kv, t, d) → (b, kv·n, t, d).
    fn repeat_kv(&self, x: Tensor) -> candle_core::Result<Tensor> {
        let n_rep = self.n_heads / self.n_kv_heads;
        if n_rep == 1 {
            return Ok(x);
        }
        let (b, kv, t, d) = x.dims4()?;
        x.unsqueeze(2)?.expand((b, kv, n_rep, t, d))?.reshape((b, kv * n_rep, t, d))
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let k = self.repeat_kv(k)?;
        let v = self.repeat_kv(v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.n_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder<'_>, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: linear_b(h, i, b, vb.pp("gate_proj"))?,
            up_proj: linear_b(h, i, b, vb.pp("up_proj"))?,
            down_proj: linear_b(i, h, b, vb.pp("down_proj"))?,
            act: cfg.hidden_act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.act.forward(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vb: VarBuilder<'_>, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        Ok(Self {
            input_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.input_layernorm.forward(x)?, cos, sin, mask)?)?;
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?
    }
}

/// A Llama decoder stack without the language-model head.
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: Option<RmsNorm>,
    cfg: LlamaConfig,
}

impl Llama {
    /// Loads every layer and the final norm.
    pub fn new(vb: VarBuilder<'_>, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        Self::new_first_layers(vb, cfg, cfg.num_hidden_layers)
    }

    /// Keeps only the first `keep` layers (and no final norm unless all layers are kept).
    ///
    /// The other tensors are still read once and dropped, so strict loading accepts the full
    /// released checkpoint while the model holds only what [`Llama::forward_hidden`] with
    /// `n_layers <= keep` needs (HunyuanVideo: 30 of 32 layers, ~0.9 GB less in bf16).
    pub fn new_first_layers(vb: VarBuilder<'_>, cfg: &LlamaConfig, keep: usize) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        if keep > cfg.num_hidden_layers {
            candle_core::bail!("cannot keep {keep} layers of a {}-layer Llama", cfg.num_hidden_layers);
        }
        let embed_tokens = embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let mut layers = Vec::with_capacity(keep);
        for i in 0..cfg.num_hidden_layers {
            let layer = DecoderLayer::new(vb.pp("layers").pp(i), cfg)?;
            if i < keep {
                layers.push(layer);
            }
        }
        let norm = rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        let norm = (keep == cfg.num_hidden_layers).then_some(norm);
        Ok(Self { embed_tokens, layers, norm, cfg: cfg.clone() })
    }

    /// Loads `LlamaModel` safetensors (exact names) in `dtype` on `device`, keeping the first
    /// `keep` layers as [`Llama::new_first_layers`] does.
    pub fn load(
        weights: impl WeightSource,
        cfg: &LlamaConfig,
        keep: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        weights::load(weights.into_weight_files()?, dtype, device, |vb| Self::new_first_layers(vb, cfg, keep))
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        self.embed_tokens.embeddings().device()
    }

    /// Number of decoder layers held in memory.
    pub fn loaded_layers(&self) -> usize {
        self.layers.len()
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = ids.dims2().map_err(|_| {
            Error::invalid("token ids", format!("expected shape (batch, seq_len), got {:?}", ids.dims()))
        })?;
        if b == 0 || t == 0 {
            return Err(Error::invalid("token ids", format!("empty batch or sequence: shape {:?}", ids.dims())));
        }
        let values = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        if let Some(bad) = values.iter().find(|&&i| i < 0 || i as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid(
                "token ids",
                format!("id {bad} is outside the vocabulary of {} tokens", self.cfg.vocab_size),
            ));
        }
        Ok((b, t))
    }

    /// Residual stream after the first `n_layers` decoder layers, without the final norm:
    /// `hidden_states[n_layers]` in transformers' numbering (0 = embeddings). `ids` is (batch,
    /// seq_len) of any integer dtype; attention is causal and unpadded, so pass only the valid
    /// (right-padded) tokens.
    pub fn forward_hidden(&self, ids: &Tensor, n_layers: usize) -> Result<Tensor> {
        let (_, t) = self.check_ids(ids)?;
        if n_layers > self.layers.len() {
            return Err(Error::invalid(
                "n_layers",
                format!("{n_layers} layers requested, {} loaded", self.layers.len()),
            ));
        }
        let mut h = self.embed_tokens.forward(&ids.to_dtype(DType::U32)?)?;
        let (cos, sin) = rope_tables(&self.cfg, t, h.dtype(), h.device())?;
        let mask = causal_mask(t, h.device())?;
        for layer in &self.layers[..n_layers] {
            h = layer.forward(&h, &cos, &sin, &mask)?;
        }
        Ok(h)
    }

    /// All hidden states as transformers' `output_hidden_states` returns them: the embeddings,
    /// the output of each layer, and for the last one the final norm applied. Needs the full model.
    pub fn hidden_states(&self, ids: &Tensor) -> Result<Vec<Tensor>> {
        let Some(norm) = &self.norm else {
            return Err(Error::invalid("Llama", "hidden_states needs all layers and the final norm loaded"));
        };
        let (_, t) = self.check_ids(ids)?;
        let mut h = self.embed_tokens.forward(&ids.to_dtype(DType::U32)?)?;
        let (cos, sin) = rope_tables(&self.cfg, t, h.dtype(), h.device())?;
        let mask = causal_mask(t, h.device())?;
        let mut out = vec![h.clone()];
        for layer in &self.layers {
            h = layer.forward(&h, &cos, &sin, &mask)?;
            out.push(h.clone());
        }
        if let Some(last) = out.last_mut() {
            *last = norm.forward(last)?;
        }
        Ok(out)
    }
}
