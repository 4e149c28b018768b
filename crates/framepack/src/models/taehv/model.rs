//! The TAEHV encoder and decoder, built with upstream's `nn.Sequential` indices as weight names.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{Block, Conv3x3, Layer, MemBlock, run_parallel};
use super::config::{Config, IMAGE_CHANNELS};
use crate::error::{Error, Result};
use crate::weights::{self, WeightSource};

/// Upstream index of the time-grow layer of decoder stage `k`.
fn time_grow_index(stage: usize) -> usize {
    7 + 6 * stage
}

fn flag(on: bool) -> usize {
    if on { 2 } else { 1 }
}

fn build_encoder(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Vec<Block>> {
    let e = cfg.encoder_width;
    let c_in = IMAGE_CHANNELS * cfg.patch_size * cfg.patch_size;
    let mut blocks = vec![Block { index: 1, layer: Layer::Conv(Conv3x3::new(vb.pp("0"), c_in, e, true, 1, true)?) }];
    for stage in 0..3 {
        let base = 2 + 5 * stage;
        blocks.push(Block {
            index: base,
            layer: Layer::time_pool(vb.pp(base), e, flag(cfg.encoder_time_downscale[stage]))?,
        });
        blocks
            .push(Block { index: base + 1, layer: Layer::Conv(Conv3x3::new(vb.pp(base + 1), e, e, false, 2, false)?) });
        for j in base + 2..base + 5 {
            blocks.push(Block { index: j, layer: Layer::Mem(MemBlock::new(vb.pp(j), e, e)?) });
        }
    }
    blocks.push(Block {
        index: 17,
        layer: Layer::Conv(Conv3x3::new(vb.pp("17"), e, cfg.latent_channels, true, 1, false)?),
    });
    Ok(blocks)
}

fn build_decoder(vb: VarBuilder, cfg: &Config, stored_strides: [usize; 3]) -> candle_core::Result<Vec<Block>> {
    let n = cfg.decoder_widths;
    let c_out = IMAGE_CHANNELS * cfg.patch_size * cfg.patch_size;
    let mut blocks = vec![
        Block { index: 0, layer: Layer::Clamp },
        Block { index: 2, layer: Layer::Conv(Conv3x3::new(vb.pp("1"), cfg.latent_channels, n[0], true, 1, true)?) },
    ];
    for stage in 0..3 {
        let base = 3 + 6 * stage;
        for j in base..base + 3 {
            blocks.push(Block { index: j, layer: Layer::Mem(MemBlock::new(vb.pp(j), n[stage], n[stage])?) });
        }
        blocks.push(Block { index: base + 3, layer: Layer::Upsample(flag(cfg.decoder_space_upscale[stage])) });
        let grow = time_grow_index(stage);
        let stride = flag(cfg.decoder_time_upscale[stage]);
        blocks.push(Block {
            index: grow,
            layer: Layer::time_grow(vb.pp(grow), n[stage], stride, stored_strides[stage])?,
        });
        let relu = stage == 2;
        blocks.push(Block {
            index: base + 5 + usize::from(relu),
            layer: Layer::Conv(Conv3x3::new(vb.pp(base + 5), n[stage], n[stage + 1], false, 1, relu)?),
        });
    }
    blocks.push(Block { index: 22, layer: Layer::Conv(Conv3x3::new(vb.pp("22"), n[3], c_out, true, 1, false)?) });
    Ok(blocks)
}

/// `(B, C, H, W)` → `(B, C·p², H / p, W / p)`, PyTorch's `pixel_unshuffle`.
fn pixel_unshuffle(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    x.reshape(vec![b, c, h / p, p, w / p, p])?.permute(vec![0, 1, 3, 5, 2, 4])?.reshape((b, c * p * p, h / p, w / p))
}

/// `(B, C·p², H, W)` → `(B, C, H·p, W·p)`, PyTorch's `pixel_shuffle`.
fn pixel_shuffle(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, cp, h, w) = x.dims4()?;
    let c = cp / (p * p);
    x.reshape(vec![b, c, p, p, h, w])?.permute(vec![0, 1, 4, 2, 5, 3])?.reshape((b, c, h * p, w * p))
}

