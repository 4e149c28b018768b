//! HunyuanVideo causal 3-D VAE (diffusers `AutoencoderKLHunyuanVideo`), as used by FramePack.
//!
//! Videos are `(batch, channels, frames, height, width)` in `[-1, 1]`. The encoder compresses
//! ×8 in space and ×4 in time causally: `T` frames give `(T − 1) / 4 + 1` latent frames and
//! `T` latent frames decode to `4T − 3` frames (the first latent frame is the first image alone).
//!
//! [`AutoencoderKLHunyuanVideo::encode`] and [`AutoencoderKLHunyuanVideo::decode`] work on
//! *unscaled* latents, exactly like diffusers; FramePack multiplies encoder latents by
//! [`SCALING_FACTOR`] before the transformer and divides before decoding
//! ([`AutoencoderKLHunyuanVideo::scale_latents`] / [`AutoencoderKLHunyuanVideo::unscale_latents`]).
//!
//! Tiling follows diffusers exactly (see [`Tiling`]): temporal ("framewise") tiling is on by
//! default and changes the result, so it is part of the model's semantics; spatial tiling is off
//! by default and only bounds memory. [`section`] holds FramePack's per-section decoding with the
//! linear cross-fade between sections.
//!
//! On the CPU in f32 the stride-1 causal convolutions (all but the encoder's three downsamplers)
//! run as shifted GEMMs without im2col and GroupNorm is fused with SiLU; other devices and dtypes
//! use candle's conv2d and ops. The real decoder costs about 24 MFLOP per output pixel and frame:
//! ≈ 0.2 PFLOP for a 9-latent, 512×512 section in one pass, ≈ 0.42 PFLOP with the default
//! framewise tiling plus 256 px spatial tiles (overlaps are decoded twice). On a 2-core CPU that
//! is hours; `examples/vae_bench.rs` measures it.

mod blocks;
pub mod section;
mod tiling;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::weights::{self, WeightSource};
use blocks::{Decoder, Encoder, PointwiseConv3d};

pub use section::{PixelHistory, SectionDecoder, soft_append};

/// Latent scaling factor of the HunyuanVideo VAE (`z_model = z_vae · 0.476986`).
pub const SCALING_FACTOR: f64 = 0.476986;

/// VAE configuration, deserialisable from a diffusers `vae/config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Config {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Latent channels (the encoder outputs twice as many: mean and log-variance).
    pub latent_channels: usize,
    /// Encoder block types; only `HunyuanVideoDownBlock3D` exists.
    pub down_block_types: Vec<String>,
    /// Decoder block types; only `HunyuanVideoUpBlock3D` exists.
    pub up_block_types: Vec<String>,
    /// Channels of each encoder block (reversed for the decoder).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block; decoder blocks have one more.
    pub layers_per_block: usize,
    /// Activation; only SiLU (`silu`/`swish`) is used by HunyuanVideo.
    pub act_fn: String,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Latent scaling factor.
    pub scaling_factor: f64,
    /// Spatial compression (a power of two).
    pub spatial_compression_ratio: usize,
    /// Temporal compression; only 4 is supported (as in diffusers' decoder).
    pub temporal_compression_ratio: usize,
    /// Whether the mid blocks have the frame-causal attention.
    pub mid_block_add_attention: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::hunyuan_video()
    }
}

