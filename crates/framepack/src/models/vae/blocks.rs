//! Building blocks of the HunyuanVideo causal VAE: causal 3-D convolution, resnets, the
//! frame-causal mid-block attention, down/up blocks, encoder and decoder.
//!
//! Activations are `(batch, channels, frames, height, width)`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::Config;
use crate::models::kernels;

const GROUP_NORM_EPS: f64 = 1e-6;

/// Upper bound (elements) of one attention score block.
const ATTN_CHUNK_ELEMS: usize = 1 << 25;

/// Named activations collected for debugging and parity tests.
pub(crate) type Trace<'a> = Option<&'a mut Vec<(String, Tensor)>>;

fn record(trace: &mut Trace<'_>, name: &str, t: &Tensor) {
    if let Some(v) = trace.as_deref_mut() {
        v.push((name.to_string(), t.clone()));
    }
}

/// Conv3d with a cubic kernel `k`, replicate padding of `k − 1` frames in front and `k / 2`
/// pixels on each side of H and W, and no padding inside the convolution itself.
///
/// [`kernels::causal_conv3d`] picks the implementation (shifted GEMMs, im2col for training, or
/// candle's conv2d over stacked time taps).
#[derive(Debug, Clone)]
pub(crate) struct CausalConv3d {
    weight: Tensor,
    bias: Tensor,
    in_channels: usize,
    kernel: usize,
    stride_t: usize,
    stride_hw: usize,
}

impl CausalConv3d {
    /// `vb` holds `weight` and `bias` (diffusers nests them under `.conv` for the causal convs).
    pub(crate) fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: (usize, usize),
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel, kernel), "weight")?;
        let bias = vb.get(out_channels, "bias")?;
        Ok(Self { weight, bias, in_channels, kernel, stride_t: stride.0, stride_hw: stride.1 })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _, _) = x.dims5()?;
        if c != self.in_channels {
            candle_core::bail!("causal conv expects {} channels, got {c}", self.in_channels);
        }
        kernels::causal_conv3d(x, (&self.weight, &self.bias), self.kernel, (self.stride_t, self.stride_hw))
    }
}

/// GroupNorm (eps 1e-6, affine) over `(B, C, T, H, W)`: statistics span all frames and pixels
/// of a group, so the VAE is not frame-local.
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    inner: candle_nn::GroupNorm,
}

impl GroupNorm {
    fn forward_impl(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        kernels::group_norm(&self.inner, (&self.weight, &self.bias), self.groups, GROUP_NORM_EPS, silu, x)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, false)
    }

    /// `silu(group_norm(x))`.
    pub(crate) fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, true)
    }
}

fn group_norm(vb: VarBuilder, groups: usize, channels: usize) -> Result<GroupNorm> {
    let weight = vb.get(channels, "weight")?;
    let bias = vb.get(channels, "bias")?;
    let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, GROUP_NORM_EPS)?;
    Ok(GroupNorm { weight, bias, groups, inner })
}