/// TAEHV: a tiny causal video autoencoder for HunyuanVideo latents (see the [module docs]).
///
/// Cloning is cheap: the weights are shared.
///
/// [module docs]: super
#[derive(Debug, Clone)]
pub struct Taehv {
    encoder: Vec<Block>,
    decoder: Vec<Block>,
    config: Config,
    dtype: DType,
    device: Device,
}

impl Taehv {
    /// Builds the model from a var builder with upstream's names (`encoder.{i}.…`,
    /// `decoder.{i}.…`, the indices of its `nn.Sequential`s), asking for exactly the shapes of
    /// `cfg`.
    pub fn new(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let strides = cfg.decoder_time_upscale.map(flag);
        Self::with_stored_strides(vb, cfg, strides)
    }

    fn with_stored_strides(vb: VarBuilder, cfg: &Config, stored: [usize; 3]) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Self {
            encoder: build_encoder(vb.pp("encoder"), cfg)?,
            decoder: build_decoder(vb.pp("decoder"), cfg, stored)?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Loads `taehv.safetensors` (or another checkpoint of this layout) with strict checks:
    /// every tensor present with the right shape and none left unused; errors name the file,
    /// tensor, expected and actual shape.
    ///
    /// A config whose decoder time upscale is off where the checkpoint's is on (a preview
    /// decoder) loads the same file: each such time-grow layer keeps its last timestep's output
    /// channels, as upstream's `patch_tgrow_layers` does.
    pub fn load(weights: impl WeightSource, cfg: &Config, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let files = weights.into_weight_files()?;
        let stored = stored_strides(cfg, &files.shapes());
        weights::load(files, dtype, device, |vb| Self::with_stored_strides(vb, cfg, stored))
    }

    /// The same weights as a decoder with other time-upscale flags (e.g. [`Config::preview`]):
    /// a stage can only be switched off, keeping its last timestep's channels.
    pub fn with_decoder_time_upscale(&self, flags: [bool; 3]) -> Result<Self> {
        let mut decoder = Vec::with_capacity(self.decoder.len());
        for b in &self.decoder {
            let layer = match (0..3).find(|&k| time_grow_index(k) == b.index) {
                Some(k) => b.layer.with_time_stride(flag(flags[k])).map_err(|e| {
                    Error::invalid("taehv time upscale", format!("{e} (decoder stage {k}: {:?})", self.config))
                })?,
                None => b.layer.clone(),
            };
            decoder.push(Block { index: b.index, layer });
        }
        let config = Config { decoder_time_upscale: flags, ..self.config.clone() };
        Ok(Self { decoder, config, encoder: self.encoder.clone(), dtype: self.dtype, device: self.device.clone() })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn decoder_blocks(&self) -> &[Block] {
        &self.decoder
    }

    fn check(&self, x: &Tensor, channels: usize, what: &'static str) -> Result<(usize, usize, usize, usize)> {
        let dims = x.dims();
        let [n, t, c, h, w] = *dims else {
            return Err(Error::invalid(
                what,
                format!("expected (batch, frames, channels, height, width), got {dims:?}"),
            ));
        };
        if c != channels {
            return Err(Error::invalid(what, format!("expected {channels} channels, got shape {dims:?}")));
        }
        if dims.contains(&0) {
            return Err(Error::invalid(what, format!("empty tensor of shape {dims:?}")));
        }
        Ok((n, t, h, w))
    }

    /// Encodes a video `(N, T, 3, H, W)` in `[0, 1]` into latents `(N, ⌈T / 4⌉, 16, H / 8,
    /// W / 8)` (with the default flags), all frames at once. Frames are padded at the end to a
    /// multiple of the time downscale by repeating the last one.
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let p = self.config.patch_size;
        let (n, t, h, w) = self.check(video, IMAGE_CHANNELS, "taehv encoder input")?;
        if h % p != 0 || w % p != 0 {
            return Err(Error::invalid("taehv encoder input", format!("{h}×{w} is not a multiple of patch size {p}")));
        }
        let x = video.to_dtype(self.dtype)?.to_device(&self.device)?;
        let down = self.config.time_downscale();
        let x = match t % down {
            0 => x,
            r => {
                let last = x.narrow(1, t - 1, 1)?;
                let pad = last.repeat((1, down - r, 1, 1, 1))?;
                Tensor::cat(&[&x, &pad], 1)?
            }
        };
        let frames = x.dim(1)?;
        let x = pixel_unshuffle(&x.reshape((n * frames, IMAGE_CHANNELS, h, w))?, p)?;
        let z = scale(run_parallel(&self.encoder, x, n, None)?, self.config.scaling_factor)?;
        let (nt, c, zh, zw) = z.dims4()?;
        Ok(z.reshape((n, nt / n, c, zh, zw))?)
    }

    /// Decodes latents `(N, T, 16, h, w)` into frames `(N, 4T − 3, 3, 8h, 8w)` in `[0, 1]` (with
    /// the default flags), all frames at once. [`super::StreamingDecoder`] gives the same frames
    /// one at a time in constant memory.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode_inner(latents, None, true)
    }

