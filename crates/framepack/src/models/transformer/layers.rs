//! Building blocks of the packed transformer: embedders, the text token refiner, the dual- and
//! single-stream blocks and the attention they share.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::kernels::attention::{JointRope, attention_merged, joint_attention};
use crate::models::kernels::linear::{Linear, linear};
use crate::models::kernels::{self, cpu};
use crate::models::ops;

const NORM_EPS: f32 = 1e-6;

/// Channels of the timestep/guidance sinusoid.
pub(crate) const SINUSOID_DIM: usize = 256;

/// The f32 frequencies `exp(−ln(10⁴)·k/128)`, k = 0..128, bit for bit as the reference (PyTorch
/// on CPU) computes them; entries 12 and 106 are one ulp above the correctly rounded value. At a
/// guidance of 10⁴ one ulp moves the angle by ~5e-4 rad, which alone exceeds the parity gates.
const SINUSOID_FREQ_BITS: [u32; SINUSOID_DIM / 2] = [
    0x3f800000, 0x3f6e39f8, 0x3f5dafd6, 0x3f4e4bac, 0x3f3ff911, 0x3f32a506, 0x3f263de0, 0x3f1ab32b, 0x3f0ff59a,
    0x3f05f6ee, 0x3ef953ce, 0x3ee80460, 0x3ed7e89b, 0x3ec8eb23, 0x3ebaf81b, 0x3eadfcff, 0x3ea1e89b, 0x3e96aaea,
    0x3e8c3503, 0x3e827908, 0x3e72d422, 0x3e61f836, 0x3e5247ed, 0x3e43ae7c, 0x3e361887, 0x3e297409, 0x3e1db03f,
    0x3e12bd90, 0x3e088d77, 0x3dfe24df, 0x3dec7fd5, 0x3ddc1464, 0x3dcccccc, 0x3dbe94c7, 0x3db15978, 0x3da50957,
    0x3d99940d, 0x3d8eea6c, 0x3d84fe4c, 0x3d778511, 0x3d6655c1, 0x3d5657e3, 0x3d477640, 0x3d399d18, 0x3d2cba15,
    0x3d20bc1b, 0x3d159348, 0x3d0b30cb, 0x3d0186e2, 0x3cf11177, 0x3ce054d1, 0x3cd0c1a8, 0x3cc2434e, 0x3cb4c691,
    0x3ca83989, 0x3c9c8b96, 0x3c91ad39, 0x3c879009, 0x3c7c4d30, 0x3c6ac8e6, 0x3c5a7bf1, 0x3c4b50b5, 0x3c3d330e,
    0x3c301050, 0x3c23d70a, 0x3c187706, 0x3c0de12e, 0x3c040777, 0x3bf5b9ad, 0x3be4aa45, 0x3bd4ca15, 0x3bc6040a,
    0x3bb8449a, 0x3bab7982, 0x3b9f91cc, 0x3b947daf, 0x3b8a2e75, 0x3b80967c, 0x3b6f520d, 0x3b5eb47a, 0x3b4f3e33,
    0x3b40dac2, 0x3b33770d, 0x3b270153, 0x3b1b690d, 0x3b109ed8, 0x3b06946d, 0x3afa78f0, 0x3ae91528, 0x3ad8e675,
    0x3ac9d759, 0x3abbd3eb, 0x3aaec98e, 0x3aa2a6f7, 0x3a975c0b, 0x3a8cd9d9, 0x3a83126e, 0x3a73f1a2, 0x3a6301e3,
    0x3a533f24, 0x3a44948a, 0x3a36ee9d, 0x3a2a3b44, 0x3a1e69a2, 0x3a136a14, 0x3a092e01, 0x39ff4fad, 0x39ed95e4,
    0x39dd1721, 0x39cdbd93, 0x39bf74d6, 0x39b229fb, 0x39a5cb61, 0x399a48a0, 0x398f9275, 0x39859aa4, 0x3978a80d,
    0x3967648c, 0x395753e2, 0x394860bf, 0x393a7753, 0x392d852a, 0x39217919, 0x39164326, 0x390bd46d, 0x39021f28,
    0x38f22cdd, 0x38e15c8e,
];