/// GroupNorm → SiLU → conv → GroupNorm → SiLU → conv, plus a 1×1×1 shortcut when the
/// channel count changes.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: CausalConv3d,
    norm2: GroupNorm,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl ResnetBlock {
    pub(crate) fn new(vb: VarBuilder, in_c: usize, out_c: usize, groups: usize) -> Result<Self> {
        let conv_shortcut = if in_c != out_c {
            Some(CausalConv3d::new(vb.pp("conv_shortcut").pp("conv"), in_c, out_c, 1, (1, 1))?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(vb.pp("norm1"), groups, in_c)?,
            conv1: CausalConv3d::new(vb.pp("conv1").pp("conv"), in_c, out_c, 3, (1, 1))?,
            norm2: group_norm(vb.pp("norm2"), groups, out_c)?,
            conv2: CausalConv3d::new(vb.pp("conv2").pp("conv"), out_c, out_c, 3, (1, 1))?,
            conv_shortcut,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.conv_shortcut {
            Some(s) => h + s.forward(x)?,
            None => h + x,
        }
    }
}

/// Single-head self-attention over all voxels with a block-causal mask over frames: a token
/// sees every token of its own and earlier frames. GroupNorm before, residual after.
#[derive(Debug, Clone)]
pub(crate) struct FrameCausalAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
}

impl FrameCausalAttention {
    pub(crate) fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        let lin = |name: &str| candle_nn::linear(channels, channels, vb.pp(name));
        Ok(Self {
            group_norm: group_norm(vb.pp("group_norm"), groups, channels)?,
            to_q: lin("to_q")?,
            to_k: lin("to_k")?,
            to_v: lin("to_v")?,
            to_out: candle_nn::linear(channels, channels, vb.pp("to_out").pp("0"))?,
            channels,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let hw = h * w;
        let tokens = |y: &Tensor| y.permute((0, 2, 3, 4, 1))?.reshape((b, t * hw, c));
        let normed = tokens(&self.group_norm.forward(x)?)?;
        let q = self.to_q.forward(&normed)?;
        let k = self.to_k.forward(&normed)?;
        let v = self.to_v.forward(&normed)?;
        let scale = 1.0 / (self.channels as f64).sqrt();
        let mut frames = Vec::with_capacity(t);
        for f in 0..t {
            let keys = (f + 1) * hw;
            let k_f = k.narrow(1, 0, keys)?.t()?.contiguous()?;
            let v_f = v.narrow(1, 0, keys)?.contiguous()?;
            let rows = (ATTN_CHUNK_ELEMS / (keys * b).max(1)).clamp(1, hw);
            let mut q0 = 0;
            while q0 < hw {
                let n = rows.min(hw - q0);
                let q_c = q.narrow(1, f * hw + q0, n)?;
                let scores = (q_c.matmul(&k_f)? * scale)?;
                let probs = if matches!(scores.dtype(), DType::F16 | DType::BF16) {
                    crate::models::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?
                } else {
                    crate::models::ops::softmax_last_dim(&scores)?
                };
                frames.push(probs.matmul(&v_f)?);
                q0 += n;
            }
        }
        let attn = Tensor::cat(&frames, 1)?;
        let out = self.to_out.forward(&attn)?;
        let out = out.reshape((b, t, h, w, c))?.permute((0, 4, 1, 2, 3))?;
        out + x
    }
}

/// resnet → (attention → resnet).
#[derive(Debug, Clone)]
pub(crate) struct MidBlock {
    resnet0: ResnetBlock,
    attention: Option<FrameCausalAttention>,
    resnet1: ResnetBlock,
}

impl MidBlock {
    pub(crate) fn new(vb: VarBuilder, channels: usize, groups: usize, add_attention: bool) -> Result<Self> {
        let attention = if add_attention {
            Some(FrameCausalAttention::new(vb.pp("attentions").pp("0"), channels, groups)?)
        } else {
            None
        };
        Ok(Self {
            resnet0: ResnetBlock::new(vb.pp("resnets").pp("0"), channels, channels, groups)?,
            attention,
            resnet1: ResnetBlock::new(vb.pp("resnets").pp("1"), channels, channels, groups)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet0.forward(x)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnet1.forward(&h)
    }
}

/// `layers` resnets (`resnets.N`), the first mapping `in_c` to `out_c` channels.
fn resnet_stack(vb: &VarBuilder, in_c: usize, out_c: usize, layers: usize, groups: usize) -> Result<Vec<ResnetBlock>> {
    (0..layers)
        .map(|i| ResnetBlock::new(vb.pp("resnets").pp(i), if i == 0 { in_c } else { out_c }, out_c, groups))
        .collect()
}

fn run_stack(resnets: &[ResnetBlock], x: &Tensor) -> Result<Tensor> {
    resnets.iter().try_fold(x.clone(), |h, r| r.forward(&h))
}

/// Resnets followed by an optional strided causal conv (stride `(t, hw)`).
#[derive(Debug, Clone)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsampler: Option<CausalConv3d>,
}

impl DownBlock {
    fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        layers: usize,
        groups: usize,
        stride: (usize, usize),
    ) -> Result<Self> {
        let resnets = resnet_stack(&vb, in_c, out_c, layers, groups)?;
        let downsampler = if stride != (1, 1) {
            Some(CausalConv3d::new(vb.pp("downsamplers").pp("0").pp("conv").pp("conv"), out_c, out_c, 3, stride)?)
        } else {
            None
        };
        Ok(Self { resnets, downsampler })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = run_stack(&self.resnets, x)?;
        match &self.downsampler {
            Some(d) => d.forward(&h),
            None => Ok(h),
        }
    }
}

/// Repeats every element `factor` times along `dim` (nearest-neighbour upsampling).
fn repeat_interleave(x: &Tensor, dim: usize, factor: usize) -> Result<Tensor> {
    if factor == 1 {
        return Ok(x.clone());
    }
    let mut dims = x.dims().to_vec();
    let expanded = x.unsqueeze(dim + 1)?;
    let mut target = expanded.dims().to_vec();
    target[dim + 1] = factor;
    dims[dim] *= factor;
    expanded.broadcast_as(target)?.reshape(dims)
}

/// Nearest upsampling by `(t, hw)`, where the first frame is only upsampled spatially, then a
/// causal conv.
#[derive(Debug, Clone)]
pub(crate) struct Upsampler {
    conv: CausalConv3d,
    factor_t: usize,
    factor_hw: usize,
}

impl Upsampler {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(2)?;
        let spatial = |y: &Tensor| repeat_interleave(&repeat_interleave(y, 3, self.factor_hw)?, 4, self.factor_hw);
        let first = spatial(&x.narrow(2, 0, 1)?)?;
        let h = if t > 1 {
            let rest = repeat_interleave(&spatial(&x.narrow(2, 1, t - 1)?)?, 2, self.factor_t)?;
            Tensor::cat(&[first, rest], 2)?
        } else {
            first
        };
        self.conv.forward(&h)
    }
}

/// Resnets followed by an optional [`Upsampler`].
#[derive(Debug, Clone)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsampler: Option<Upsampler>,
}