    /// [`Self::decode`] without the final clamp to `[0, 1]`, for training (the clamp has no
    /// gradient outside that range).
    pub fn decode_unclamped(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode_inner(latents, None, false)
    }

    /// [`Self::decode`] that also returns every decoder block's output `(N·T', C, H', W')` before
    /// trimming and clamping, keyed by upstream's `nn.Sequential` index (a convolution and the
    /// ReLU after it are one block, recorded under the ReLU's index).
    pub fn decode_traced(&self, latents: &Tensor) -> Result<(Tensor, Vec<(usize, Tensor)>)> {
        let mut trace = Vec::new();
        let out = self.decode_inner(latents, Some(&mut trace), true)?;
        Ok((out, trace))
    }

    fn decode_inner(&self, latents: &Tensor, trace: Option<&mut Vec<(usize, Tensor)>>, clamp: bool) -> Result<Tensor> {
        let (n, t, h, w) = self.check(latents, self.config.latent_channels, "taehv decoder input")?;
        let z = self.unscale(&latents.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        let z = z.reshape((n * t, self.config.latent_channels, h, w))?;
        let x = run_parallel(&self.decoder, z, n, trace)?;
        let x = if clamp { self.postprocess(&x)? } else { pixel_shuffle(&x, self.config.patch_size)? };
        let (nt, c, oh, ow) = x.dims4()?;
        let frames = nt / n;
        let trim = self.config.frames_to_trim().min(frames);
        Ok(x.reshape((n, frames, c, oh, ow))?.narrow(1, trim, frames - trim)?)
    }

    /// Latents divided by [`Config::scaling_factor`]: the decoder's input.
    pub(crate) fn unscale(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        scale(z.clone(), 1.0 / self.config.scaling_factor)
    }

    /// Pixel shuffle and clamp to `[0, 1]` of decoder outputs `(M, 3·p², H, W)`.
    pub(crate) fn postprocess(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        pixel_shuffle(x, self.config.patch_size)?.clamp(0f32, 1f32)
    }
}

fn scale(x: Tensor, factor: f64) -> candle_core::Result<Tensor> {
    if factor == 1.0 { Ok(x) } else { x.affine(factor, 0.0) }
}

/// The time-grow stride each decoder stage's checkpoint tensor holds: the config's, or larger
/// where the file stores more timesteps than the config decodes (a preview config).
fn stored_strides(cfg: &Config, shapes: &BTreeMap<String, Vec<usize>>) -> [usize; 3] {
    std::array::from_fn(|k| {
        let want = flag(cfg.decoder_time_upscale[k]);
        let n = cfg.decoder_widths[k];
        match shapes.get(&format!("decoder.{}.conv.weight", time_grow_index(k))).map(Vec::as_slice) {
            Some(&[rows, c, 1, 1]) if c == n && rows > want * n && rows % n == 0 => rows / n,
            _ => want,
        }
    })
}
