//! Decoded frames: RGB bytes from pixel tensors.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// One RGB frame, `width·height·3` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// RGB bytes.
    pub rgb: Vec<u8>,
}

/// Decoded pixels `(1, 3, T, H, W)` in `[-1, 1]` → RGB frames: clamp, `x·127.5 + 127.5`,
/// truncate to u8 (FramePack's writer).
pub fn to_frames(pixels: &Tensor) -> Result<Vec<Frame>> {
    let d = pixels.dims();
    if d.len() != 5 || d[0] != 1 || d[1] != 3 {
        return Err(Error::invalid("pixels", format!("expected (1, 3, T, H, W), got {d:?}")));
    }
    let (t, h, w) = (d[2], d[3], d[4]);
    let v: Vec<f32> = pixels.squeeze(0)?.permute((1, 2, 3, 0))?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(v.chunks_exact(h * w * 3)
        .take(t)
        .map(|f| Frame {
            width: w,
            height: h,
            rgb: f.iter().map(|&x| (x.clamp(-1.0, 1.0) * 127.5 + 127.5) as u8).collect(),
        })
        .collect())
}