impl Config {
    /// The released HunyuanVideo VAE (`hunyuanvideo-community/HunyuanVideo`, subfolder `vae`).
    pub fn hunyuan_video() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 16,
            down_block_types: vec!["HunyuanVideoDownBlock3D".into(); 4],
            up_block_types: vec!["HunyuanVideoUpBlock3D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            scaling_factor: SCALING_FACTOR,
            spatial_compression_ratio: 8,
            temporal_compression_ratio: 4,
            mid_block_add_attention: true,
        }
    }

    /// Checks that the configuration describes a model this implementation can build.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::invalid("vae config", "block_out_channels is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::invalid(
                "vae config",
                format!(
                    "{} down and {} up block types for {n} block_out_channels",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != "HunyuanVideoDownBlock3D") {
            return Err(Error::invalid("vae config", format!("unsupported down block type `{t}`")));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "HunyuanVideoUpBlock3D") {
            return Err(Error::invalid("vae config", format!("unsupported up block type `{t}`")));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(Error::invalid("vae config", format!("unsupported act_fn `{}` (only silu)", self.act_fn)));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 || self.layers_per_block == 0 {
            return Err(Error::invalid("vae config", "channel counts and layers_per_block must be positive"));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|&c| c == 0 || c % g != 0) {
            return Err(Error::invalid(
                "vae config",
                format!("norm_num_groups {g} must divide every block_out_channels entry {:?}", self.block_out_channels),
            ));
        }
        if self.temporal_compression_ratio != 4 {
            return Err(Error::invalid(
                "vae config",
                format!("temporal_compression_ratio {} (only 4 is supported)", self.temporal_compression_ratio),
            ));
        }
        if !self.spatial_compression_ratio.is_power_of_two() {
            return Err(Error::invalid(
                "vae config",
                format!("spatial_compression_ratio {} is not a power of two", self.spatial_compression_ratio),
            ));
        }
        let (s, t) = self.down_strides().iter().fold((1, 1), |(s, t), &(dt, ds)| (s * ds, t * dt));
        if s != self.spatial_compression_ratio || t != self.temporal_compression_ratio {
            return Err(Error::invalid(
                "vae config",
                format!(
                    "{n} blocks give compression ×{s} (space) ×{t} (time), config says ×{} ×{}",
                    self.spatial_compression_ratio, self.temporal_compression_ratio
                ),
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::invalid("vae config", format!("scaling_factor {}", self.scaling_factor)));
        }
        Ok(())
    }

    /// Per encoder block `(time, space)` downsampling stride, `(1, 1)` = no downsampler.
    pub(crate) fn down_strides(&self) -> Vec<(usize, usize)> {
        self.resampling_layout()
    }

    /// Per decoder block `(time, space)` upsampling factor, `(1, 1)` = no upsampler.
    pub(crate) fn up_factors(&self) -> Vec<(usize, usize)> {
        self.resampling_layout()
    }

    /// diffusers: block `i` resamples space if `i < log2(spatial)` and time if
    /// `i ≥ n − 1 − log2(temporal)` and it is not the last block (same rule both ways).
    fn resampling_layout(&self) -> Vec<(usize, usize)> {
        let n = self.block_out_channels.len() as i64;
        let spatial_layers = self.spatial_compression_ratio.max(1).ilog2() as i64;
        let time_layers = self.temporal_compression_ratio.max(1).ilog2() as i64;
        (0..n)
            .map(|i| {
                let space = i < spatial_layers;
                let time = i >= n - 1 - time_layers && i != n - 1;
                (if time { 2 } else { 1 }, if space { 2 } else { 1 })
            })
            .collect()
    }

    /// Latent frames for `frames` video frames: `(frames − 1) / 4 + 1`.
    pub fn latent_frames(&self, frames: usize) -> usize {
        frames.saturating_sub(1) / self.temporal_compression_ratio + 1
    }

    /// Video frames decoded from `latent_frames` latent frames: `4·(T − 1) + 1`.
    pub fn sample_frames(&self, latent_frames: usize) -> usize {
        latent_frames.saturating_sub(1) * self.temporal_compression_ratio + 1
    }
}

/// Tiling switches and tile sizes, in pixels and video frames (diffusers' field names and
/// defaults).
///
/// - Framewise encoding (on by default): videos of more than `sample_min_num_frames` frames are
///   encoded in chunks of `sample_min_num_frames + 1` frames every `sample_stride_num_frames`
///   frames; neighbouring latent chunks are blended over
///   `(min − stride) / 4` latent frames.
/// - Framewise decoding (on by default): more than `sample_min_num_frames / 4` latent frames are
///   decoded in chunks of `min / 4 + 1` latents every `stride / 4`; the first frame of every later
///   chunk is dropped and chunks are blended linearly over `min − stride` frames.
/// - Spatial tiling (off by default): frames larger than `sample_min_{height,width}` are cut into
///   overlapping tiles every `sample_stride_{height,width}` pixels, blended linearly over
///   `min − stride` pixels (decode) or `(min − stride) / 8` latent pixels (encode). The result
///   is close to, but not equal to, the untiled one; it bounds memory for large frames.
///
/// Both framewise modes change results (GroupNorm statistics and the mid-block attention span
/// a whole chunk), which is why FramePack's outputs depend on them.
///
/// Decodes switch to spatial tiling when the latent frame is wider or taller than
/// `sample_min / 8` (diffusers 0.42; 0.33.1, which FramePack pins, compares with `stride / 8`,
/// which only matters for latent sizes 25–32 with spatial tiling on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Temporal tiling of encodes.
    pub framewise_encoding: bool,
    /// Temporal tiling of decodes.
    pub framewise_decoding: bool,
    /// Spatial tiling of encodes and decodes.
    pub spatial: bool,
    /// Tile height in pixels.
    pub sample_min_height: usize,
    /// Tile width in pixels.
    pub sample_min_width: usize,
    /// Frames per temporal tile (one more is taken so every chunk starts with a causal frame).
    pub sample_min_num_frames: usize,
    /// Vertical distance between tiles in pixels.
    pub sample_stride_height: usize,
    /// Horizontal distance between tiles in pixels.
    pub sample_stride_width: usize,
    /// Frames between temporal tiles.
    pub sample_stride_num_frames: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Self {
            framewise_encoding: true,
            framewise_decoding: true,
            spatial: false,
            sample_min_height: 256,
            sample_min_width: 256,
            sample_min_num_frames: 16,
            sample_stride_height: 192,
            sample_stride_width: 192,
            sample_stride_num_frames: 12,
        }
    }
}

