//! FramePack's section-wise decoding: each section decodes only its new latents plus the
//! `W` adjacent latents of the previous section, and cross-fades the result into the running
//! video over the `4W − 3` frames those context latents decode to ([`soft_append`]).
//!
//! Frames become final once no later section can blend into them, so [`SectionDecoder`] and
//! [`PixelHistory`] hand out finished frames section by section and keep only the `4W − 3`
//! provisional frames (constant memory, whatever the video length). Tensors are
//! `(batch, channels, frames, height, width)`; nothing here depends on a particular VAE.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::packing::SectionOrder;

/// The blend weights `torch.linspace(1, 0, n)` in f32 (same formula as PyTorch: the first half
/// counts up from the start, the second half down from the end).
fn linspace_one_to_zero(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![1.0];
    }
    let (start, end) = (1f32, 0f32);
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}

/// FramePack's `soft_append_bcthw`: `a[:−ov] ++ (w·a[−ov:] + (1 − w)·b[:ov]) ++ b[ov:]` along
/// the frame axis, with `w = linspace(1, 0, ov)`. `overlap = 0` concatenates.
pub fn soft_append(a: &Tensor, b: &Tensor, overlap: usize) -> Result<Tensor> {
    let (la, lb) = (frames_of(a, "soft_append history")?, frames_of(b, "soft_append current")?);
    let (da, db) = (a.dims(), b.dims());
    if da[..2] != db[..2] || da[3..] != db[3..] {
        return Err(Error::invalid("soft_append", format!("shapes {da:?} and {db:?} differ outside the frame axis")));
    }
    if overlap == 0 {
        return Ok(Tensor::cat(&[a, b], 2)?);
    }
    if la < overlap || lb < overlap {
        return Err(Error::invalid(
            "soft_append",
            format!("overlap {overlap} is longer than the inputs ({la} and {lb} frames)"),
        ));
    }
    let compute = if a.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    let w = Tensor::from_vec(linspace_one_to_zero(overlap), (1, 1, overlap, 1, 1), a.device())?.to_dtype(compute)?;
    let a_tail = a.narrow(2, la - overlap, overlap)?.to_dtype(compute)?;
    let b_head = b.narrow(2, 0, overlap)?.to_dtype(compute)?;
    let one_minus_w = w.affine(-1.0, 1.0)?;
    let blended = (a_tail.broadcast_mul(&w)? + b_head.broadcast_mul(&one_minus_w)?)?.to_dtype(a.dtype())?;
    let mut parts = Vec::with_capacity(3);
    if la > overlap {
        parts.push(a.narrow(2, 0, la - overlap)?);
    }
    parts.push(blended);
    if lb > overlap {
        parts.push(b.narrow(2, overlap, lb - overlap)?.to_dtype(a.dtype())?);
    }
    Ok(Tensor::cat(&parts, 2)?)
}

fn frames_of(x: &Tensor, what: &'static str) -> Result<usize> {
    match x.dims() {
        [_, _, t, _, _] => Ok(*t),
        d => Err(Error::invalid(what, format!("expected (batch, channels, frames, height, width), got {d:?}"))),
    }
}

/// The decoded video of a generation job, kept as its provisional frames only: pushing a decoded
/// section blends it in with [`soft_append`] and returns the frames that no later section can
/// change any more.
#[derive(Debug, Clone)]
pub struct PixelHistory {
    order: SectionOrder,
    overlap: usize,
    provisional: Option<Tensor>,
    finalized: usize,
}

impl PixelHistory {
    /// An empty history whose sections overlap by `overlap` frames (`4W − 3` in FramePack).
    pub fn new(order: SectionOrder, overlap: usize) -> Self {
        Self { order, overlap, provisional: None, finalized: 0 }
    }

    /// The cross-fade length in frames.
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Frames handed out so far.
    pub fn finalized_frames(&self) -> usize {
        self.finalized
    }

    /// Frames still waiting for the next section (at most `overlap`).
    pub fn provisional(&self) -> Option<&Tensor> {
        self.provisional.as_ref()
    }

    /// Blends in a decoded section and returns the frames that became final, in time order
    /// (`None` if none did). See [`SectionOrder`] for where they sit in the video.
    pub fn push(&mut self, section: &Tensor) -> Result<Option<Tensor>> {
        frames_of(section, "decoded section")?;
        let ov = self.overlap;
        let merged = match (&self.provisional, self.order) {
            (None, _) => section.clone(),
            (Some(p), SectionOrder::Forward) => soft_append(p, section, ov)?,
            (Some(p), SectionOrder::Inverted) => soft_append(section, p, ov)?,
        };
        let len = merged.dim(2)?;
        let keep = ov.min(len);
        let (done, provisional) = match self.order {
            SectionOrder::Forward => (merged.narrow(2, 0, len - keep)?, merged.narrow(2, len - keep, keep)?),
            SectionOrder::Inverted => (merged.narrow(2, keep, len - keep)?, merged.narrow(2, 0, keep)?),
        };
        self.provisional = Some(provisional);
        if len == keep {
            return Ok(None);
        }
        self.finalized += len - keep;
        Ok(Some(done))
    }