impl UpBlock {
    fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        layers: usize,
        groups: usize,
        factor: (usize, usize),
    ) -> Result<Self> {
        let resnets = resnet_stack(&vb, in_c, out_c, layers, groups)?;
        let upsampler = if factor != (1, 1) {
            let conv = CausalConv3d::new(vb.pp("upsamplers").pp("0").pp("conv").pp("conv"), out_c, out_c, 3, (1, 1))?;
            Some(Upsampler { conv, factor_t: factor.0, factor_hw: factor.1 })
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = run_stack(&self.resnets, x)?;
        match &self.upsampler {
            Some(u) => u.forward(&h),
            None => Ok(h),
        }
    }
}

/// Pixels → `2·latent_channels` moments (before `quant_conv`).
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    pub(crate) fn new(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let conv_in = CausalConv3d::new(vb.pp("conv_in").pp("conv"), cfg.in_channels, ch[0], 3, (1, 1))?;
        let strides = cfg.down_strides();
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut prev = ch[0];
        for (i, &out_c) in ch.iter().enumerate() {
            let b = DownBlock::new(vb.pp("down_blocks").pp(i), prev, out_c, cfg.layers_per_block, g, strides[i])?;
            down_blocks.push(b);
            prev = out_c;
        }
        let last = *ch.last().unwrap_or(&0);
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: MidBlock::new(vb.pp("mid_block"), last, g, cfg.mid_block_add_attention)?,
            conv_norm_out: group_norm(vb.pp("conv_norm_out"), g, last)?,
            conv_out: CausalConv3d::new(vb.pp("conv_out").pp("conv"), last, 2 * cfg.latent_channels, 3, (1, 1))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mut trace: Trace<'_>) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        record(&mut trace, "encoder.conv_in", &h);
        for (i, b) in self.down_blocks.iter().enumerate() {
            h = b.forward(&h)?;
            record(&mut trace, &format!("encoder.down_blocks.{i}"), &h);
        }
        h = self.mid_block.forward(&h)?;
        record(&mut trace, "encoder.mid_block", &h);
        let h = self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)?;
        record(&mut trace, "encoder", &h);
        Ok(h)
    }
}

/// Latents (after `post_quant_conv`) → pixels.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    pub(crate) fn new(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let first = rev[0];
        let factors = cfg.up_factors();
        let mut up_blocks = Vec::with_capacity(rev.len());
        let mut prev = first;
        for (i, &out_c) in rev.iter().enumerate() {
            let b = UpBlock::new(vb.pp("up_blocks").pp(i), prev, out_c, cfg.layers_per_block + 1, g, factors[i])?;
            up_blocks.push(b);
            prev = out_c;
        }
        let c0 = cfg.block_out_channels[0];
        Ok(Self {
            conv_in: CausalConv3d::new(vb.pp("conv_in").pp("conv"), cfg.latent_channels, first, 3, (1, 1))?,
            mid_block: MidBlock::new(vb.pp("mid_block"), first, g, cfg.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: group_norm(vb.pp("conv_norm_out"), g, c0)?,
            conv_out: CausalConv3d::new(vb.pp("conv_out").pp("conv"), c0, cfg.out_channels, 3, (1, 1))?,
        })
    }

    pub(crate) fn forward(&self, z: &Tensor, mut trace: Trace<'_>) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        record(&mut trace, "decoder.conv_in", &h);
        h = self.mid_block.forward(&h)?;
        record(&mut trace, "decoder.mid_block", &h);
        for (i, b) in self.up_blocks.iter().enumerate() {
            h = b.forward(&h)?;
            record(&mut trace, &format!("decoder.up_blocks.{i}"), &h);
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }
}

/// Plain 1×1×1 Conv3d (`quant_conv`, `post_quant_conv`): a per-voxel linear map of channels.
#[derive(Debug, Clone)]
pub(crate) struct PointwiseConv3d(CausalConv3d);

