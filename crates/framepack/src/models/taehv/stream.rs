//! Frame-by-frame TAEHV decoding with memory carried across calls.

use candle_core::Tensor;

use super::blocks::Sequential;
use super::model::Taehv;
use crate::error::{Error, Result};

/// Decodes latents one frame at a time: each call to [`Self::next_frame`] does only the work
/// that frame needs, and every block keeps its previous input, so latents pushed later (the
/// next section of a forward video) continue the same stream. The frames are the same as
/// [`Taehv::decode`] of all latents pushed so far, leading trimmed frames included.
#[derive(Debug, Clone)]
pub struct StreamingDecoder {
    model: Taehv,
    pass: Sequential,
    raw_frames: usize,
}

impl StreamingDecoder {
    /// A decoder at the start of a stream.
    pub fn new(model: &Taehv) -> Self {
        Self { pass: Sequential::new(model.decoder_blocks().len()), model: model.clone(), raw_frames: 0 }
    }

    /// The model it decodes with.
    pub fn model(&self) -> &Taehv {
        &self.model
    }

    /// Queues latents `(N, T, 16, h, w)`; their frames come out of [`Self::next_frame`].
    pub fn push(&mut self, latents: &Tensor) -> Result<()> {
        let cfg = self.model.config();
        let dims = latents.dims();
        let [_, t, c, _, _] = *dims else {
            return Err(Error::invalid(
                "taehv streaming input",
                format!("expected (batch, frames, channels, height, width), got {dims:?}"),
            ));
        };
        if c != cfg.latent_channels {
            return Err(Error::invalid(
                "taehv streaming input",
                format!("expected {} channels, got shape {dims:?}", cfg.latent_channels),
            ));
        }
        let z = self.model.unscale(&latents.to_dtype(self.model.dtype())?.to_device(self.model.device())?)?;
        for i in 0..t {
            self.pass.push(z.narrow(1, i, 1)?.squeeze(1)?);
        }
        Ok(())
    }

    /// The next decoded frame `(N, 1, 3, H, W)` in `[0, 1]`, or `None` when every pushed latent
    /// has been decoded.
    pub fn next_frame(&mut self) -> Result<Option<Tensor>> {
        loop {
            let Some(x) = self.pass.step(self.model.decoder_blocks())? else {
                return Ok(None);
            };
            self.raw_frames += 1;
            if self.raw_frames <= self.model.config().frames_to_trim() {
                continue;
            }
            return Ok(Some(self.model.postprocess(&x)?.unsqueeze(1)?));
        }
    }

    /// Pushes `latents` and decodes every frame they complete, in order.
    pub fn decode(&mut self, latents: &Tensor) -> Result<Vec<Tensor>> {
        self.push(latents)?;
        let mut frames = Vec::new();
        while let Some(f) = self.next_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }

    /// Frames returned so far (after the leading trim).
    pub fn frames_decoded(&self) -> usize {
        self.raw_frames.saturating_sub(self.model.config().frames_to_trim())
    }

    /// Whether latents pushed earlier still have frames to give.
    pub fn has_pending(&self) -> bool {
        !self.pass.is_idle()
    }

    /// Forgets the stream: the next latent starts a new video.
    pub fn reset(&mut self) {
        self.pass = Sequential::new(self.model.decoder_blocks().len());
        self.raw_frames = 0;
    }
}