    /// Ends the job: the provisional frames are final too.
    pub fn finish(self) -> Option<Tensor> {
        self.provisional
    }
}

/// Decodes FramePack sections as the demos do and hands out finished frames.
///
/// Push each section's new latents in time order:
/// - [`SectionOrder::Inverted`] (original model): the sampled latents; on the last section the
///   start latent is prepended first (FramePack's `is_last_section` step).
/// - [`SectionOrder::Forward`] (F1): on the first section `[start latent, new latents]`
///   (F1's history starts with the start latent), afterwards only the new latents.
///
/// The first push decodes everything pushed; later pushes decode the new latents together with
/// the `W` previously pushed latents next to them in time (`2W` or `2W + 1` latents in
/// FramePack) and cross-fade over `4W − 3` frames.
///
/// ```no_run
/// # use framepack::models::vae::{AutoencoderKLHunyuanVideo, SectionDecoder};
/// # use framepack::packing::SectionOrder;
/// # fn run(vae: &AutoencoderKLHunyuanVideo, sections: &[candle_core::Tensor]) -> framepack::Result<()> {
/// let mut decoder = SectionDecoder::new(SectionOrder::Forward, 9)?;
/// for latents in sections {
///     // Transformer latents are scaled; the VAE decodes unscaled ones.
///     if let Some(frames) = decoder.push(latents, |z| vae.decode(&vae.unscale_latents(z)?))? {
///         // `frames`: (B, 3, n, H, W) in [-1, 1], final, in time order.
///     }
/// }
/// let last_frames = decoder.finish();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SectionDecoder {
    window: usize,
    context: Option<Tensor>,
    pixels: PixelHistory,
}

impl SectionDecoder {
    /// A decoder for `latent_window_size = window` (9 in FramePack: overlap 33 frames).
    pub fn new(order: SectionOrder, window: usize) -> Result<Self> {
        if window == 0 {
            return Err(Error::invalid("latent_window_size", "must be at least 1"));
        }
        Ok(Self { window, context: None, pixels: PixelHistory::new(order, 4 * window - 3) })
    }

    /// The cross-fade length in frames, `4W − 3`.
    pub fn overlap(&self) -> usize {
        self.pixels.overlap()
    }

    /// The pixel history (provisional frames and counts).
    pub fn pixels(&self) -> &PixelHistory {
        &self.pixels
    }

    /// Decodes a section with `decode` (latents `(B, C, T, h, w)` → frames `(B, c, 4T − 3, H, W)`)
    /// and returns the frames that became final, in time order.
    pub fn push<F>(&mut self, new_latents: &Tensor, mut decode: F) -> Result<Option<Tensor>>
    where
        F: FnMut(&Tensor) -> Result<Tensor>,
    {
        frames_of(new_latents, "section latents")?;
        let w = self.window;
        let order = self.pixels.order;
        let to_decode = match &self.context {
            None => new_latents.clone(),
            Some(ctx) => {
                let c = ctx.dim(2)?;
                if c < w {
                    return Err(Error::invalid(
                        "section latents",
                        format!("the first section must have at least latent_window_size = {w} latents, it had {c}"),
                    ));
                }
                match order {
                    SectionOrder::Inverted => Tensor::cat(&[new_latents, ctx], 2)?,
                    SectionOrder::Forward => Tensor::cat(&[ctx, new_latents], 2)?,
                }
            }
        };
        let t = to_decode.dim(2)?;
        let decoded = decode(&to_decode)?;
        let frames = frames_of(&decoded, "decoded section")?;
        if frames != 4 * t - 3 {
            return Err(Error::invalid(
                "decoded section",
                format!("{t} latents decoded to {frames} frames, expected {}", 4 * t - 3),
            ));
        }
        let out = self.pixels.push(&decoded)?;
        let keep = w.min(t);
        self.context = Some(match order {
            SectionOrder::Inverted => to_decode.narrow(2, 0, keep)?,
            SectionOrder::Forward => to_decode.narrow(2, t - keep, keep)?,
        });
        Ok(out)
    }

    /// Ends the job and returns the remaining (provisional) frames.
    pub fn finish(self) -> Option<Tensor> {
        self.pixels.finish()
    }
}
