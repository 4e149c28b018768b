//! SigLIP vision tower (FramePack's image encoder: google/siglip-so400m-patch14-384 as shipped in
//! lllyasviel/flux_redux_bfl `image_encoder`). FramePack uses `last_hidden_state`, the patch
//! tokens after the post-layernorm: (1, 729, 1152) for the real model.
//!
//! Loads a transformers `SiglipVisionModel` checkpoint with its exact keys (`embeddings.*`,
//! `encoder.layers.N.*`, `post_layernorm.*` and, when `vision_use_head` is set as in the released
//! checkpoint, the attention-pooling head `head.*`). The head is loaded rather than ignored so
//! that strict loading accepts exactly the released names; it costs ~15 M parameters and is only
//! run by [`SiglipVisionModel::pooler_output`].

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::models::kernels::attention::{SelfAttention, attention_merged};
use crate::preprocess::{RgbImage, siglip_pixel_values};
use crate::weights::{self, WeightSource};

/// Hyper-parameters of a SigLIP vision tower (`SiglipVisionConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SiglipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch size (the patch embedding is a stride-`patch_size` convolution).
    pub patch_size: usize,
    /// MLP activation (`gelu_pytorch_tanh`).
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Whether the checkpoint has the attention-pooling head (`head.*`).
    #[serde(default = "default_true")]
    pub vision_use_head: bool,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> Activation {
    Activation::GeluPytorchTanh
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}

impl SiglipVisionConfig {
    /// google/siglip-so400m-patch14-384 (27 layers, width 1152, 384² input, 729 tokens), with head.
    pub fn so400m_patch14_384() -> Self {
        Self {
            hidden_size: 1152,
            intermediate_size: 4304,
            num_hidden_layers: 27,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 384,
            patch_size: 14,
            hidden_act: Activation::GeluPytorchTanh,
            layer_norm_eps: 1e-6,
            vision_use_head: true,
        }
    }

    /// Parses a HF `config.json` (a `SiglipVisionConfig`, or a full `SiglipConfig` whose
    /// `vision_config` is used).
    pub fn from_json(json: &str) -> Result<Self> {
        let mut v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::invalid("SigLIP config", e.to_string()))?;
        if let Some(inner) = v.get_mut("vision_config") {
            v = inner.take();
        }
        let cfg: Self = serde_json::from_value(v).map_err(|e| Error::invalid("SigLIP config", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Patches per side (the convolution drops a remainder, as PyTorch's does).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of output tokens.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Checks that the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.hidden_size == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(
                "SigLIP config",
                format!("hidden_size {} is not a multiple of {} heads", self.hidden_size, self.num_attention_heads),
            ));
        }
        if self.patch_size == 0 || self.image_size < self.patch_size || self.num_channels == 0 {
            return Err(Error::invalid(
                "SigLIP config",
                format!("image_size {} / patch_size {} give no patches", self.image_size, self.patch_size),
            ));
        }
        Ok(())
    }
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder<'_>, cfg: &SiglipVisionConfig) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(vb: VarBuilder<'_>, cfg: &SiglipVisionConfig) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(vb.pp("self_attn"), cfg.hidden_size, cfg.num_attention_heads)?,
            layer_norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
        })
    }
}

impl Module for EncoderLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?, None)?)?;
        &h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?
    }
}

/// Multihead attention-pooling head (`SiglipMultiheadAttentionPoolingHead`).
struct PoolingHead {
    probe: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    layernorm: LayerNorm,
    mlp: Mlp,
    n_heads: usize,
}

impl PoolingHead {
    fn new(vb: VarBuilder<'_>, cfg: &SiglipVisionConfig) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let attn = vb.pp("attention");
        Ok(Self {
            probe: vb.get((1, 1, h), "probe")?,
            in_proj_weight: attn.get((3 * h, h), "in_proj_weight")?,
            in_proj_bias: attn.get(3 * h, "in_proj_bias")?,
            out_proj: linear(h, h, attn.pp("out_proj"))?,
            layernorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("layernorm"))?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
            n_heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, h) = x.dims3()?;
        let proj = |i: usize, y: &Tensor| -> candle_core::Result<Tensor> {
            let w = self.in_proj_weight.narrow(0, i * h, h)?;
            let bias = self.in_proj_bias.narrow(0, i * h, h)?;
            Linear::new(w, Some(bias)).forward(y)
        };
        let probe = self.probe.broadcast_as((b, 1, h))?.contiguous()?;
        let (q, k, v) = (proj(0, &probe)?, proj(1, x)?, proj(2, x)?);
        let pooled = self.out_proj.forward(&attention_merged(&q, &k, &v, self.n_heads, None)?)?;
        let out = (&pooled + self.mlp.forward(&self.layernorm.forward(&pooled)?)?)?;
        out.squeeze(1)
    }
}

