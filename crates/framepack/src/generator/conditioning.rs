//! A job's encoded conditioning.

use candle_core::Tensor;

/// Encoded text of one prompt: LLaMA features and the CLIP pooled vector.
#[derive(Clone, Debug)]
pub struct TextConditioning {
    /// `(1, L, text_embed_dim)` valid tokens only (no padding).
    pub llama: Tensor,
    /// `(1, pooled_projection_dim)`.
    pub pooled: Tensor,
}

/// The conditioning of one job, already encoded except for the images (the job VAE-encodes
/// them in its first section).
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// The start frame, `(1, 3, H, W)` or `(1, 3, 1, H, W)` in `[-1, 1]`, `H` and `W`
    /// multiples of 16 (already bucketed and cropped).
    pub start_image: Tensor,
    /// An optional end frame of the same size (PR #167 style: its latent fills the slot right
    /// after the video's last section; best with the inverted loop).
    pub end_image: Option<Tensor>,
    /// SigLIP features `(1, N, image_proj_dim)`; required iff the transformer has an image
    /// projection.
    pub image_embeds: Option<Tensor>,
    /// One prompt for every section, or one per section in generation order
    /// ([`PromptSchedule::for_sections`](super::PromptSchedule::for_sections)).
    pub text: Vec<TextConditioning>,
}
