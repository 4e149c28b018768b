//! diffusers' temporal ("framewise") and spatial tiling of encode/decode, reproduced step by
//! step: same tile positions, same dropped first frames, same linear blends (which in diffusers
//! overwrite the later tile in place, so an already blended tile is what the next one blends
//! with).

use candle_core::{Result as CResult, Tensor};

use super::AutoencoderKLHunyuanVideo;
use crate::error::Result;

/// diffusers' `blend_{t,v,h}`: the first `e = min(len_a, len_b, extent)` entries of `b` along
/// `dim` become `a[len_a − e + x]·(1 − x/e) + b[x]·(x/e)`.
fn blend(a: &Tensor, b: &Tensor, dim: usize, extent: usize) -> CResult<Tensor> {
    let (la, lb) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(la).min(lb);
    if e == 0 {
        return Ok(b.clone());
    }
    let mut shape = vec![1; b.rank()];
    shape[dim] = e;
    let wb: Vec<f64> = (0..e).map(|x| x as f64 / e as f64).collect();
    let wa: Vec<f64> = (0..e).map(|x| 1.0 - x as f64 / e as f64).collect();
    let wa = Tensor::from_vec(wa, shape.as_slice(), b.device())?.to_dtype(b.dtype())?;
    let wb = Tensor::from_vec(wb, shape.as_slice(), b.device())?.to_dtype(b.dtype())?;
    let head = (a.narrow(dim, la - e, e)?.broadcast_mul(&wa)? + b.narrow(dim, 0, e)?.broadcast_mul(&wb)?)?;
    if e == lb { Ok(head) } else { Tensor::cat(&[head, b.narrow(dim, e, lb - e)?], dim) }
}

/// The first `n` entries along `dim` (all if there are fewer), like Python slicing `[:n]`.
fn head(x: &Tensor, dim: usize, n: usize) -> CResult<Tensor> {
    let len = x.dim(dim)?;
    x.narrow(dim, 0, n.min(len))
}

/// Drops the first entry along `dim`.
fn drop_first(x: &Tensor, dim: usize) -> CResult<Tensor> {
    let len = x.dim(dim)?;
    x.narrow(dim, 1, len - 1)
}

impl AutoencoderKLHunyuanVideo {
    pub(super) fn encode_dispatch(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = x.dims5()?;
        let tl = &self.tiling;
        if tl.framewise_encoding && t > tl.sample_min_num_frames {
            return self.temporal_tiled_encode(x);
        }
        if tl.spatial && (w > tl.sample_min_width || h > tl.sample_min_height) {
            return self.spatial_tiled_encode(x);
        }
        self.encode_plain(x)
    }

    pub(super) fn decode_dispatch(&self, z: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = z.dims5()?;
        let tl = &self.tiling;
        let (lat_h, lat_w) = self.latent_tile();
        if tl.framewise_decoding && t > tl.sample_min_num_frames / self.config.temporal_compression_ratio {
            return self.temporal_tiled_decode(z);
        }
        if tl.spatial && (w > lat_w || h > lat_h) {
            return self.spatial_tiled_decode(z);
        }
        self.decode_plain(z)
    }

    /// Latent tile size `(height, width)`.
    fn latent_tile(&self) -> (usize, usize) {
        let s = self.config.spatial_compression_ratio;
        (self.tiling.sample_min_height / s, self.tiling.sample_min_width / s)
    }

    fn temporal_tiled_encode(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = x.dims5()?;
        let tl = &self.tiling;
        let r = self.config.temporal_compression_ratio;
        let latent_frames = (t - 1) / r + 1;
        let lat_min = tl.sample_min_num_frames / r;
        let lat_stride = tl.sample_stride_num_frames / r;
        let mut tiles: Vec<Tensor> = Vec::new();
        for i in (0..t).step_by(tl.sample_stride_num_frames) {
            let n = (tl.sample_min_num_frames + 1).min(t - i);
            if i > 0 && (n - 1) / r == 0 {
                continue; // one latent frame, dropped below: contributes nothing
            }
            let tile = x.narrow(2, i, n)?;
            let enc = if tl.spatial && (h > tl.sample_min_height || w > tl.sample_min_width) {
                self.spatial_tiled_encode(&tile)?
            } else {
                self.encode_plain(&tile)?
            };
            tiles.push(if i > 0 { drop_first(&enc, 2)? } else { enc });
        }
        self.join_temporal(tiles, lat_min - lat_stride, lat_stride, latent_frames)
    }