impl PointwiseConv3d {
    pub(crate) fn new(vb: VarBuilder, in_c: usize, out_c: usize) -> Result<Self> {
        Ok(Self(CausalConv3d::new(vb, in_c, out_c, 1, (1, 1))?))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_and_generic_causal_conv_agree() -> Result<()> {
        let dev = Device::Cpu;
        for (k, b, c, o, t, h, w) in
            [(3, 2, 5, 7, 4, 6, 5), (3, 1, 3, 2, 1, 3, 4), (1, 2, 4, 3, 3, 2, 2), (3, 1, 2, 3, 6, 1, 1)]
        {
            let weight = Tensor::randn(0f32, 0.3, (o, c, k, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 0.1, o, &dev)?;
            let conv = CausalConv3d { weight, bias, in_channels: c, kernel: k, stride_t: 1, stride_hw: 1 };
            let x = Tensor::randn(0f32, 1.0, (b, c, t, h, w), &dev)?;
            let fast = conv.forward(&x)?;
            let generic = kernels::conv3d::stacked_conv2d(&x, (&conv.weight, &conv.bias), k, (1, 1))?;
            assert_eq!(fast.dims(), &[b, o, t, h, w]);
            let d = (fast - generic)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "k={k}: max diff {d}");
        }
        Ok(())
    }

    #[test]
    fn unfolded_causal_conv_agrees_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (k, st, shw, c, o, t, h, w) in
            [(3, 1, 1, 3, 4, 5, 6, 5), (3, 1, 2, 2, 3, 3, 6, 4), (3, 2, 2, 2, 3, 5, 5, 6), (1, 1, 1, 4, 2, 3, 2, 2)]
        {
            let weight = candle_core::Var::randn(0f32, 0.3, (o, c, k, k, k), &dev)?;
            let bias = candle_core::Var::randn(0f32, 0.1, o, &dev)?;
            let conv = CausalConv3d {
                weight: weight.as_tensor().clone(),
                bias: bias.as_tensor().clone(),
                in_channels: c,
                kernel: k,
                stride_t: st,
                stride_hw: shw,
            };
            let x = candle_core::Var::randn(0f32, 1.0, (2, c, t, h, w), &dev)?;
            // Reference: the stride-1 conv2d path, subsampled (candle's strided conv2d backward
            // rejects odd sizes).
            let every = |x: Tensor, dim: usize, s: usize| -> Result<Tensor> {
                let ids: Vec<u32> = (0..x.dim(dim)?.div_ceil(s)).map(|i| (i * s) as u32).collect();
                x.contiguous()?.index_select(&Tensor::new(ids.as_slice(), &dev)?, dim)
            };
            let wb = (&conv.weight, &conv.bias);
            let generic = kernels::conv3d::stacked_conv2d(x.as_tensor(), wb, k, (1, 1))?;
            let generic = every(every(every(generic, 2, st)?, 3, shw)?, 4, shw)?;
            let unfolded = kernels::conv3d::unfolded(x.as_tensor(), wb, k, (st, shw))?;
            assert_eq!(unfolded.dims(), kernels::conv3d::stacked_conv2d(x.as_tensor(), wb, k, (st, shw))?.dims());
            let probe = Tensor::randn(0f32, 1.0, unfolded.dims(), &dev)?;
            assert!(max_diff(&unfolded, &generic)? < 1e-5, "k={k} stride=({st},{shw})");
            let ga = (unfolded * &probe)?.sum_all()?.backward()?;
            let gb = (generic * &probe)?.sum_all()?.backward()?;
            for v in [&weight, &bias, &x] {
                let (a, b) = (ga.get(v).expect("grad"), gb.get(v).expect("grad"));
                assert!(max_diff(a, b)? < 1e-4, "k={k} stride=({st},{shw}): gradient differs");
            }
        }
        Ok(())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn fast_group_norm_matches_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (c, groups) = (6, 3);
        let weight = Tensor::randn(1f32, 0.1, c, &dev)?;
        let bias = Tensor::randn(0f32, 0.1, c, &dev)?;
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, GROUP_NORM_EPS)?;
        let gn = GroupNorm { weight, bias, groups, inner };
        let x = (Tensor::randn(0f32, 2.0, (2, c, 3, 4, 5), &dev)? + 3.0)?;
        let reference = gn.inner.forward(&x)?;
        assert!(max_diff(&gn.forward(&x)?, &reference)? < 1e-5);
        assert!(max_diff(&gn.forward_silu(&x)?, &reference.silu()?)? < 1e-5);

        Ok(())
    }
}
