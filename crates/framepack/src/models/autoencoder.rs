//! The autoencoder between pixels and the transformer's latents: HunyuanVideo's causal 3-D VAE
//! (the released models) or a TAEHV trained as a model's own VAE (the nano model). Both
//! compress ×8 in space and ×4 in time, `T` latents decoding to `4T − 3` frames.

use candle_core::{DType, Tensor};

use super::taehv::{self, StreamingDecoder, Taehv};
use super::vae::{self, AutoencoderKLHunyuanVideo};
use crate::error::{Error, Result};

/// The `_class_name` in `vae/config.json` that marks a TAEHV used as the VAE.
pub const TAEHV_CLASS_NAME: &str = "TAEHV";

/// A VAE's configuration, as `vae/config.json` of a bundle holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum AutoencoderConfig {
    /// `AutoencoderKLHunyuanVideo` (any other or no `_class_name`).
    HunyuanVideo(vae::Config),
    /// `"_class_name": "TAEHV"` plus the fields of [`taehv::Config`].
    Taehv(taehv::Config),
}

impl AutoencoderConfig {
    /// Parses `vae/config.json`: `_class_name` `"TAEHV"` selects the TAEHV fields, anything
    /// else the diffusers VAE's.
    pub fn from_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        Self::from_value(serde_json::from_str(text)?)
    }

    /// [`Self::from_json`] of a parsed value.
    pub fn from_value(value: serde_json::Value) -> std::result::Result<Self, serde_json::Error> {
        if value.get("_class_name").and_then(|c| c.as_str()) == Some(TAEHV_CLASS_NAME) {
            serde_json::from_value(value).map(Self::Taehv)
        } else {
            serde_json::from_value(value).map(Self::HunyuanVideo)
        }
    }

    /// The config as `vae/config.json` text (with `_class_name`).
    pub fn to_json(&self) -> String {
        let value = match self {
            Self::HunyuanVideo(c) => serde_json::to_value(c),
            Self::Taehv(c) => serde_json::to_value(c),
        };
        let mut value = value.expect("configs serialize");
        if let Some(map) = value.as_object_mut() {
            map.insert("_class_name".into(), self.class().into());
        }
        serde_json::to_string_pretty(&value).expect("a JSON value serializes")
    }

    fn class(&self) -> &'static str {
        match self {
            Self::HunyuanVideo(_) => "AutoencoderKLHunyuanVideo",
            Self::Taehv(_) => TAEHV_CLASS_NAME,
        }
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> usize {
        match self {
            Self::HunyuanVideo(c) => c.latent_channels,
            Self::Taehv(c) => c.latent_channels,
        }
    }

    /// Pixels per latent pixel along each spatial axis.
    pub fn spatial_compression(&self) -> usize {
        match self {
            Self::HunyuanVideo(c) => c.spatial_compression_ratio,
            Self::Taehv(c) => c.space_downscale(),
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::HunyuanVideo(c) => {
                format!("{} latent channels, blocks {:?}", c.latent_channels, c.block_out_channels)
            }
            Self::Taehv(c) => format!(
                "TAEHV, {} latent channels, encoder width {}, decoder widths {:?}",
                c.latent_channels, c.encoder_width, c.decoder_widths
            ),
        }
    }
}

/// A loaded VAE.
#[derive(Debug, Clone)]
pub enum Autoencoder {
    /// HunyuanVideo's VAE, with the dtype its inputs are cast to.
    HunyuanVideo(AutoencoderKLHunyuanVideo, DType),
    /// A TAEHV as the VAE (deterministic encoder; its latents are scaled by
    /// [`taehv::Config::scaling_factor`]).
    Taehv(Taehv),
}

impl From<Taehv> for Autoencoder {
    fn from(t: Taehv) -> Self {
        Self::Taehv(t)
    }
}

impl Autoencoder {
    /// HunyuanVideo's VAE with inputs cast to `dtype` (the dtype its weights were loaded in).
    pub fn hunyuan_video(vae: AutoencoderKLHunyuanVideo, dtype: DType) -> Self {
        Self::HunyuanVideo(vae, dtype)
    }