/// Sinusoidal embedding `(n, 256)` of scalars, `[cos | sin]` halves (diffusers `Timesteps(256,
/// flip_sin_to_cos=True, downscale_freq_shift=0)`); angles are f32 products like the reference.
pub(crate) fn timestep_sinusoid(values: &[f32], device: &candle_core::Device) -> Result<Tensor> {
    let mut out = Vec::with_capacity(values.len() * SINUSOID_DIM);
    for &v in values {
        let angles: Vec<f64> = SINUSOID_FREQ_BITS.iter().map(|&f| (v * f32::from_bits(f)) as f64).collect();
        out.extend(angles.iter().map(|a| a.cos() as f32));
        out.extend(angles.iter().map(|a| a.sin() as f32));
    }
    Tensor::from_vec(out, (values.len(), SINUSOID_DIM), device)
}

/// Activation of a two-layer MLP.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    Silu,
    GeluTanh,
}

impl Act {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Silu => x.silu(),
            Act::GeluTanh => cpu::gelu_tanh(x),
        }
    }
}

/// `second(silu(first(x)))`: diffusers `TimestepEmbedding` and `PixArtAlphaTextProjection`
/// (`linear_1`/`linear_2`, hidden = out) and FramePack's SigLIP `image_projection` (`up`/`down`,
/// hidden = 3·out).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    first: Linear,
    second: Linear,
}

impl Mlp {
    pub fn new(vb: VarBuilder, in_dim: usize, dim: usize) -> Result<Self> {
        Self::with_names(vb, in_dim, dim, dim, ("linear_1", "linear_2"))
    }

    /// The SigLIP feature projection (`image_projection.up` / `.down`).
    pub fn image_projection(vb: VarBuilder, in_dim: usize, dim: usize) -> Result<Self> {
        Self::with_names(vb, in_dim, 3 * dim, dim, ("up", "down"))
    }

    fn with_names(vb: VarBuilder, in_dim: usize, hidden: usize, out: usize, (a, b): (&str, &str)) -> Result<Self> {
        Ok(Self { first: linear(in_dim, hidden, vb.pp(a))?, second: linear(hidden, out, vb.pp(b))? })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.second.forward(&self.first.forward(x)?.silu()?)
    }
}

/// diffusers `FeedForward`: `net.2(act(net.0.proj(x)))`.
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    proj: Linear,
    out: Linear,
    act: Act,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, dim: usize, hidden: usize, act: Act) -> Result<Self> {
        Ok(Self { proj: linear(dim, hidden, vb.pp("net.0.proj"))?, out: linear(hidden, dim, vb.pp("net.2"))?, act })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.act.apply(&self.proj.forward(x)?)?)
    }
}

/// A Conv3d with stride = kernel, run as patch reshape + matmul. Inputs whose `(t, h, w)` are
/// not multiples of the kernel are replicate-padded at the end of each axis first.
#[derive(Debug, Clone)]
pub(crate) struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
    kernel: [usize; 3],
}

impl PatchEmbed {
    pub fn new(vb: VarBuilder, in_ch: usize, dim: usize, kernel: [usize; 3]) -> Result<Self> {
        let [kt, kh, kw] = kernel;
        Ok(Self { weight: vb.get((dim, in_ch, kt, kh, kw), "weight")?, bias: vb.get(dim, "bias")?, kernel })
    }

    /// Token grid `(t, h, w)` produced for an input of `(t, h, w)` latent frames/rows/columns.
    pub fn grid(&self, t: usize, h: usize, w: usize) -> [usize; 3] {
        let [kt, kh, kw] = self.kernel;
        [t.div_ceil(kt), h.div_ceil(kh), w.div_ceil(kw)]
    }
}

impl Module for PatchEmbed {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let [kt, kh, kw] = self.kernel;
        let [nt, nh, nw] = self.grid(t, h, w);
        let mut x = x.clone();
        for (dim, (n, k)) in [(2, (t, kt)), (3, (h, kh)), (4, (w, kw))] {
            let pad = (k - n % k) % k;
            if pad > 0 {
                x = x.pad_with_same(dim, 0, pad)?;
            }
        }
        let patch = c * kt * kh * kw;
        let tokens = x
            .reshape(vec![b, c, nt, kt, nh, kh, nw, kw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .reshape((b * nt * nh * nw, patch))?;
        let dim = self.weight.dim(0)?;
        let w = self.weight.reshape((dim, patch))?;
        tokens.matmul(&w.t()?)?.broadcast_add(&self.bias)?.reshape((b, nt * nh * nw, dim))
    }
}

/// Affine-free LayerNorm on the fused kernel (statistics in f32 for half-precision inputs).
#[derive(Debug, Clone)]
pub(crate) struct PlainLayerNorm {
    ones: Tensor,
    zeros: Tensor,
}

impl PlainLayerNorm {
    pub fn new(dim: usize, dtype: DType, device: &candle_core::Device) -> Result<Self> {
        Ok(Self { ones: Tensor::ones(dim, dtype, device)?, zeros: Tensor::zeros(dim, dtype, device)? })
    }
}

impl PlainLayerNorm {
    /// `LN(x)·(1 + scale) + shift` (AdaLN modulation), one pass on the CPU in f32.
    pub fn modulated(&self, x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
        kernels::ln_modulate(x, (&self.ones, &self.zeros), shift, scale, NORM_EPS)
    }
}

impl Module for PlainLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.ones, &self.zeros, NORM_EPS)
    }
}

