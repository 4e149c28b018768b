//! The packed HunyuanVideo DiT of FramePack (diffusers `HunyuanVideoFramepackTransformer3DModel`,
//! original `HunyuanVideoTransformer3DModelPacked`).
//!
//! Weight names are the diffusers checkpoint keys. One forward pass embeds the noisy latents and
//! the clean history (1x, 2x, 4x), packs them as `[4x | 2x | 1x clean | noisy]` with matching 3-D
//! RoPE tables, builds the context `[image tokens | refined text]`, runs the dual- and
//! single-stream blocks and returns the flow velocity of the noisy latents only.
//!
//! Numerics follow the reference: weights and activations in the VarBuilder's dtype, while the
//! q/k RMSNorm, RoPE, attention scores and softmax, and the final `proj_out` run in f32. The
//! timestep and guidance are embedded exactly as given; rounding `σ·1000` to bf16 is the
//! sampler's job. Text masks must be a prefix of ones per row: batch 1 crops the text to its
//! valid tokens, larger batches crop to the longest and mask the rest like diffusers.

mod layers;
mod rope;
mod streaming;

pub use streaming::{MemoryPlan, Residency};

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::models::linear::{Linear, linear};
use layers::{DualBlock, Mlp, PatchEmbed, PlainLayerNorm, SingleBlock, TokenRefiner};

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

/// Named inputs of one forward pass (diffusers keyword names). Index tensors are integer (or
/// float) tensors of shape `(n)`, shared by the batch, or `(B, n)` per sample. Each history
/// group is optional, but its latents and indices come together.
#[derive(Debug, Clone, Copy)]
pub struct TransformerInputs<'a> {
    /// Noisy latents `(B, C, T, H, W)`; `H`, `W` multiples of the patch size.
    pub hidden_states: &'a Tensor,
    /// Timestep `σ·1000` as given (no rounding here), `(B)` or `(1)`.
    pub timestep: &'a Tensor,
    /// LLaMA features `(B, L, text_embed_dim)`, valid tokens first.
    pub encoder_hidden_states: &'a Tensor,
    /// `(B, L)`: 1 for the valid prefix of each row, then 0.
    pub encoder_attention_mask: &'a Tensor,
    /// CLIP pooled text embedding `(B, pooled_projection_dim)`.
    pub pooled_projections: &'a Tensor,
    /// SigLIP features `(B, N_img, image_proj_dim)`; required iff the model has an image projection.
    pub image_embeds: Option<&'a Tensor>,
    /// Distilled guidance `gs·1000`, `(B)` or `(1)`; required iff the model has a guidance embedder.
    pub guidance: Option<&'a Tensor>,
    /// Frame indices of the noisy latents (`T` of them).
    pub indices_latents: &'a Tensor,
    /// Clean 1x latents `(B, C, T1, H, W)`.
    pub latents_clean: Option<&'a Tensor>,
    /// Frame indices of the clean 1x latents.
    pub indices_latents_clean: Option<&'a Tensor>,
    /// 2x-compressed history latents `(B, C, T2, H, W)`.
    pub latents_history_2x: Option<&'a Tensor>,
    /// Frame indices of the 2x history.
    pub indices_latents_history_2x: Option<&'a Tensor>,
    /// 4x-compressed history latents `(B, C, T4, H, W)`.
    pub latents_history_4x: Option<&'a Tensor>,
    /// Frame indices of the 4x history.
    pub indices_latents_history_4x: Option<&'a Tensor>,
}

impl<'a> TransformerInputs<'a> {
    /// The required inputs, with no image features, guidance or history; set those with struct
    /// update syntax (`TransformerInputs { guidance: Some(&g), ..TransformerInputs::new(…) }`).
    pub fn new(
        hidden_states: &'a Tensor,
        timestep: &'a Tensor,
        encoder_hidden_states: &'a Tensor,
        encoder_attention_mask: &'a Tensor,
        pooled_projections: &'a Tensor,
        indices_latents: &'a Tensor,
    ) -> Self {
        Self {
            hidden_states,
            timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            pooled_projections,
            image_embeds: None,
            guidance: None,
            indices_latents,
            latents_clean: None,
            indices_latents_clean: None,
            latents_history_2x: None,
            indices_latents_history_2x: None,
            latents_history_4x: None,
            indices_latents_history_4x: None,
        }
    }
}

