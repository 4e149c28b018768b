//! The inputs of one forward pass and their checks.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

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

/// Checked scalar and text inputs: per-sample timesteps, guidance values and valid text lengths.
pub(super) struct StepConditioning {
    pub(super) timestep: Vec<f32>,
    pub(super) guidance: Option<Vec<f32>>,
    pub(super) lens: Vec<usize>,
}

/// Frame indices of one group: one row shared by the batch, or one row per sample.
pub(super) struct Frames(pub(super) Vec<Vec<f32>>);

impl Frames {
    pub(super) fn row(&self, b: usize) -> &[f32] {
        if self.0.len() == 1 { &self.0[0] } else { &self.0[b] }
    }
}

pub(super) fn read_indices(t: &Tensor, what: &'static str, batch: usize, expected: usize) -> Result<Frames> {
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

pub(super) fn read_scalars(t: &Tensor, what: &'static str, batch: usize) -> Result<Vec<f32>> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    match v.len() {
        1 => Ok(vec![v[0]; batch]),
        n if n == batch => Ok(v),
        n => Err(Error::invalid(what, format!("expected {batch} values (one per sample), got {n}"))),
    }
}

pub(super) fn valid_lengths(mask: &Tensor, batch: usize, len: usize) -> Result<Vec<usize>> {
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
