//! TAEHV configuration.

use crate::error::{Error, Result};

/// Widths and resampling flags of a TAEHV model (serde field names as upstream's constructor
/// arguments; [`Config::default`] is the released `taehv.safetensors` for HunyuanVideo).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Config {
    /// Latent channels (16 for HunyuanVideo).
    pub latent_channels: usize,
    /// Channels of every encoder layer.
    pub encoder_width: usize,
    /// Channels of the decoder's four stages, from the latent side to the image side.
    pub decoder_widths: [usize; 4],
    /// Whether each of the encoder's three stages halves the frame rate.
    pub encoder_time_downscale: [bool; 3],
    /// Whether each of the decoder's three stages doubles the frame rate. Turning stages off
    /// gives a cheaper preview decoder that loads the same weights (see [`super::Taehv::load`]).
    pub decoder_time_upscale: [bool; 3],
    /// Whether each of the decoder's three stages doubles height and width.
    pub decoder_space_upscale: [bool; 3],
    /// Pixel-shuffle patch size of the input and output frames (1 for HunyuanVideo).
    pub patch_size: usize,
    /// Latents are the encoder's output times this, and the decoder divides its input by it
    /// first (1 for the released TAEHVs, whose latents already match HunyuanVideo's scaled
    /// ones; a TAEHV trained as a model's own VAE stores 1/σ of its latents here).
    pub scaling_factor: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self::hunyuan_video()
    }
}

/// Image channels (RGB).
pub(crate) const IMAGE_CHANNELS: usize = 3;

impl Config {
    /// The released HunyuanVideo TAEHV: encoder 64, decoder 256/128/64/64, latent 16, encoder
    /// time downscale (on, on, off), decoder time upscale (off, on, on), space upscale on.
    pub fn hunyuan_video() -> Self {
        Self {
            latent_channels: 16,
            encoder_width: 64,
            decoder_widths: [256, 128, 64, 64],
            encoder_time_downscale: [true, true, false],
            decoder_time_upscale: [false, true, true],
            decoder_space_upscale: [true, true, true],
            patch_size: 1,
            scaling_factor: 1.0,
        }
    }

    /// The same model with every decoder time upscale off: one frame per latent, the cheap
    /// preview decoder.
    pub fn preview(&self) -> Self {
        Self { decoder_time_upscale: [false; 3], ..self.clone() }
    }

    /// Checks that every width is positive.
    pub fn validate(&self) -> Result<()> {
        if self.latent_channels == 0 || self.encoder_width == 0 || self.decoder_widths.contains(&0) {
            return Err(Error::invalid("taehv config", format!("widths must be positive: {self:?}")));
        }
        if self.patch_size == 0 {
            return Err(Error::invalid("taehv config", "patch_size must be at least 1"));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::invalid(
                "taehv config",
                format!("scaling_factor must be positive and finite, got {}", self.scaling_factor),
            ));
        }
        Ok(())
    }

    /// Input frames per latent frame (2 to the number of encoder time downscales).
    pub fn time_downscale(&self) -> usize {
        1 << self.encoder_time_downscale.iter().filter(|&&b| b).count()
    }

    /// Decoded frames per latent frame before trimming (2 to the number of time upscales).
    pub fn time_upscale(&self) -> usize {
        1 << self.decoder_time_upscale.iter().filter(|&&b| b).count()
    }

    /// Pixels per latent pixel along each spatial axis in the encoder (three stride-2 stages
    /// times the patch size).
    pub fn space_downscale(&self) -> usize {
        8 * self.patch_size
    }

    /// Pixels per latent pixel along each spatial axis in the decoder.
    pub fn space_upscale(&self) -> usize {
        (1 << self.decoder_space_upscale.iter().filter(|&&b| b).count()) * self.patch_size
    }

    /// Leading decoded frames dropped so that `T` latents give `time_upscale · (T − 1) + 1`
    /// frames, aligned with the full VAE.
    pub fn frames_to_trim(&self) -> usize {
        self.time_upscale() - 1
    }

    /// Frames decoded from `latents` latent frames.
    pub fn decoded_frames(&self, latents: usize) -> usize {
        (latents * self.time_upscale()).saturating_sub(self.frames_to_trim())
    }

    /// Latent frames encoded from `frames` video frames (padded at the end to a multiple of
    /// [`Self::time_downscale`] with the last frame).
    pub fn encoded_latents(&self, frames: usize) -> usize {
        frames.div_ceil(self.time_downscale())
    }
}
