//! Transformer hyper-parameters (diffusers `config.json`).

use crate::error::{Error, Result};

fn bool_or_int<'de, De: serde::Deserializer<'de>>(d: De) -> std::result::Result<bool, De::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match <Flag as serde::Deserialize>::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
    })
}

/// Transformer hyper-parameters; deserializes a diffusers `config.json`. Missing fields take
/// the diffusers constructor defaults.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Config {
    /// Latent channels of the input.
    pub in_channels: usize,
    /// Latent channels of the output.
    pub out_channels: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Channels per head; `heads × head_dim` is the model width.
    pub attention_head_dim: usize,
    /// Dual-stream blocks.
    pub num_layers: usize,
    /// Single-stream blocks.
    pub num_single_layers: usize,
    /// Blocks of the text token refiner.
    pub num_refiner_layers: usize,
    /// MLP width relative to the model width (blocks only; the text refiner always uses 4).
    pub mlp_ratio: f64,
    /// Spatial patch size of the noisy latents; the clean-history kernels are `(1, p, p)`,
    /// `(2, 2p, 2p)` and `(4, 4p, 4p)` (diffusers hard-codes those for p = 2).
    pub patch_size: usize,
    /// Temporal patch size (only 1 is supported, as in every released checkpoint).
    pub patch_size_t: usize,
    /// Query/key normalization (only `"rms_norm"`).
    pub qk_norm: String,
    /// Whether a distilled-guidance embedder exists.
    #[serde(deserialize_with = "bool_or_int")]
    pub guidance_embeds: bool,
    /// Width of the LLaMA text features.
    pub text_embed_dim: usize,
    /// Width of the CLIP pooled text embedding.
    pub pooled_projection_dim: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Head channels given to the (t, y, x) axes; sums to `attention_head_dim`.
    pub rope_axes_dim: [usize; 3],
    /// HunyuanVideo-I2V conditioning mode; must be `null` for FramePack.
    pub image_condition_type: Option<String>,
    /// Whether SigLIP image features are projected into the context.
    #[serde(deserialize_with = "bool_or_int")]
    pub has_image_proj: bool,
    /// Width of the SigLIP features.
    pub image_proj_dim: usize,
    /// Whether the 1x/2x/4x clean-history embedders exist.
    #[serde(deserialize_with = "bool_or_int")]
    pub has_clean_x_embedder: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            in_channels: 16,
            out_channels: 16,
            num_attention_heads: 24,
            attention_head_dim: 128,
            num_layers: 20,
            num_single_layers: 40,
            num_refiner_layers: 2,
            mlp_ratio: 4.0,
            patch_size: 2,
            patch_size_t: 1,
            qk_norm: "rms_norm".into(),
            guidance_embeds: true,
            text_embed_dim: 4096,
            pooled_projection_dim: 768,
            rope_theta: 256.0,
            rope_axes_dim: [16, 56, 56],
            image_condition_type: None,
            has_image_proj: false,
            image_proj_dim: 1152,
            has_clean_x_embedder: false,
        }
    }
}

impl Config {
    /// The released FramePack checkpoints (`lllyasviel/FramePackI2V_HY` and the F1 model).
    pub fn framepack_13b() -> Self {
        Self { has_image_proj: true, has_clean_x_embedder: true, ..Self::default() }
    }

    /// Model width (`heads × head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Hidden width of the MLPs.
    pub fn mlp_dim(&self) -> usize {
        (self.inner_dim() as f64 * self.mlp_ratio) as usize
    }

    /// Hidden width of the text refiner's MLPs (diffusers does not pass `mlp_ratio` to it).
    pub fn refiner_mlp_dim(&self) -> usize {
        self.inner_dim() * 4
    }

    /// Checks that the configuration describes a model this implementation can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid("transformer config", reason));
        if self.num_attention_heads == 0 || self.attention_head_dim == 0 || !self.attention_head_dim.is_multiple_of(2) {
            return bad(format!(
                "need at least one head and an even head dim, got {} × {}",
                self.num_attention_heads, self.attention_head_dim
            ));
        }
        if self.rope_axes_dim.iter().sum::<usize>() != self.attention_head_dim
            || self.rope_axes_dim.iter().any(|d| !d.is_multiple_of(2))
        {
            return bad(format!(
                "rope_axes_dim {:?} must be even and sum to attention_head_dim {}",
                self.rope_axes_dim, self.attention_head_dim
            ));
        }
        if self.patch_size == 0 || self.patch_size_t != 1 {
            return bad(format!(
                "patch sizes ({}, {}) unsupported: need patch_size_t = 1 and patch_size ≥ 1",
                self.patch_size_t, self.patch_size
            ));
        }
        if self.qk_norm != "rms_norm" {
            return bad(format!("qk_norm `{}` unsupported (only `rms_norm`)", self.qk_norm));
        }
        if let Some(t) = &self.image_condition_type {
            return bad(format!("image_condition_type `{t}` unsupported (FramePack uses none)"));
        }
        if self.in_channels == 0
            || self.out_channels == 0
            || self.mlp_dim() == 0
            || !(self.rope_theta.is_finite() && self.rope_theta > 0.0)
        {
            return bad("channels, mlp width and rope_theta must be positive and finite".into());
        }
        Ok(())
    }
}