impl Tiling {
    /// No tiling at all: every encode and decode runs in one pass.
    pub fn direct() -> Self {
        Self { framewise_encoding: false, framewise_decoding: false, spatial: false, ..Self::default() }
    }

    /// The defaults plus spatial tiling (what FramePack enables in low-VRAM mode).
    pub fn spatial() -> Self {
        Self { spatial: true, ..Self::default() }
    }

    fn validate(&self, cfg: &Config) -> Result<()> {
        let s = cfg.spatial_compression_ratio;
        let t = cfg.temporal_compression_ratio;
        let pairs = [
            ("height", self.sample_min_height, self.sample_stride_height, s),
            ("width", self.sample_min_width, self.sample_stride_width, s),
            ("frames", self.sample_min_num_frames, self.sample_stride_num_frames, t),
        ];
        for (what, min, stride, ratio) in pairs {
            if stride < ratio || min < stride {
                return Err(Error::invalid(
                    "vae tiling",
                    format!("{what}: need {ratio} ≤ stride ({stride}) ≤ tile size ({min})"),
                ));
            }
        }
        Ok(())
    }
}

/// Diagonal Gaussian posterior returned by the encoder.
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    moments: Tensor,
    latent_channels: usize,
}

impl LatentDistribution {
    /// The raw `quant_conv` output: mean ‖ log-variance along channels.
    pub fn moments(&self) -> &Tensor {
        &self.moments
    }

    /// The mean (= mode).
    pub fn mean(&self) -> Result<Tensor> {
        Ok(self.moments.narrow(1, 0, self.latent_channels)?)
    }

    /// Log-variance clamped to `[-30, 20]`.
    pub fn logvar(&self) -> Result<Tensor> {
        Ok(self.moments.narrow(1, self.latent_channels, self.latent_channels)?.clamp(-30f32, 20f32)?)
    }

    /// Standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((self.logvar()? * 0.5)?.exp()?)
    }

    /// `mean + std · noise` for a caller-provided standard normal tensor of the mean's shape.
    pub fn sample_with_noise(&self, noise: &Tensor) -> Result<Tensor> {
        let mean = self.mean()?;
        if noise.dims() != mean.dims() {
            return Err(Error::invalid(
                "noise",
                format!("shape {:?} does not match the latent shape {:?}", noise.dims(), mean.dims()),
            ));
        }
        let noise = noise.to_dtype(mean.dtype())?.to_device(mean.device())?;
        Ok((mean + self.std()?.mul(&noise)?)?)
    }

    /// A sample with noise from a seeded generator (deterministic for a seed, but not the same
    /// numbers as a `torch.Generator`).
    pub fn sample_seeded(&self, seed: u64) -> Result<Tensor> {
        let mean = self.mean()?;
        let noise = seeded_normal(mean.dims(), seed, mean.dtype(), mean.device())?;
        self.sample_with_noise(&noise)
    }
}

/// Standard normal samples from SplitMix64 + Box–Muller, reproducible for a seed.
fn seeded_normal(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push(r * a.cos());
        out.push(r * a.sin());
    }
    out.truncate(n);
    Ok(Tensor::from_vec(out, shape, device)?.to_dtype(dtype)?)
}

/// The HunyuanVideo causal video VAE.
#[derive(Debug, Clone)]
pub struct AutoencoderKLHunyuanVideo {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: PointwiseConv3d,
    post_quant_conv: PointwiseConv3d,
    config: Config,
    tiling: Tiling,
}