/// SigLIP vision transformer (`SiglipVisionModel`).
pub struct SiglipVisionModel {
    /// Patch-embedding convolution weight flattened to (hidden, channels·patch²), and its bias.
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    head: Option<PoolingHead>,
    cfg: SiglipVisionConfig,
}

impl SiglipVisionModel {
    /// Loads the tower from a `SiglipVisionModel` checkpoint root.
    pub fn new(vb: VarBuilder<'_>, cfg: &SiglipVisionConfig) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let emb = vb.pp("embeddings");
        let patch = emb.pp("patch_embedding");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            patch_weight: patch
                .get((cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size), "weight")?
                .flatten_from(1)?,
            patch_bias: patch.get(cfg.hidden_size, "bias")?,
            position_embedding: embedding(cfg.num_patches(), cfg.hidden_size, emb.pp("position_embedding"))?,
            layers,
            post_layernorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
            head: if cfg.vision_use_head { Some(PoolingHead::new(vb.pp("head"), cfg)?) } else { None },
            cfg: cfg.clone(),
        })
    }

    /// Loads `SiglipVisionModel` safetensors (exact names, head included when
    /// `cfg.vision_use_head`) in `dtype` on `device`.
    pub fn load(weights: impl WeightSource, cfg: &SiglipVisionConfig, dtype: DType, device: &Device) -> Result<Self> {
        weights::load(weights.into_weight_files()?, dtype, device, |vb| Self::new(vb, cfg))
    }

    /// The model's configuration.
    pub fn config(&self) -> &SiglipVisionConfig {
        &self.cfg
    }

    /// The stride-`patch` convolution as a matmul over non-overlapping patches (row-major patch
    /// order; a remainder beyond the last full patch is dropped, as the convolution does).
    fn embed_patches(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        let x = x.narrow(2, 0, g * p)?.narrow(3, 0, g * p)?;
        let patches = x.reshape((b, c, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((b, g * g, c * p * p))?;
        Linear::new(self.patch_weight.clone(), Some(self.patch_bias.clone())).forward(&patches)
    }

    /// `last_hidden_state`: (batch, num_patches, hidden) after the post-layernorm, from
    /// `pixel_values` (batch, channels, image_size, image_size) normalised to [−1, 1].
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let s = self.cfg.image_size;
        match pixel_values.dims() {
            &[b, c, h, w] if b > 0 && c == self.cfg.num_channels && h == s && w == s => {}
            d => {
                return Err(Error::invalid(
                    "pixel values",
                    format!("expected shape (batch, {}, {s}, {s}), got {d:?}", self.cfg.num_channels),
                ));
            }
        }
        let x = pixel_values.to_dtype(self.position_embedding.embeddings().dtype())?;
        let x = self.embed_patches(&x)?;
        let mut h = x.broadcast_add(&self.position_embedding.embeddings().unsqueeze(0)?)?.contiguous()?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(self.post_layernorm.forward(&h)?)
    }

    /// FramePack's image features for an RGB image (the bucket-cropped input frame): SigLIP
    /// preprocessing (bicubic squash to `image_size`², [−1, 1]) and [`SiglipVisionModel::forward`].
    pub fn encode_image(&self, img: &RgbImage) -> Result<Tensor> {
        let device = self.position_embedding.embeddings().device();
        self.forward(&siglip_pixel_values(img, self.cfg.image_size, device)?)
    }

    /// `pooler_output` of the attention-pooling head (batch, hidden), from `last_hidden_state`.
    /// FramePack does not use it.
    pub fn pooler_output(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        let head = self
            .head
            .as_ref()
            .ok_or_else(|| Error::invalid("SigLIP", "this model was loaded without the pooling head"))?;
        Ok(head.forward(last_hidden_state)?)
    }
}