/// The packed image-token sequence of one forward pass with its rotary tables.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `(B, N, D)` tokens in the order `[4x | 2x | 1x clean | noisy]`.
    pub tokens: Tensor,
    /// `(N, head_dim/2)` (or `(B, N, head_dim/2)` for per-sample indices) f32 cosines, one per
    /// channel pair, in token order.
    pub cos: Tensor,
    /// Sines, same layout as `cos`.
    pub sin: Tensor,
    /// Number of noisy tokens (the last ones of `tokens`).
    pub noisy_tokens: usize,
}

/// Receives named intermediate tensors during [`Transformer::forward_traced`]. Names follow the
/// reference fixtures: `x_embedder`, `clean_x_embedder.{proj,proj_2x,proj_4x}`, `packed_tokens`,
/// `rope_cos`, `rope_sin`, `temb`, `context_embedder.temb`, `context_embedder`,
/// `image_projection`, `transformer_blocks.{i}.{hidden,encoder}`,
/// `single_transformer_blocks.{i}.{hidden,encoder}`, `norm_out`, `proj_out`.
pub type Trace<'a> = dyn FnMut(&str, &Tensor) + 'a;

#[derive(Debug, Clone)]
struct CleanEmbedder {
    proj: PatchEmbed,
    proj_2x: PatchEmbed,
    proj_4x: PatchEmbed,
}

/// The packed HunyuanVideo transformer.
#[derive(Debug, Clone)]
pub struct Transformer {
    x_embedder: PatchEmbed,
    clean_x_embedder: Option<CleanEmbedder>,
    context_embedder: TokenRefiner,
    image_projection: Option<Mlp>,
    timestep_embedder: Mlp,
    guidance_embedder: Option<Mlp>,
    text_embedder: Mlp,
    /// `None`: streamed from `stream` for every use.
    transformer_blocks: Vec<Option<DualBlock>>,
    single_transformer_blocks: Vec<Option<SingleBlock>>,
    stream: Option<streaming::Streamer>,
    norm_out: Linear,
    proj_out: Linear,
    ln: PlainLayerNorm,
    cfg: Config,
    dtype: DType,
    device: Device,
}

/// Checked scalar and text inputs: per-sample timesteps, guidance values and valid text lengths.
struct StepConditioning {
    timestep: Vec<f32>,
    guidance: Option<Vec<f32>>,
    lens: Vec<usize>,
}

/// Frame indices of one group: one row shared by the batch, or one row per sample.
struct Frames(Vec<Vec<f32>>);

impl Frames {
    fn row(&self, b: usize) -> &[f32] {
        if self.0.len() == 1 { &self.0[0] } else { &self.0[b] }
    }
}

fn read_indices(t: &Tensor, what: &'static str, batch: usize, expected: usize) -> Result<Frames> {
    let rows: Vec<Vec<f64>> = match t.rank() {
        1 => vec![t.to_dtype(DType::F64)?.to_vec1()?],
        2 => t.to_dtype(DType::F64)?.to_vec2()?,
        r => return Err(Error::invalid(what, format!("expected shape (n) or (B, n), got rank {r}"))),
    };
    if rows.len() != 1 && rows.len() != batch {
        return Err(Error::invalid(what, format!("{} rows for a batch of {batch}", rows.len())));
    }
    let rows: Vec<Vec<f32>> = rows.into_iter().map(|r| r.into_iter().map(|v| v as f32).collect()).collect();
    if let Some(r) = rows.iter().find(|r| r.len() != expected) {
        return Err(Error::invalid(
            what,
            format!("expected {expected} indices (one per latent frame), got {}", r.len()),
        ));
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::invalid(what, "indices must be finite"));
    }
    let shared = rows.iter().all(|r| *r == rows[0]);
    Ok(Frames(if shared { vec![rows[0].clone()] } else { rows }))
}