/// LayerNorm with weight and bias (the refiner's `norm1`/`norm2`).
#[derive(Debug, Clone)]
pub(crate) struct AffineLayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl AffineLayerNorm {
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")? })
    }
}

impl Module for AffineLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, NORM_EPS)
    }
}

/// `Linear(silu(temb))` split into `n` chunks of shape `(B, 1, dim)`, in checkpoint order.
fn modulation(lin: &Linear, temb: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    lin.forward(&temb.silu()?)?.unsqueeze(1)?.chunk(n, D::Minus1)
}

/// One block of the text token refiner (`context_embedder.token_refiner.refiner_blocks.N`).
#[derive(Debug, Clone)]
pub(crate) struct RefinerBlock {
    norm1: AffineLayerNorm,
    norm2: AffineLayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    ff: FeedForward,
    norm_out: Linear,
    heads: usize,
}

impl RefinerBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize, mlp: usize) -> Result<Self> {
        let attn = vb.pp("attn");
        Ok(Self {
            norm1: AffineLayerNorm::new(vb.pp("norm1"), dim)?,
            norm2: AffineLayerNorm::new(vb.pp("norm2"), dim)?,
            to_q: linear(dim, dim, attn.pp("to_q"))?,
            to_k: linear(dim, dim, attn.pp("to_k"))?,
            to_v: linear(dim, dim, attn.pp("to_v"))?,
            to_out: linear(dim, dim, attn.pp("to_out.0"))?,
            ff: FeedForward::new(vb.pp("ff"), dim, mlp, Act::Silu)?,
            norm_out: linear(dim, 2 * dim, vb.pp("norm_out.linear"))?,
            heads,
        })
    }

    /// `x`: `(B, L, D)`, `temb`: `(B, D)`, `bias`: optional `(B, 1, L, L)` additive mask.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let n = self.norm1.forward(x)?;
        let (q, k, v) = (self.to_q.forward(&n)?, self.to_k.forward(&n)?, self.to_v.forward(&n)?);
        let attn = self.to_out.forward(&attention_merged(&q, &k, &v, self.heads, bias)?)?;
        let gates = modulation(&self.norm_out, temb, 2)?;
        let x = kernels::gated_add(x, &attn, &gates[0])?;
        let ff = self.ff.forward(&self.norm2.forward(&x)?)?;
        kernels::gated_add(&x, &ff, &gates[1])
    }
}

/// Dual-stream (MMDiT) block: separate weights for image and context tokens, joint attention.
#[derive(Debug, Clone)]
pub(crate) struct DualBlock {
    norm1: Linear,
    norm1_context: Linear,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    add_q_proj: Linear,
    add_k_proj: Linear,
    add_v_proj: Linear,
    to_out: Linear,
    to_add_out: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    norm_added_q: Tensor,
    norm_added_k: Tensor,
    ff: FeedForward,
    ff_context: FeedForward,
    ln: PlainLayerNorm,
    heads: usize,
}

fn f32_weight(vb: &VarBuilder, dim: usize, name: &str) -> Result<Tensor> {
    vb.get(dim, name)?.to_dtype(DType::F32)
}