    /// The configuration.
    pub fn config(&self) -> AutoencoderConfig {
        match self {
            Self::HunyuanVideo(v, _) => AutoencoderConfig::HunyuanVideo(v.config().clone()),
            Self::Taehv(t) => AutoencoderConfig::Taehv(t.config().clone()),
        }
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> usize {
        match self {
            Self::HunyuanVideo(v, _) => v.config().latent_channels,
            Self::Taehv(t) => t.config().latent_channels,
        }
    }

    /// Pixels per latent pixel along each spatial axis.
    pub fn spatial_compression(&self) -> usize {
        match self {
            Self::HunyuanVideo(v, _) => v.config().spatial_compression_ratio,
            Self::Taehv(t) => t.config().space_downscale(),
        }
    }

    /// The TAEHV, when that is the VAE.
    pub fn taehv(&self) -> Option<&Taehv> {
        match self {
            Self::Taehv(t) => Some(t),
            Self::HunyuanVideo(..) => None,
        }
    }

    /// The HunyuanVideo VAE, when that is the VAE.
    pub fn hunyuan(&self) -> Option<&AutoencoderKLHunyuanVideo> {
        match self {
            Self::HunyuanVideo(v, _) => Some(v),
            Self::Taehv(_) => None,
        }
    }

    /// Scaled latents `(N, C, T', h, w)` (f32) of pixels `(N, 3, T, H, W)` in `[-1, 1]`. With
    /// HunyuanVideo's VAE `noise` picks the latent: `None` the distribution's mean, else a sample
    /// with that standard-normal noise (`noise(shape)` gives it); a TAEHV is deterministic.
    pub fn encode(&self, pixels: &Tensor, noise: Option<&dyn Fn(&[usize]) -> Result<Tensor>>) -> Result<Tensor> {
        match self {
            Self::HunyuanVideo(v, dtype) => {
                let dist = v.encode(&pixels.to_dtype(*dtype)?)?;
                let z = match noise {
                    None => dist.mean()?,
                    Some(noise) => {
                        let mean = dist.mean()?;
                        dist.sample_with_noise(&noise(mean.dims())?)?
                    }
                };
                v.scale_latents(&z.to_dtype(DType::F32)?)
            }
            Self::Taehv(t) => {
                let video = pixels.permute((0, 2, 1, 3, 4))?.affine(0.5, 0.5)?;
                Ok(t.encode(&video)?.permute((0, 2, 1, 3, 4))?.to_dtype(DType::F32)?)
            }
        }
    }

    /// Pixels `(N, 3, 4T − 3, H, W)` in `[-1, 1]` of scaled latents `(N, C, T, h, w)`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            Self::HunyuanVideo(v, dtype) => v.decode(&v.unscale_latents(latents)?.to_dtype(*dtype)?),
            Self::Taehv(t) => tiny_decode(t, latents),
        }
    }

    /// Checks that latents of this VAE fit a transformer with `in_channels`.
    pub(crate) fn check_channels(&self, in_channels: usize, out_channels: usize) -> Result<()> {
        let c = self.latent_channels();
        if c != in_channels || in_channels != out_channels {
            return Err(Error::invalid(
                "models",
                format!(
                    "the VAE has {c} latent channels but the transformer takes {in_channels} and returns {out_channels}"
                ),
            ));
        }
        Ok(())
    }
}

/// Largest tiny-decoder activation decoded all frames at once; larger clips decode frame by
/// frame (same numbers, constant memory).
const TINY_PARALLEL_BYTES: usize = 256 << 20;

/// Tiny-decoder pixels `(1, 3, T', H, W)` in `[-1, 1]` of latents `(1, C, T, h, w)`.
pub(crate) fn tiny_decode(model: &Taehv, z: &Tensor) -> Result<Tensor> {
    let z = z.permute((0, 2, 1, 3, 4))?;
    let (n, t, _, h, w) = z.dims5()?;
    let cfg = model.config();
    let widest = cfg.decoder_widths.iter().copied().max().unwrap_or(1);
    let bytes = n * t * cfg.time_upscale() * h * w * cfg.space_upscale().pow(2) * widest * 4;
    let frames = if bytes <= TINY_PARALLEL_BYTES {
        model.decode(&z)?
    } else {
        Tensor::cat(&StreamingDecoder::new(model).decode(&z)?, 1)?
    };
    Ok(frames.permute((0, 2, 1, 3, 4))?.affine(2.0, -1.0)?)
}