fn read_scalars(t: &Tensor, what: &'static str, batch: usize) -> Result<Vec<f32>> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    match v.len() {
        1 => Ok(vec![v[0]; batch]),
        n if n == batch => Ok(v),
        n => Err(Error::invalid(what, format!("expected {batch} values (one per sample), got {n}"))),
    }
}

fn valid_lengths(mask: &Tensor, batch: usize, len: usize) -> Result<Vec<usize>> {
    let what = "encoder_attention_mask";
    if mask.dims() != [batch, len] {
        return Err(Error::invalid(what, format!("expected shape [{batch}, {len}], got {:?}", mask.dims())));
    }
    let rows: Vec<Vec<f32>> = mask.to_dtype(DType::F32)?.to_vec2()?;
    rows.iter()
        .enumerate()
        .map(|(b, row)| {
            let n = row.iter().take_while(|&&v| v != 0.0).count();
            if row[n..].iter().any(|&v| v != 0.0) || row[..n].iter().any(|&v| v != 1.0) {
                return Err(Error::invalid(what, format!("row {b} is not a prefix of ones followed by zeros")));
            }
            if n == 0 {
                return Err(Error::invalid(what, format!("row {b} has no valid text token")));
            }
            Ok(n)
        })
        .collect()
}

impl Transformer {
    /// Builds the model from diffusers-named weights.
    pub fn new(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Self::build(vb, cfg, usize::MAX, None)
    }

    /// Loads the model from safetensors files (strict names and shapes, see
    /// [`weights::load`](crate::weights::load)) in `dtype` on `device`. With
    /// [`Residency::Streamed`], the blocks past [`MemoryPlan::resident_blocks`] stay in the
    /// memory-mapped files and are moved to the device for every use.
    pub fn load<P: AsRef<std::path::Path>>(
        paths: &[P],
        cfg: &Config,
        dtype: DType,
        device: &Device,
        residency: Residency,
    ) -> Result<Self> {
        let files = crate::weights::WeightFiles::open(paths)?;
        match residency {
            Residency::Resident => crate::weights::load(files, dtype, device, |vb| Self::new(vb, cfg)),
            Residency::Streamed { .. } => {
                let plan = MemoryPlan::new(cfg, dtype, residency)?;
                let vb = crate::weights::on_demand(files, dtype, device, |vb| Self::new(vb, cfg))?;
                let stream = streaming::Streamer {
                    vb: vb.clone(),
                    dim: cfg.inner_dim(),
                    heads: cfg.num_attention_heads,
                    mlp: cfg.mlp_dim(),
                };
                Ok(Self::build(vb, cfg, plan.resident_blocks, Some(stream))?)
            }
        }
    }