impl DualBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize, mlp: usize) -> Result<Self> {
        let a = vb.pp("attn");
        let dh = dim / heads;
        Ok(Self {
            norm1: linear(dim, 6 * dim, vb.pp("norm1.linear"))?,
            norm1_context: linear(dim, 6 * dim, vb.pp("norm1_context.linear"))?,
            to_q: linear(dim, dim, a.pp("to_q"))?,
            to_k: linear(dim, dim, a.pp("to_k"))?,
            to_v: linear(dim, dim, a.pp("to_v"))?,
            add_q_proj: linear(dim, dim, a.pp("add_q_proj"))?,
            add_k_proj: linear(dim, dim, a.pp("add_k_proj"))?,
            add_v_proj: linear(dim, dim, a.pp("add_v_proj"))?,
            to_out: linear(dim, dim, a.pp("to_out.0"))?,
            to_add_out: linear(dim, dim, a.pp("to_add_out"))?,
            norm_q: f32_weight(&a, dh, "norm_q.weight")?,
            norm_k: f32_weight(&a, dh, "norm_k.weight")?,
            norm_added_q: f32_weight(&a, dh, "norm_added_q.weight")?,
            norm_added_k: f32_weight(&a, dh, "norm_added_k.weight")?,
            ff: FeedForward::new(vb.pp("ff"), dim, mlp, Act::GeluTanh)?,
            ff_context: FeedForward::new(vb.pp("ff_context"), dim, mlp, Act::GeluTanh)?,
            ln: PlainLayerNorm::new(dim, vb.dtype(), vb.device())?,
            heads,
        })
    }

    /// The AdaLN-modulated image tokens `norm1(x, temb)` that open the block (TeaCache's signal).
    pub fn modulated_input(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let m = modulation(&self.norm1, temb, 6)?;
        self.ln.modulated(x, &m[0], &m[1])
    }

    /// Image tokens `x` `(B, N, D)`, context `c` `(B, M, D)`, `temb` `(B, D)`.
    pub fn forward(
        &self,
        x: &Tensor,
        c: &Tensor,
        temb: &Tensor,
        rope_tables: &JointRope,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let n_img = x.dim(1)?;
        let m = modulation(&self.norm1, temb, 6)?;
        let cm = modulation(&self.norm1_context, temb, 6)?;
        let xn = self.ln.modulated(x, &m[0], &m[1])?;
        let cn = self.ln.modulated(c, &cm[0], &cm[1])?;
        let o = joint_attention(
            (&[(self.to_q.forward(&xn)?, &self.norm_q), (self.add_q_proj.forward(&cn)?, &self.norm_added_q)], 0),
            &[(self.to_k.forward(&xn)?, &self.norm_k), (self.add_k_proj.forward(&cn)?, &self.norm_added_k)],
            &[self.to_v.forward(&xn)?, self.add_v_proj.forward(&cn)?],
            rope_tables,
            (self.heads, NORM_EPS),
            bias,
        )?;
        let o_img = self.to_out.forward(&o.narrow(1, 0, n_img)?)?;
        let o_ctx = self.to_add_out.forward(&o.narrow(1, n_img, o.dim(1)? - n_img)?)?;

        let x = kernels::gated_add(x, &o_img, &m[2])?;
        let c = kernels::gated_add(c, &o_ctx, &cm[2])?;
        let ff = self.ff.forward(&self.ln.modulated(&x, &m[3], &m[4])?)?;
        let ffc = self.ff_context.forward(&self.ln.modulated(&c, &cm[3], &cm[4])?)?;
        Ok((kernels::gated_add(&x, &ff, &m[5])?, kernels::gated_add(&c, &ffc, &cm[5])?))
    }
}

/// Single-stream block: one modulation, attention and MLP in parallel over `[image | context]`.
#[derive(Debug, Clone)]
pub(crate) struct SingleBlock {
    norm: Linear,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    proj_mlp: Linear,
    proj_out: Linear,
    ln: PlainLayerNorm,
    heads: usize,
}

impl SingleBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize, mlp: usize) -> Result<Self> {
        let a = vb.pp("attn");
        let dh = dim / heads;
        Ok(Self {
            norm: linear(dim, 3 * dim, vb.pp("norm.linear"))?,
            to_q: linear(dim, dim, a.pp("to_q"))?,
            to_k: linear(dim, dim, a.pp("to_k"))?,
            to_v: linear(dim, dim, a.pp("to_v"))?,
            norm_q: f32_weight(&a, dh, "norm_q.weight")?,
            norm_k: f32_weight(&a, dh, "norm_k.weight")?,
            proj_mlp: linear(dim, mlp, vb.pp("proj_mlp"))?,
            proj_out: linear(dim + mlp, dim, vb.pp("proj_out"))?,
            ln: PlainLayerNorm::new(dim, vb.dtype(), vb.device())?,
            heads,
        })
    }

    /// Same arguments as [`DualBlock::forward`].
    pub fn forward(
        &self,
        x: &Tensor,
        c: &Tensor,
        temb: &Tensor,
        rope_tables: &JointRope,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let n_img = x.dim(1)?;
        let z = self.run(x, c, temb, rope_tables, bias, None)?;
        let total = z.dim(1)?;
        Ok((z.narrow(1, 0, n_img)?, z.narrow(1, n_img, total - n_img)?))
    }

    /// The block's output for the image tokens `keep` only (every token still serves as key and
    /// value): the last block, whose other outputs the model discards.
    pub fn forward_image_tokens(
        &self,
        x: &Tensor,
        c: &Tensor,
        temb: &Tensor,
        rope_tables: &JointRope,
        bias: Option<&Tensor>,
        keep: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        self.run(x, c, temb, rope_tables, bias, Some(keep))
    }

    fn run(
        &self,
        x: &Tensor,
        c: &Tensor,
        temb: &Tensor,
        rope_tables: &JointRope,
        bias: Option<&Tensor>,
        keep: Option<std::ops::Range<usize>>,
    ) -> Result<Tensor> {
        let z = Tensor::cat(&[x, c], 1)?;
        let m = modulation(&self.norm, temb, 3)?;
        let zn = self.ln.modulated(&z, &m[0], &m[1])?;
        let keep = keep.unwrap_or(0..z.dim(1)?);
        let (zk, znk) = (z.narrow(1, keep.start, keep.len())?, zn.narrow(1, keep.start, keep.len())?);
        let mlp = cpu::gelu_tanh(&self.proj_mlp.forward(&znk)?)?;
        let o = joint_attention(
            (&[(self.to_q.forward(&znk)?, &self.norm_q)], keep.start),
            &[(self.to_k.forward(&zn)?, &self.norm_k)],
            &[self.to_v.forward(&zn)?],
            rope_tables,
            (self.heads, NORM_EPS),
            bias,
        )?;
        let out = self.proj_out.forward(&Tensor::cat(&[o, mlp], 2)?)?;
        kernels::gated_add(&zk, &out, &m[2])
    }
}

