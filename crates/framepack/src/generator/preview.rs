//! Cheap latent previews (as FramePack's demo shows while it samples): a per-pixel linear map from the 16 latent channels to RGB,
//! no VAE involved.

use candle_core::{DType, Tensor};

use super::Frame;
use crate::error::{Error, Result};

/// Rows: latent channels 0..15; columns: R, G, B (from ComfyUI, as FramePack uses).
pub const LATENT_RGB_FACTORS: [[f32; 3]; 16] = [
    [-0.0395, -0.0331, 0.0445],
    [0.0696, 0.0795, 0.0518],
    [0.0135, -0.0945, -0.0282],
    [0.0108, -0.0250, -0.0765],
    [-0.0209, 0.0032, 0.0224],
    [-0.0804, -0.0254, -0.0639],
    [-0.0991, 0.0271, -0.0669],
    [-0.0646, -0.0422, -0.0400],
    [-0.0696, -0.0595, -0.0894],
    [-0.0799, -0.0208, -0.0375],
    [0.1166, 0.1627, 0.0962],
    [0.1165, 0.0432, 0.0407],
    [-0.2315, -0.1920, -0.1355],
    [-0.0270, 0.0401, -0.0821],
    [-0.0616, -0.0997, -0.0727],
    [0.0249, -0.0469, -0.1703],
];

/// Bias added after [`LATENT_RGB_FACTORS`].
pub const LATENT_RGB_BIAS: [f32; 3] = [0.0259, -0.0192, -0.0761];

/// A preview of latents `(1, 16, T, h, w)` (e.g. [`super::Progress::denoised`]): every latent
/// frame mapped to RGB (clamped to `[0, 1]`) at latent resolution, the frames side by side in
/// one `T·w × h` image.
pub fn latent_preview(latents: &Tensor) -> Result<Frame> {
    let d = latents.dims();
    if d.len() != 5 || d[0] != 1 || d[1] != 16 {
        return Err(Error::invalid("preview latents", format!("expected (1, 16, T, h, w), got {d:?}")));
    }
    let (t, h, w) = (d[2], d[3], d[4]);
    let v: Vec<f32> = latents.squeeze(0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = t * h * w;
    let width = t * w;
    let mut rgb = vec![0u8; width * h * 3];
    for f in 0..t {
        for y in 0..h {
            for x in 0..w {
                let cell = (f * h + y) * w + x;
                let mut px = LATENT_RGB_BIAS;
                for (ch, row) in LATENT_RGB_FACTORS.iter().enumerate() {
                    let z = v[ch * plane + cell];
                    for k in 0..3 {
                        px[k] += z * row[k];
                    }
                }
                let o = (y * width + f * w + x) * 3;
                for k in 0..3 {
                    rgb[o + k] = (px[k].clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    Ok(Frame { width, height: h, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn preview_is_the_linear_map_side_by_side() {
        // Channel 10 = 1 at frame 1 only: pixel = bias + row 10.
        let mut v = vec![0f32; 16 * 2 * 2]; // (C, T, h, w) = (16, 2, 1, 2)
        v[10 * 4 + 2] = 1.0; // channel 10, frame 1, x 0
        let z = Tensor::from_vec(v, (1, 16, 2, 1, 2), &Device::Cpu).unwrap();
        let p = latent_preview(&z).unwrap();
        assert_eq!((p.width, p.height), (4, 1));
        let px = |i: usize| &p.rgb[i * 3..i * 3 + 3];
        let bias: Vec<u8> = LATENT_RGB_BIAS.iter().map(|b| (b.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        assert_eq!(px(0), &bias[..]);
        let lit: Vec<u8> = (0..3)
            .map(|k| ((LATENT_RGB_BIAS[k] + LATENT_RGB_FACTORS[10][k]).clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        assert_eq!(px(2), &lit[..]);
        assert!(latent_preview(&Tensor::zeros((1, 4, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