    fn temporal_tiled_decode(&self, z: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = z.dims5()?;
        let tl = &self.tiling;
        let r = self.config.temporal_compression_ratio;
        let sample_frames = (t - 1) * r + 1;
        let lat_min = tl.sample_min_num_frames / r;
        let lat_stride = tl.sample_stride_num_frames / r;
        let (tile_h, tile_w) = self.latent_tile();
        let mut tiles: Vec<Tensor> = Vec::new();
        for i in (0..t).step_by(lat_stride) {
            let n = (lat_min + 1).min(t - i);
            if i > 0 && n == 1 {
                continue; // decodes to one frame, which is dropped below
            }
            let tile = z.narrow(2, i, n)?;
            let dec = if tl.spatial && (w > tile_w || h > tile_h) {
                self.spatial_tiled_decode(&tile)?
            } else {
                self.decode_plain(&tile)?
            };
            tiles.push(if i > 0 { drop_first(&dec, 2)? } else { dec });
        }
        let blend_frames = tl.sample_min_num_frames - tl.sample_stride_num_frames;
        self.join_temporal(tiles, blend_frames, tl.sample_stride_num_frames, sample_frames)
    }

    /// Blends consecutive tiles along time, keeps `stride + 1` frames of the first tile and
    /// `stride` of the others, and crops to `total`.
    fn join_temporal(&self, mut tiles: Vec<Tensor>, extent: usize, stride: usize, total: usize) -> Result<Tensor> {
        for k in 1..tiles.len() {
            tiles[k] = blend(&tiles[k - 1], &tiles[k], 2, extent)?;
        }
        let parts = tiles
            .iter()
            .enumerate()
            .map(|(k, tile)| head(tile, 2, if k == 0 { stride + 1 } else { stride }))
            .collect::<CResult<Vec<_>>>()?;
        let joined = Tensor::cat(&parts, 2)?;
        Ok(head(&joined, 2, total)?)
    }

    fn spatial_tiled_encode(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, _, h, w) = x.dims5()?;
        let tl = &self.tiling;
        let s = self.config.spatial_compression_ratio;
        let (lat_h, lat_w) = self.latent_tile();
        let (stride_h, stride_w) = (tl.sample_stride_height / s, tl.sample_stride_width / s);
        let mut rows = Vec::new();
        for i in (0..h).step_by(tl.sample_stride_height) {
            let mut row = Vec::new();
            for j in (0..w).step_by(tl.sample_stride_width) {
                let tile =
                    x.narrow(3, i, tl.sample_min_height.min(h - i))?.narrow(4, j, tl.sample_min_width.min(w - j))?;
                row.push(self.encode_plain(&tile)?);
            }
            rows.push(row);
        }
        let joined = join_spatial(rows, (lat_h - stride_h, lat_w - stride_w), (stride_h, stride_w))?;
        Ok(head(&head(&joined, 3, h / s)?, 4, w / s)?)
    }

    fn spatial_tiled_decode(&self, z: &Tensor) -> Result<Tensor> {
        let (_, _, _, h, w) = z.dims5()?;
        let tl = &self.tiling;
        let s = self.config.spatial_compression_ratio;
        let (lat_h, lat_w) = self.latent_tile();
        let (stride_h, stride_w) = (tl.sample_stride_height / s, tl.sample_stride_width / s);
        let mut rows = Vec::new();
        for i in (0..h).step_by(stride_h) {
            let mut row = Vec::new();
            for j in (0..w).step_by(stride_w) {
                let tile = z.narrow(3, i, lat_h.min(h - i))?.narrow(4, j, lat_w.min(w - j))?;
                row.push(self.decode_plain(&tile)?);
            }
            rows.push(row);
        }
        let extent = (tl.sample_min_height - tl.sample_stride_height, tl.sample_min_width - tl.sample_stride_width);
        let joined = join_spatial(rows, extent, (tl.sample_stride_height, tl.sample_stride_width))?;
        Ok(head(&head(&joined, 3, h * s)?, 4, w * s)?)
    }
}

/// Blends every tile with the (already blended) tile above and to its left, crops each to
/// `stride` and stitches the grid.
fn join_spatial(mut rows: Vec<Vec<Tensor>>, extent: (usize, usize), stride: (usize, usize)) -> CResult<Tensor> {
    let mut out_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut parts = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend(&rows[i - 1][j], &tile, 3, extent.0)?;
            }
            if j > 0 {
                tile = blend(&rows[i][j - 1], &tile, 4, extent.1)?;
            }
            parts.push(head(&head(&tile, 3, stride.0)?, 4, stride.1)?);
            rows[i][j] = tile;
        }
        out_rows.push(Tensor::cat(&parts, 4)?);
    }
    Tensor::cat(&out_rows, 3)
}