/// The text token refiner (`context_embedder`): its own timestep + pooled-text conditioning and
/// a few self-attention blocks over the LLaMA features.
#[derive(Debug, Clone)]
pub(crate) struct TokenRefiner {
    timestep_embedder: Mlp,
    text_embedder: Mlp,
    proj_in: Linear,
    blocks: Vec<RefinerBlock>,
}

impl TokenRefiner {
    pub fn new(vb: VarBuilder, text_dim: usize, dim: usize, heads: usize, mlp: usize, layers: usize) -> Result<Self> {
        let tte = vb.pp("time_text_embed");
        let blocks = (0..layers)
            .map(|i| RefinerBlock::new(vb.pp("token_refiner.refiner_blocks").pp(i), dim, heads, mlp))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            timestep_embedder: Mlp::new(tte.pp("timestep_embedder"), SINUSOID_DIM, dim)?,
            text_embedder: Mlp::new(tte.pp("text_embedder"), text_dim, dim)?,
            proj_in: linear(text_dim, dim, vb.pp("proj_in"))?,
            blocks,
        })
    }

    /// `x`: `(B, L, text_dim)` whose first `lens[b]` tokens are valid, `t_sin`: `(B, 256)`
    /// timestep sinusoids. Returns the refiner's conditioning `(B, D)` and the refined tokens
    /// `(B, L, D)`. Valid tokens attend to valid tokens; padded ones to token 0 only.
    pub fn forward(&self, x: &Tensor, lens: &[usize], t_sin: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, l, _) = x.dims3()?;
        let dev = x.device();
        let mask: Vec<f32> = lens.iter().flat_map(|&n| (0..l).map(move |i| if i < n { 1.0 } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (b, l, 1), dev)?;
        let counts: Vec<f32> = lens.iter().map(|&n| n as f32).collect();
        let counts = Tensor::from_vec(counts, (b, 1), dev)?;
        let pooled =
            x.to_dtype(DType::F32)?.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&counts)?.to_dtype(x.dtype())?;
        let temb = (self.timestep_embedder.forward(t_sin)? + self.text_embedder.forward(&pooled)?)?;

        let bias = if lens.iter().all(|&n| n == l) {
            None
        } else {
            let mut v = vec![0f32; b * l * l];
            for (bi, &n) in lens.iter().enumerate() {
                for i in 0..l {
                    for j in 1..l {
                        if i >= n || j >= n {
                            v[(bi * l + i) * l + j] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Some(Tensor::from_vec(v, (b, 1, l, l), dev)?)
        };
        let mut h = self.proj_in.forward(x)?;
        for block in &self.blocks {
            h = block.forward(&h, &temb, bias.as_ref())?;
        }
        Ok((temb, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_frequencies_are_within_one_ulp_of_exact() {
        for (k, &bits) in SINUSOID_FREQ_BITS.iter().enumerate() {
            let exponent = -(10000f64.ln() as f32) * k as f32 / 128.0;
            let exact = (exponent as f64).exp() as f32;
            assert!((bits as i64 - exact.to_bits() as i64).abs() <= 1, "k = {k}");
        }
    }
}