impl AutoencoderKLHunyuanVideo {
    /// Builds the model from a var builder with diffusers' parameter names
    /// (`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`). Default [`Tiling`].
    ///
    /// On the CPU the dtype must be F32, F64 or F16: candle has no CPU matmul for BF16.
    pub fn new(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        if vb.device().is_cpu() && vb.dtype() == DType::BF16 {
            candle_core::bail!("the VAE cannot run in bf16 on the CPU (candle has no CPU bf16 matmul); use f32 or f16");
        }
        let l = cfg.latent_channels;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv: PointwiseConv3d::new(vb.pp("quant_conv"), 2 * l, 2 * l)?,
            post_quant_conv: PointwiseConv3d::new(vb.pp("post_quant_conv"), l, l)?,
            config: cfg.clone(),
            tiling: Tiling::default(),
        })
    }

    /// Loads the weights from safetensors files with strict checks (every tensor present with the
    /// right shape, no unused tensors).
    pub fn load(weights: impl WeightSource, cfg: &Config, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if device.is_cpu() && dtype == DType::BF16 {
            return Err(Error::invalid("vae dtype", "bf16 has no CPU matmul in candle; use f32 or f16 on the CPU"));
        }
        weights::load(weights.into_weight_files()?, dtype, device, |vb| Self::new(vb, cfg))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current tiling settings.
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    /// Replaces the tiling settings.
    pub fn set_tiling(&mut self, tiling: Tiling) -> Result<()> {
        tiling.validate(&self.config)?;
        self.tiling = tiling;
        Ok(())
    }

    /// Builder form of [`Self::set_tiling`].
    pub fn with_tiling(mut self, tiling: Tiling) -> Result<Self> {
        self.set_tiling(tiling)?;
        Ok(self)
    }

    /// `z · scaling_factor`: VAE latents → transformer latents.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        Ok((z * self.config.scaling_factor)?)
    }

    /// `z / scaling_factor`: transformer latents → VAE latents.
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        Ok((z / self.config.scaling_factor)?)
    }

    fn check_input(&self, x: &Tensor, channels: usize, what: &'static str) -> Result<()> {
        let dims = x.dims();
        if dims.len() != 5 {
            return Err(Error::invalid(
                what,
                format!("expected (batch, channels, frames, height, width), got shape {dims:?}"),
            ));
        }
        if dims[1] != channels {
            return Err(Error::invalid(what, format!("expected {channels} channels, got shape {dims:?}")));
        }
        if dims.contains(&0) {
            return Err(Error::invalid(what, format!("empty tensor of shape {dims:?}")));
        }
        Ok(())
    }

    /// Encodes a video `(B, in_channels, T, H, W)` into the latent posterior
    /// `(B, latent_channels, (T − 1) / 4 + 1, H / 8, W / 8)` (unscaled).
    pub fn encode(&self, x: &Tensor) -> Result<LatentDistribution> {
        Ok(LatentDistribution { moments: self.encode_moments(x)?, latent_channels: self.config.latent_channels })
    }

    /// The posterior parameters (`quant_conv` output), with the configured tiling.
    pub fn encode_moments(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x, self.config.in_channels, "vae encoder input")?;
        self.encode_dispatch(x)
    }

    /// Decodes unscaled latents `(B, latent_channels, T, h, w)` into `(B, out_channels, 4T − 3,
    /// 8h, 8w)` pixels, with the configured tiling.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check_input(z, self.config.latent_channels, "vae decoder input")?;
        self.decode_dispatch(z)
    }

    /// Untiled encode that also returns the named intermediate activations (diffusers module
    /// names: `encoder.conv_in`, `encoder.down_blocks.{i}`, `encoder.mid_block`, `encoder`,
    /// `quant_conv`).
    pub fn encode_traced(&self, x: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        self.check_input(x, self.config.in_channels, "vae encoder input")?;
        let mut trace = Vec::new();
        let h = self.encoder.forward(x, Some(&mut trace))?;
        let m = self.quant_conv.forward(&h)?;
        trace.push(("quant_conv".into(), m.clone()));
        Ok((m, trace))
    }

    /// Untiled decode that also returns the named intermediate activations (`post_quant_conv`,
    /// `decoder.conv_in`, `decoder.mid_block`, `decoder.up_blocks.{i}`).
    pub fn decode_traced(&self, z: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        self.check_input(z, self.config.latent_channels, "vae decoder input")?;
        let mut trace = Vec::new();
        let p = self.post_quant_conv.forward(z)?;
        trace.push(("post_quant_conv".into(), p.clone()));
        let d = self.decoder.forward(&p, Some(&mut trace))?;
        Ok((d, trace))
    }

    fn encode_plain(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.quant_conv.forward(&self.encoder.forward(x, None)?)?)
    }

    fn decode_plain(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.forward(&self.post_quant_conv.forward(z)?, None)?)
    }
}
