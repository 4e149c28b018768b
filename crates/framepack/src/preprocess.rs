//! Input image preparation as FramePack does it: resolution buckets, Lanczos cover-resize and
//! centre crop to the bucket, conversion to [−1, 1] tensors, and SigLIP's bicubic 384² squash.
//!
//! Resampling reproduces Pillow's `Image.resize` for 8-bit RGB (separable convolution with the
//! filter support widened by the downscale factor, coefficients in 22-bit fixed point, the
//! intermediate image rounded to 8 bits), so results match PIL bit for bit. By default the
//! passes run in the order of Pillow ≤ 12 (FramePack pins 11.1); see [`PassOrder`].
//!
//! ```
//! use framepack::preprocess::{RgbImage, find_nearest_bucket, image_to_tensor, resize_and_center_crop,
//!     siglip_pixel_values};
//! let device = candle_core::Device::Cpu;
//! let img = RgbImage::new(1280, 720, vec![128; 1280 * 720 * 3])?;
//! let (h, w) = find_nearest_bucket(img.height(), img.width(), 640)?;
//! assert_eq!((h, w), (480, 832));
//! let frame = resize_and_center_crop(&img, w, h)?;
//! let vae_input = image_to_tensor(&frame, &device)?; // (1, 3, 1, 480, 832) in [−1, 1]
//! let siglip_input = siglip_pixel_values(&frame, 384, &device)?; // (1, 3, 384, 384)
//! assert_eq!(vae_input.dims(), &[1, 3, 1, 480, 832]);
//! assert_eq!(siglip_input.dims(), &[1, 3, 384, 384]);
//! # Ok::<(), framepack::Error>(())
//! ```

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `RGBRGB…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps `data` (`width · height · 3` bytes); both sides must be at least 1.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid("image", format!("size {width}×{height} is empty")));
        }
        let expected = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        if expected != Some(data.len()) {
            let needed = expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string());
            return Err(Error::invalid(
                "image",
                format!("{width}×{height} RGB needs {needed} bytes, got {}", data.len()),
            ));
        }
        Ok(Self { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Gives back the bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The `width × height` region whose top-left pixel is (`left`, `top`).
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Result<Self> {
        if width == 0 || height == 0 || left + width > self.width || top + height > self.height {
            return Err(Error::invalid(
                "crop",
                format!("{width}×{height} at ({left}, {top}) does not fit in {}×{}", self.width, self.height),
            ));
        }
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let row = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[row..row + width * 3]);
        }
        Ok(Self { width, height, data })
    }
}

/// FramePack's buckets for base resolution 640, as (height, width). All sides are multiples of 32.
pub const BUCKETS_640: [(usize, usize); 14] = [
    (416, 960),
    (448, 864),
    (480, 832),
    (512, 768),
    (544, 704),
    (576, 672),
    (608, 640),
    (640, 608),
    (672, 576),
    (704, 544),
    (768, 512),
    (832, 480),
    (864, 448),
    (960, 416),
];

fn scale_side(side: usize, base: usize) -> usize {
    let x = side as f64 * (base as f64 / 640.0) / 16.0;
    x.round_ties_even() as usize * 16
}

fn check_base(base: usize) -> Result<()> {
    if !(16..=16384).contains(&base) {
        return Err(Error::invalid("base resolution", format!("{base} is outside 16..=16384")));
    }
    Ok(())
}

/// The bucket list for any base resolution: for 640 [`BUCKETS_640`]; otherwise each 640 bucket
/// scaled by `base / 640` and rounded to a multiple of 16 (the rule of kijai's FramePack
/// wrapper, Python's half-to-even `round`). Sides are multiples of 16 as the VAE (×8) and the
/// transformer's 2×2 patches need.
pub fn buckets(base: usize) -> Result<Vec<(usize, usize)>> {
    check_base(base)?;
    Ok(BUCKETS_640.iter().map(|&(h, w)| (scale_side(h, base), scale_side(w, base))).collect())
}

/// The bucket (height, width) for an input of `height × width`: the 640 bucket minimising
/// `|h·bw − w·bh|` (ties go to the later entry, so a square input gives 640×608), then scaled to
/// `base` as in [`buckets`].
pub fn find_nearest_bucket(height: usize, width: usize, base: usize) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        return Err(Error::invalid("image", format!("size {width}×{height} is empty")));
    }
    check_base(base)?;
    let (h, w) = (height as u128, width as u128);
    let mut best = BUCKETS_640[0];
    let mut best_metric = u128::MAX;
    for &(bh, bw) in &BUCKETS_640 {
        let metric = (h * bw as u128).abs_diff(w * bh as u128);
        if metric <= best_metric {
            best_metric = metric;
            best = (bh, bw);
        }
    }
    Ok((scale_side(best.0, base), scale_side(best.1, base)))
}

/// Resampling filters of Pillow's `Image.resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with a = −0.5, support 2 (`Image.BICUBIC`).
    Bicubic,
    /// Lanczos-3 windowed sinc, support 3 (`Image.LANCZOS`).
    Lanczos,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        }
        match self {
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, number of taps, and the fixed-point taps.
struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let inv_filterscale = 1.0 / filterscale;
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; negative starts are clamped to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            *kx = filter.weight(((x + xmin) as f64 - center + 0.5) * inv_filterscale);
            total += *kx;
        }
        for x in 0..xmax {
            let w = if total != 0.0 { k[x] / total } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Taps { ksize, bounds, weights }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over rows `first..first + n_rows` of a `src_w`-wide image.
fn horizontal_pass(src: &[u8], src_w: usize, first: usize, n_rows: usize, t: &Taps) -> Vec<u8> {
    let out_w = t.bounds.len();
    let mut out = vec![0u8; n_rows * out_w * 3];
    for y in 0..n_rows {
        let row = &src[(first + y) * src_w * 3..(first + y + 1) * src_w * 3];
        for (xx, &(xmin, n)) in t.bounds.iter().enumerate() {
            let k = &t.weights[xx * t.ksize..xx * t.ksize + n];
            for c in 0..3 {
                let mut acc = 1i64 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate() {
                    acc += row[(xmin + x) * 3 + c] as i64 * w as i64;
                }
                out[(y * out_w + xx) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

/// Vertical pass of a `w`-wide image whose first stored row is source row `row_offset`.
fn vertical_pass(src: &[u8], w: usize, row_offset: usize, t: &Taps) -> Vec<u8> {
    let mut out = vec![0u8; t.bounds.len() * w * 3];
    for (yy, &(ymin, n)) in t.bounds.iter().enumerate() {
        let k = &t.weights[yy * t.ksize..yy * t.ksize + n];
        let ymin = ymin - row_offset;
        for i in 0..w * 3 {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (y, &w8) in k.iter().enumerate() {
                acc += src[(ymin + y) * w * 3 + i] as i64 * w8 as i64;
            }
            out[yy * w * 3 + i] = clip8(acc);
        }
    }
    out
}

/// Order of the two 1-D passes, which matters because the intermediate image is rounded to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Horizontal then vertical, as Pillow ≤ 12 always does (FramePack pins Pillow 11.1).
    #[default]
    HorizontalFirst,
    /// Pillow ≥ 13: vertical first when the height shrinks by more than twice the width's shrink.
    Adaptive,
}

/// Resizes like Pillow's `Image.resize((width, height), filter)` on an RGB image, with the pass
/// order of Pillow ≤ 12 (FramePack's pinned version).
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> Result<RgbImage> {
    resize_with_order(img, width, height, filter, PassOrder::HorizontalFirst)
}

/// [`resize`] with an explicit pass order.
pub fn resize_with_order(
    img: &RgbImage,
    width: usize,
    height: usize,
    filter: Filter,
    order: PassOrder,
) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::invalid("resize", format!("target size {width}×{height} is empty")));
    }
    let need_h = width != img.width;
    let need_v = height != img.height;
    let shrink_h = img.height as i64 - height as i64;
    let shrink_w = img.width as i64 - width as i64;
    let horizontal_first = order == PassOrder::HorizontalFirst || !(shrink_h > 0 && shrink_h > shrink_w * 2);
    let data = if horizontal_first {
        let vert = taps(img.height, height, filter);
        let (first, rows, tmp) = if need_h {
            let first = vert.bounds[0].0;
            let last = vert.bounds.last().map(|&(lo, n)| lo + n).unwrap_or(first);
            (
                first,
                last - first,
                horizontal_pass(&img.data, img.width, first, last - first, &taps(img.width, width, filter)),
            )
        } else {
            (0, img.height, img.data.clone())
        };
        debug_assert_eq!(tmp.len(), rows * width * 3);
        if need_v { vertical_pass(&tmp, width, first, &vert) } else { tmp }
    } else {
        let tmp = if need_v {
            vertical_pass(&img.data, img.width, 0, &taps(img.height, height, filter))
        } else {
            img.data.clone()
        };
        if need_h { horizontal_pass(&tmp, img.width, 0, height, &taps(img.width, width, filter)) } else { tmp }
    };
    RgbImage::new(width, height, data)
}

/// FramePack's `resize_and_center_crop`: unchanged if already `target_width × target_height`;
/// otherwise a Lanczos resize that covers the target (scale = max of the two ratios, sides rounded
/// half-to-even) and a centred crop (offsets rounded half-to-even, as PIL's `crop` rounds).
pub fn resize_and_center_crop(img: &RgbImage, target_width: usize, target_height: usize) -> Result<RgbImage> {
    if target_width == 0 || target_height == 0 {
        return Err(Error::invalid("crop", format!("target size {target_width}×{target_height} is empty")));
    }
    if img.width == target_width && img.height == target_height {
        return Ok(img.clone());
    }
    let scale = (target_width as f64 / img.width as f64).max(target_height as f64 / img.height as f64);
    let rw = ((img.width as f64 * scale).round_ties_even() as usize).max(target_width);
    let rh = ((img.height as f64 * scale).round_ties_even() as usize).max(target_height);
    let resized = resize(img, rw, rh, Filter::Lanczos)?;
    let left = ((rw - target_width) as f64 / 2.0).round_ties_even() as usize;
    let top = ((rh - target_height) as f64 / 2.0).round_ties_even() as usize;
    resized.crop(left, top, target_width, target_height)
}

/// Planar f32 channels of `img` mapped through `f`: (3, height, width) values, channel-major.
fn planar(img: &RgbImage, f: impl Fn(u8) -> f32) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = f(px[c]);
        }
    }
    out
}

/// The image as FramePack feeds it to the VAE: `x / 127.5 − 1`, shape (1, 3, 1, height, width), f32.
pub fn image_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let data = planar(img, |v| v as f32 / 127.5 - 1.0);
    Ok(Tensor::from_vec(data, (1, 3, 1, img.height, img.width), device)?)
}

/// SigLIP's `pixel_values` for `img`: bicubic resize (aspect not kept) to `size × size` (384 for
/// so400m-patch14-384), `x / 255` (in f64, then f32, as transformers' `rescale`), then
/// `(x − 0.5) / 0.5`; shape (1, 3, size, size), f32.
pub fn siglip_pixel_values(img: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    if size == 0 {
        return Err(Error::invalid("SigLIP image size", "must be at least 1"));
    }
    let resized = resize(img, size, size, Filter::Bicubic)?;
    let data = planar(&resized, |v| ((v as f64 * (1.0 / 255.0)) as f32 - 0.5) / 0.5);
    Ok(Tensor::from_vec(data, (1, 3, size, size), device)?)
}