    /// Builds the model with its first `resident` blocks loaded; the others stream from `stream`.
    fn build(
        vb: VarBuilder,
        cfg: &Config,
        resident: usize,
        stream: Option<streaming::Streamer>,
    ) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let dim = cfg.inner_dim();
        let heads = cfg.num_attention_heads;
        let mlp = cfg.mlp_dim();
        let (c, p) = (cfg.in_channels, cfg.patch_size);
        let clean_x_embedder = if cfg.has_clean_x_embedder {
            let vb = vb.pp("clean_x_embedder");
            Some(CleanEmbedder {
                proj: PatchEmbed::new(vb.pp("proj"), c, dim, [1, p, p])?,
                proj_2x: PatchEmbed::new(vb.pp("proj_2x"), c, dim, [2, 2 * p, 2 * p])?,
                proj_4x: PatchEmbed::new(vb.pp("proj_4x"), c, dim, [4, 4 * p, 4 * p])?,
            })
        } else {
            None
        };
        let tte = vb.pp("time_text_embed");
        let proj_out = linear(dim, cfg.out_channels * p * p, vb.pp("proj_out"))?;
        let proj_out = Linear::new(
            proj_out.weight().to_dtype(DType::F32)?,
            proj_out.bias().map(|b| b.to_dtype(DType::F32)).transpose()?,
        );
        Ok(Self {
            x_embedder: PatchEmbed::new(vb.pp("x_embedder.proj"), c, dim, [1, p, p])?,
            clean_x_embedder,
            context_embedder: TokenRefiner::new(
                vb.pp("context_embedder"),
                cfg.text_embed_dim,
                dim,
                heads,
                cfg.refiner_mlp_dim(),
                cfg.num_refiner_layers,
            )?,
            image_projection: if cfg.has_image_proj {
                Some(Mlp::image_projection(vb.pp("image_projection"), cfg.image_proj_dim, dim)?)
            } else {
                None
            },
            timestep_embedder: Mlp::new(tte.pp("timestep_embedder"), layers::SINUSOID_DIM, dim)?,
            guidance_embedder: if cfg.guidance_embeds {
                Some(Mlp::new(tte.pp("guidance_embedder"), layers::SINUSOID_DIM, dim)?)
            } else {
                None
            },
            text_embedder: Mlp::new(tte.pp("text_embedder"), cfg.pooled_projection_dim, dim)?,
            transformer_blocks: (0..cfg.num_layers)
                .map(|i| {
                    (i < resident)
                        .then(|| DualBlock::new(vb.pp("transformer_blocks").pp(i), dim, heads, mlp))
                        .transpose()
                })
                .collect::<candle_core::Result<_>>()?,
            single_transformer_blocks: (0..cfg.num_single_layers)
                .map(|i| {
                    (cfg.num_layers + i < resident)
                        .then(|| SingleBlock::new(vb.pp("single_transformer_blocks").pp(i), dim, heads, mlp))
                        .transpose()
                })
                .collect::<candle_core::Result<_>>()?,
            stream,
            norm_out: linear(dim, 2 * dim, vb.pp("norm_out.linear"))?,
            proj_out,
            ln: PlainLayerNorm::new(dim, vb.dtype(), vb.device())?,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Weight and activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn input(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    fn check_latents(&self, t: &Tensor, what: &'static str, b: usize, h: usize, w: usize) -> Result<usize> {
        let dims = t.dims();
        let c = self.cfg.in_channels;
        if dims.len() != 5 || dims[0] != b || dims[1] != c || dims[3] != h || dims[4] != w || dims[2] == 0 {
            return Err(Error::invalid(
                what,
                format!("expected shape [{b}, {c}, T, {h}, {w}] with T ≥ 1, got {dims:?}"),
            ));
        }
        Ok(dims[2])
    }

    /// Embeds the noisy latents and the history groups and packs them, with their RoPE tables,
    /// as `[4x | 2x | 1x clean | noisy]`.
    pub fn pack(&self, inputs: &TransformerInputs<'_>) -> Result<Packed> {
        self.pack_traced(inputs, &mut |_, _| {})
    }

    /// `(B, T, H, W)` of the noisy latents, checked against the config.
    fn latent_shape(&self, hidden_states: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let dims = hidden_states.dims();
        let p = self.cfg.patch_size;
        let c = self.cfg.in_channels;
        if dims.len() != 5
            || dims[0] == 0
            || dims[1] != c
            || dims[2] == 0
            || !dims[3].is_multiple_of(p)
            || !dims[4].is_multiple_of(p)
            || dims[3] == 0
            || dims[4] == 0
        {
            return Err(Error::invalid(
                "hidden_states",
                format!("expected shape [B ≥ 1, {c}, T ≥ 1, H, W] with H, W positive multiples of {p}, got {dims:?}"),
            ));
        }
        Ok((dims[0], dims[2], dims[3], dims[4]))
    }

    /// Checks the conditioning inputs against the config and the batch size.
    fn conditioning(&self, inputs: &TransformerInputs<'_>, b: usize) -> Result<StepConditioning> {
        let cfg = &self.cfg;
        let timestep = read_scalars(inputs.timestep, "timestep", b)?;
        let guidance = match (&self.guidance_embedder, inputs.guidance) {
            (Some(_), Some(g)) => Some(read_scalars(g, "guidance", b)?),
            (Some(_), None) => return Err(Error::invalid("guidance", "required: the model has a guidance embedder")),
            (None, Some(_)) => return Err(Error::invalid("guidance", "given, but the model has no guidance embedder")),
            (None, None) => None,
        };
        let pooled = inputs.pooled_projections;
        if pooled.dims() != [b, cfg.pooled_projection_dim] {
            return Err(Error::invalid(
                "pooled_projections",
                format!("expected shape [{b}, {}], got {:?}", cfg.pooled_projection_dim, pooled.dims()),
            ));
        }
        let text = inputs.encoder_hidden_states;
        let dims = text.dims();
        if dims.len() != 3 || dims[0] != b || dims[2] != cfg.text_embed_dim {
            return Err(Error::invalid(
                "encoder_hidden_states",
                format!("expected shape [{b}, L, {}], got {dims:?}", cfg.text_embed_dim),
            ));
        }
        let lens = valid_lengths(inputs.encoder_attention_mask, b, dims[1])?;
        match (&self.image_projection, inputs.image_embeds) {
            (Some(_), Some(img)) => {
                let d = img.dims();
                if d.len() != 3 || d[0] != b || d[2] != cfg.image_proj_dim {
                    return Err(Error::invalid(
                        "image_embeds",
                        format!("expected shape [{b}, N, {}], got {d:?}", cfg.image_proj_dim),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(Error::invalid("image_embeds", "required: the model has an image projection"));
            }
            (None, Some(_)) => {
                return Err(Error::invalid("image_embeds", "given, but the model has no image projection"));
            }
            (None, None) => {}
        }
        Ok(StepConditioning { timestep, guidance, lens })
    }

    fn pack_traced(&self, inputs: &TransformerInputs<'_>, trace: &mut Trace<'_>) -> Result<Packed> {
        let p = self.cfg.patch_size;
        let (b, t, h, w) = self.latent_shape(inputs.hidden_states)?;
        let (hp, wp) = (h / p, w / p);

        let noisy = self.x_embedder.forward(&self.input(inputs.hidden_states)?)?;
        trace("x_embedder", &noisy);
        let noisy_tokens = noisy.dim(1)?;

        struct Group {
            tokens: Tensor,
            frames: Frames,
            pool: usize,
        }
        let mut groups = Vec::with_capacity(4);
        let history = [
            (
                inputs.latents_history_4x,
                inputs.indices_latents_history_4x,
                "latents_history_4x",
                "indices_latents_history_4x",
                4usize,
            ),
            (
                inputs.latents_history_2x,
                inputs.indices_latents_history_2x,
                "latents_history_2x",
                "indices_latents_history_2x",
                2,
            ),
            (inputs.latents_clean, inputs.indices_latents_clean, "latents_clean", "indices_latents_clean", 1),
        ];
        for (latents, indices, what, what_idx, pool) in history {
            let (latents, indices) = match (latents, indices) {
                (None, None) => continue,
                (Some(l), Some(i)) => (l, i),
                (Some(_), None) => return Err(Error::invalid(what_idx, format!("missing while {what} is given"))),
                (None, Some(_)) => return Err(Error::invalid(what, format!("missing while {what_idx} is given"))),
            };
            let Some(embedders) = &self.clean_x_embedder else {
                return Err(Error::invalid(what, "this model has no clean_x_embedder (has_clean_x_embedder = false)"));
            };
            let n = self.check_latents(latents, what, b, h, w)?;
            let frames = read_indices(indices, what_idx, b, n)?;
            let (embedder, name) = match pool {
                4 => (&embedders.proj_4x, "clean_x_embedder.proj_4x"),
                2 => (&embedders.proj_2x, "clean_x_embedder.proj_2x"),
                _ => (&embedders.proj, "clean_x_embedder.proj"),
            };
            let tokens = embedder.forward(&self.input(latents)?)?;
            trace(name, &tokens);
            groups.push(Group { tokens, frames, pool });
        }
        groups.push(Group {
            tokens: noisy,
            frames: read_indices(inputs.indices_latents, "indices_latents", b, t)?,
            pool: 1,
        });

        let per_sample = groups.iter().any(|g| g.frames.0.len() > 1);
        let tables_for = |sample: usize| -> candle_core::Result<(Tensor, Tensor)> {
            let mut cos = Vec::with_capacity(groups.len());
            let mut sin = Vec::with_capacity(groups.len());
            for g in &groups {
                let spec = rope::RopeGroup { frames: g.frames.row(sample), height: hp, width: wp, pool: g.pool };
                let (c, s) = rope::group_tables(&spec, self.cfg.rope_theta, self.cfg.rope_axes_dim, &self.device)?;
                cos.push(c);
                sin.push(s);
            }
            Ok((Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?))
        };
        let (cos, sin) = if per_sample {
            let (cos, sin): (Vec<_>, Vec<_>) =
                (0..b).map(tables_for).collect::<candle_core::Result<Vec<_>>>()?.into_iter().unzip();
            (Tensor::stack(&cos, 0)?, Tensor::stack(&sin, 0)?)
        } else {
            tables_for(0)?
        };
        let tokens: Vec<Tensor> = groups.into_iter().map(|g| g.tokens).collect();
        let tokens = Tensor::cat(&tokens, 1)?;
        trace("packed_tokens", &tokens);
        trace("rope_cos", &cos);
        trace("rope_sin", &sin);
        Ok(Packed { tokens, cos, sin, noisy_tokens })
    }

    /// Runs the model; returns the flow velocity `(B, out_channels, T, H, W)` in f32.
    pub fn forward(&self, inputs: &TransformerInputs<'_>) -> Result<Tensor> {
        self.forward_impl(inputs, &mut |_, _| {}, None, false)
    }

    /// [`Transformer::forward`] that reports named intermediate tensors to `trace` (see [`Trace`]); the
    /// last block then also computes the outputs of the tokens the model discards, to report them.
    pub fn forward_traced(&self, inputs: &TransformerInputs<'_>, trace: &mut Trace<'_>) -> Result<Tensor> {
        self.forward_impl(inputs, trace, None, true)
    }

    /// [`Transformer::forward`] with TeaCache: when the block-0 modulated image tokens
    /// changed little since the last computed step, the 60 blocks are skipped and the cached
    /// image-token residual is added instead. `cache` carries the state across the steps of one
    /// section; [`TeaCache::reset`] it (or make a new one) for every section.
    pub fn forward_with_cache(&self, inputs: &TransformerInputs<'_>, cache: &mut TeaCache) -> Result<Tensor> {
        self.forward_impl(inputs, &mut |_, _| {}, Some(cache), false)
    }

    fn forward_impl(
        &self,
        inputs: &TransformerInputs<'_>,
        trace: &mut Trace<'_>,
        mut cache: Option<&mut TeaCache>,
        traced: bool,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, h, w) = self.latent_shape(inputs.hidden_states)?;
        let StepConditioning { timestep, guidance, lens } = self.conditioning(inputs, b)?;
        let packed = self.pack_traced(inputs, trace)?;

        let t_sin = layers::timestep_sinusoid(&timestep, &self.device)?.to_dtype(self.dtype)?;
        let pooled = self.input(inputs.pooled_projections)?;
        let mut temb = (self.timestep_embedder.forward(&t_sin)? + self.text_embedder.forward(&pooled)?)?;
        if let (Some(embedder), Some(g)) = (&self.guidance_embedder, guidance) {
            let g_sin = layers::timestep_sinusoid(&g, &self.device)?.to_dtype(self.dtype)?;
            temb = (temb + embedder.forward(&g_sin)?)?;
        }
        trace("temb", &temb);

        let text_len = lens.iter().copied().max().unwrap_or(0);
        let text = self.input(&inputs.encoder_hidden_states.narrow(1, 0, text_len)?)?;
        let (ctx_temb, text) = self.context_embedder.forward(&text, &lens, &t_sin)?;
        trace("context_embedder.temb", &ctx_temb);
        trace("context_embedder", &text);

        let (context, image_tokens) = match (&self.image_projection, inputs.image_embeds) {
            (Some(proj), Some(img)) => {
                let img = proj.forward(&self.input(img)?)?;
                trace("image_projection", &img);
                let n = img.dim(1)?;
                (Tensor::cat(&[&img, &text], 1)?, n)
            }
            _ => (text, 0),
        };

        let n_img = packed.tokens.dim(1)?;
        let n_ctx = context.dim(1)?;
        let key_bias = if lens.iter().all(|&n| n == text_len) {
            None
        } else {
            let total = n_img + n_ctx;
            let v: Vec<f32> = lens
                .iter()
                .flat_map(|&n| {
                    (0..total).map(move |j| if j < n_img + image_tokens + n { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            Some(Tensor::from_vec(v, (b, 1, 1, total), &self.device)?)
        };
        let rope = rope::with_identity_rows(&packed.cos, &packed.sin, n_ctx)?;

        let (mut x, mut c) = (packed.tokens, context);
        let noisy = n_img - packed.noisy_tokens..n_img;
        let mut walk = streaming::BlockWalk::new(self);
        let compute = match &cache {
            None => true,
            Some(_) if self.transformer_blocks.is_empty() => true,
            Some(_) => false,
        };
        let compute = compute || {
            let cache = cache.as_deref_mut().expect("checked above");
            let signal = walk.dual(0)?.modulated_input(&x, &temb)?;
            cache.should_compute(signal)?
        };
        let x = if compute {
            let before = cache.is_some().then(|| x.narrow(1, noisy.start, noisy.len())).transpose()?;
            for i in 0..self.transformer_blocks.len() {
                (x, c) = walk.dual(i)?.forward(&x, &c, &temb, &rope, key_bias.as_ref())?;
                trace(&format!("transformer_blocks.{i}.hidden"), &x);
                trace(&format!("transformer_blocks.{i}.encoder"), &c);
            }
            // Only the noisy tokens' outputs of the last block are used: unless every intermediate
            // is traced, it computes those alone.
            let blocks = self.single_transformer_blocks.len();
            let prune = !traced && crate::models::cpu::enabled("prune");
            let last = if prune { blocks.saturating_sub(1) } else { blocks };
            for i in 0..last {
                (x, c) = walk.single(i)?.forward(&x, &c, &temb, &rope, key_bias.as_ref())?;
                trace(&format!("single_transformer_blocks.{i}.hidden"), &x);
                trace(&format!("single_transformer_blocks.{i}.encoder"), &c);
            }
            let x = if last < blocks {
                walk.single(last)?.forward_image_tokens(&x, &c, &temb, &rope, key_bias.as_ref(), noisy.clone())?
            } else {
                x.narrow(1, noisy.start, noisy.len())?
            };
            if let (Some(cache), Some(before)) = (cache, before) {
                cache.residual = Some((&x - &before)?);
            }
            x
        } else {
            let cache = cache.expect("a skipped step has a cache");
            let residual = cache.residual.as_ref().expect("should_compute never skips without a residual");
            let x = x.narrow(1, noisy.start, noisy.len())?;
            if residual.dims() != x.dims() {
                return Err(Error::invalid(
                    "teacache",
                    format!(
                        "cached residual {:?} does not match the noisy tokens {:?} (reset the cache for every section)",
                        residual.dims(),
                        x.dims()
                    ),
                ));
            }
            (&x + residual)?
        };

        let mods = self.norm_out.forward(&temb.silu()?)?.unsqueeze(1)?.chunk(2, D::Minus1)?;
        let x = self.ln.modulated(&x, &mods[1], &mods[0])?;
        trace("norm_out", &x);
        let x = self.proj_out.forward(&x.to_dtype(DType::F32)?)?;
        trace("proj_out", &x);

        let (p, co) = (cfg.patch_size, cfg.out_channels);
        Ok(x.reshape(vec![b, t, h / p, w / p, co, p, p])?
            .permute(vec![0, 4, 1, 2, 5, 3, 6])?
            .reshape((b, co, t, h, w))?)
    }
}

/// TeaCache's rescaling polynomial for HunyuanVideo, highest power first:
/// `P(x) = 733.226126x⁴ − 401.131952x³ + 67.5869174x² − 3.149878x + 0.0961237896`.
pub const TEACACHE_COEFFICIENTS: [f64; 5] = [733.226126, -401.131952, 67.5869174, -3.149878, 0.0961237896];

/// TeaCache state for the steps of one section (FramePack's flavour: the relative L1 change of
/// block 0's modulated image tokens, rescaled by a fixed polynomial, accumulated until it passes
/// the threshold).
///
/// The first and the last step always compute. Every other step adds
/// `P(mean|m − m_prev| / mean|m_prev|)` of the block-0 modulated image tokens `m` to an
/// accumulator and computes only once it reaches the threshold (then resets it); a skipped step
/// reuses the image-token residual of the last computed step. `m_prev` is updated every step.
#[derive(Debug, Clone)]
pub struct TeaCache {
    threshold: f64,
    steps: usize,
    count: usize,
    accumulated: f64,
    previous: Option<Tensor>,
    residual: Option<Tensor>,
    computed: usize,
    skipped: usize,
}

impl TeaCache {
    /// A cache for `steps` model calls per section with the given threshold (FramePack: 0.15;
    /// 0.1 ≈ 1.6× faster, 0.15 ≈ 2.1×).
    pub fn new(threshold: f64, steps: usize) -> Result<Self> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(Error::invalid("teacache threshold", format!("must be a positive number, got {threshold}")));
        }
        if steps == 0 {
            return Err(Error::invalid("teacache steps", "must be at least 1"));
        }
        Ok(Self {
            threshold,
            steps,
            count: 0,
            accumulated: 0.0,
            previous: None,
            residual: None,
            computed: 0,
            skipped: 0,
        })
    }

    /// Forgets everything (call at the start of every section).
    pub fn reset(&mut self) {
        *self = Self { computed: 0, skipped: 0, ..Self::new(self.threshold, self.steps).expect("validated") };
    }

    /// The threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Model calls that ran the blocks since the last reset.
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// Model calls that reused the cached residual since the last reset.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The rescaling polynomial [`TEACACHE_COEFFICIENTS`] at `x`.
    pub fn rescale(x: f64) -> f64 {
        TEACACHE_COEFFICIENTS.iter().fold(0.0, |acc, c| acc * x + c)
    }

    fn should_compute(&mut self, modulated: Tensor) -> Result<bool> {
        let modulated = modulated.to_dtype(DType::F32)?;
        let first_or_last = self.count == 0 || self.count == self.steps - 1;
        let compute = match (&self.previous, &self.residual) {
            (Some(prev), Some(_)) if !first_or_last && prev.dims() == modulated.dims() => {
                let num = (&modulated - prev)?.abs()?.mean_all()?.to_scalar::<f32>()? as f64;
                let den = prev.abs()?.mean_all()?.to_scalar::<f32>()? as f64;
                let rel = if den > 0.0 { num / den } else { f64::INFINITY };
                self.accumulated += Self::rescale(rel);
                // NaN/∞ distances compute (never reuse a residual on a broken signal).
                self.accumulated.partial_cmp(&self.threshold) != Some(std::cmp::Ordering::Less)
            }
            _ => true,
        };
        if compute {
            self.accumulated = 0.0;
            self.computed += 1;
        } else {
            self.skipped += 1;
        }
        self.previous = Some(modulated);
        self.count += 1;
        if self.count == self.steps {
            self.count = 0;
        }
        Ok(compute)
    }
}
