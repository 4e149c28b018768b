//! The packed transformer: embedders, packing, blocks and the forward passes.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::Config;
use super::inputs::{Frames, StepConditioning, TransformerInputs, read_indices, read_scalars, valid_lengths};
use super::layers::{DualBlock, Mlp, PatchEmbed, PlainLayerNorm, SingleBlock, TokenRefiner};
use super::streaming::{self, MemoryPlan, Residency};
use super::teacache::TeaCache;
use super::{layers, rope};
use crate::error::{Error, Result};
use crate::models::kernels::linear::{Linear, linear};

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
pub(super) struct CleanEmbedder {
    pub(super) proj: PatchEmbed,
    pub(super) proj_2x: PatchEmbed,
    pub(super) proj_4x: PatchEmbed,
}

/// The packed HunyuanVideo transformer.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub(super) x_embedder: PatchEmbed,
    pub(super) clean_x_embedder: Option<CleanEmbedder>,
    pub(super) context_embedder: TokenRefiner,
    pub(super) image_projection: Option<Mlp>,
    pub(super) timestep_embedder: Mlp,
    pub(super) guidance_embedder: Option<Mlp>,
    pub(super) text_embedder: Mlp,
    /// `None`: streamed from `stream` for every use.
    pub(super) transformer_blocks: Vec<Option<DualBlock>>,
    pub(super) single_transformer_blocks: Vec<Option<SingleBlock>>,
    pub(super) stream: Option<streaming::Streamer>,
    pub(super) norm_out: Linear,
    pub(super) proj_out: Linear,
    pub(super) ln: PlainLayerNorm,
    pub(super) cfg: Config,
    pub(super) dtype: DType,
    pub(super) device: Device,
    /// The last single block computes the noisy tokens only (the model discards the others).
    pub(super) prune_last_block: bool,
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
    pub fn load(
        weights: impl crate::weights::WeightSource,
        cfg: &Config,
        dtype: DType,
        device: &Device,
        residency: Residency,
    ) -> Result<Self> {
        let files = weights.into_weight_files()?;
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
            prune_last_block: true,
        })
    }

    /// Whether the last single block computes the noisy tokens' outputs only (the default: the
    /// model discards the others, so the output is the same). Off, it computes every token, as
    /// [`Self::forward_traced`] always does; for benchmarks.
    pub fn set_prune_last_block(&mut self, prune: bool) {
        self.prune_last_block = prune;
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
            let prune = !traced && self.prune_last_block;
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
