//! TAEHV's layers and the two ways of running a stack of them: time-parallel over a clip, or
//! depth-first one frame at a time with per-block memory (upstream's work queue).
//!
//! Activations are `(frames, channels, height, width)`: the batch and time axes are flattened
//! together (`n · T` frames), as upstream does.

use std::collections::VecDeque;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::kernels;

/// A 3×3 convolution with zero padding 1, optionally with a bias, a second input concatenated
/// along the channels, a residual added and a ReLU applied, in that order.
#[derive(Debug, Clone)]
pub(crate) struct Conv3x3 {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    relu: bool,
}

impl Conv3x3 {
    pub(crate) fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        bias: bool,
        stride: usize,
        relu: bool,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in, 3, 3), "weight")?;
        let bias = if bias { Some(vb.get(c_out, "bias")?) } else { None };
        Ok(Self { weight, bias, stride, relu })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None, None, self.relu)
    }

    /// `relu(conv(x ‖ past) + bias + residual)`, each part optional.
    fn run(&self, x: &Tensor, past: Option<&Tensor>, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        kernels::conv3x3_fused(x, past, (&self.weight, self.bias.as_ref()), self.stride, residual, relu)
    }
}

/// A 1×1 convolution without bias, as a matrix product over the pixels of each frame.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    /// `(c_out, c_in)`.
    weight: Tensor,
}

impl Pointwise {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((c_out, c_in, 1, 1), "weight")?.reshape((c_out, c_in))? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (m, c, h, w) = x.dims4()?;
        let o = self.weight.dim(0)?;
        self.weight.broadcast_matmul(&x.reshape((m, c, h * w))?)?.reshape((m, o, h, w))
    }
}

/// Upstream's `MemBlock`: `relu(conv(relu(conv(relu(conv(x ‖ past))))) + skip(x))`.
#[derive(Debug, Clone)]
pub(crate) struct MemBlock {
    conv0: Conv3x3,
    conv2: Conv3x3,
    conv4: Conv3x3,
    skip: Option<Pointwise>,
}

impl MemBlock {
    pub(crate) fn new(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let conv = vb.pp("conv");
        Ok(Self {
            conv0: Conv3x3::new(conv.pp("0"), 2 * c_in, c_out, true, 1, true)?,
            conv2: Conv3x3::new(conv.pp("2"), c_out, c_out, true, 1, true)?,
            conv4: Conv3x3::new(conv.pp("4"), c_out, c_out, true, 1, false)?,
            skip: if c_in != c_out { Some(Pointwise::new(vb.pp("skip"), c_in, c_out)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor, past: &Tensor) -> Result<Tensor> {
        let h = self.conv0.run(x, Some(past), None, true)?;
        let h = self.conv2.forward(&h)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.conv4.run(&h, None, Some(&skip), true)
    }
}

/// One layer of the encoder or decoder stack.
#[derive(Debug, Clone)]
pub(crate) enum Layer {
    /// `tanh(x / 3) · 3`.
    Clamp,
    Conv(Conv3x3),
    Mem(MemBlock),
    /// Stacks `stride` consecutive frames along the channels and mixes them down to one.
    TimePool {
        stride: usize,
        conv: Pointwise,
    },
    /// Mixes each frame up to `stride` frames' channels and splits them into frames.
    TimeGrow {
        stride: usize,
        conv: Pointwise,
    },
    /// Nearest-neighbour upsampling by an integer factor.
    Upsample(usize),
}

/// A layer and the index of the last upstream `nn.Sequential` entry it covers (a convolution
/// followed by a ReLU is one layer here).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) index: usize,
    pub(crate) layer: Layer,
}

impl Layer {
    pub(crate) fn time_pool(vb: VarBuilder, channels: usize, stride: usize) -> Result<Self> {
        Ok(Self::TimePool { stride, conv: Pointwise::new(vb.pp("conv"), channels * stride, channels)? })
    }

    /// A time-grow layer whose checkpoint stores `stored_stride · channels` output channels;
    /// only the last `stride · channels` of them (the latest timesteps) are kept.
    pub(crate) fn time_grow(vb: VarBuilder, channels: usize, stride: usize, stored_stride: usize) -> Result<Self> {
        let conv = Pointwise::new(vb.pp("conv"), channels, channels * stored_stride)?;
        Self::TimeGrow { stride: stored_stride, conv }.with_time_stride(stride)
    }

    /// The same layer with a time-grow stride lowered to `stride` (keeping the latest
    /// timesteps' channels); other layers are returned unchanged.
    pub(crate) fn with_time_stride(&self, stride: usize) -> Result<Self> {
        match self {
            Self::TimeGrow { stride: s, conv } if stride <= *s => {
                let channels = conv.weight.dim(1)?;
                let keep = stride * channels;
                let weight = conv.weight.narrow(0, s * channels - keep, keep)?;
                Ok(Self::TimeGrow { stride, conv: Pointwise { weight } })
            }
            Self::TimeGrow { stride: s, .. } => {
                candle_core::bail!("a time-grow layer with stride {s} cannot grow {stride} frames")
            }
            other => Ok(other.clone()),
        }
    }

    /// The layer on frames that need no memory.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Clamp => (x / 3.0)?.tanh()? * 3.0,
            Self::Conv(c) => c.forward(x),
            Self::Mem(_) => candle_core::bail!("memory blocks need their past input"),
            Self::TimePool { stride, conv } => {
                let (m, c, h, w) = x.dims4()?;
                if m % stride != 0 {
                    candle_core::bail!("time pool of stride {stride} over {m} frames");
                }
                conv.forward(&x.reshape((m / stride, stride * c, h, w))?)
            }
            Self::TimeGrow { stride, conv } => {
                let y = conv.forward(x)?;
                let (m, c, h, w) = y.dims4()?;
                y.reshape((m * stride, c / stride, h, w))
            }
            Self::Upsample(1) => Ok(x.clone()),
            Self::Upsample(f) => {
                let (_, _, h, w) = x.dims4()?;
                x.upsample_nearest2d(h * f, w * f)
            }
        }
    }
}

/// Runs `blocks` over `batch` clips of equal length flattened into `x` `(batch · T, C, H, W)`,
/// all frames at once; memory blocks see each frame's predecessor within its clip (zeros for
/// the first). Records every block's output in `trace` when given.
pub(crate) fn run_parallel(
    blocks: &[Block],
    mut x: Tensor,
    batch: usize,
    mut trace: Option<&mut Vec<(usize, Tensor)>>,
) -> Result<Tensor> {
    for b in blocks {
        x = match &b.layer {
            Layer::Mem(m) => {
                let (nt, c, h, w) = x.dims4()?;
                let t = nt / batch;
                let clips = x.reshape((batch, t, c, h, w))?;
                let first = Tensor::zeros((batch, 1, c, h, w), x.dtype(), x.device())?;
                let past = if t > 1 { Tensor::cat(&[&first, &clips.narrow(1, 0, t - 1)?], 1)? } else { first };
                m.forward(&x, &past.reshape((nt, c, h, w))?)?
            }
            layer => layer.forward(&x)?,
        };
        if let Some(tr) = trace.as_deref_mut() {
            tr.push((b.index, x.clone()));
        }
    }
    Ok(x)
}

/// What a block remembers between frames in the sequential pass.
#[derive(Debug, Clone, Default)]
enum Memory {
    #[default]
    Empty,
    /// A memory block's previous input.
    Previous(Tensor),
    /// Frames a time pool has collected towards its next output.
    Pooled(Vec<Tensor>),
}

/// The state of a depth-first, frame-by-frame pass over a block stack: pending work items
/// (a frame and the block it enters next) and each block's memory.
#[derive(Debug, Clone)]
pub(crate) struct Sequential {
    queue: VecDeque<(Tensor, usize)>,
    memory: Vec<Memory>,
}

impl Sequential {
    pub(crate) fn new(blocks: usize) -> Self {
        Self { queue: VecDeque::new(), memory: vec![Memory::Empty; blocks] }
    }

    /// Queues one input frame `(batch, C, H, W)`.
    pub(crate) fn push(&mut self, frame: Tensor) {
        self.queue.push_back((frame, 0));
    }

    /// Whether input frames or partial work are waiting.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Works through the queue, depth first, until one frame leaves the last block (returned)
    /// or the queue is empty (`None`: more input is needed).
    pub(crate) fn step(&mut self, blocks: &[Block]) -> Result<Option<Tensor>> {
        while let Some((x, i)) = self.queue.pop_front() {
            let Some(block) = blocks.get(i) else {
                return Ok(Some(x));
            };
            match &block.layer {
                Layer::Mem(m) => {
                    let past = match std::mem::take(&mut self.memory[i]) {
                        Memory::Previous(p) => p,
                        _ => x.zeros_like()?,
                    };
                    let y = m.forward(&x, &past)?;
                    self.memory[i] = Memory::Previous(x);
                    self.queue.push_front((y, i + 1));
                }
                Layer::TimePool { stride, conv } => {
                    let mut pooled = match std::mem::take(&mut self.memory[i]) {
                        Memory::Pooled(v) => v,
                        _ => Vec::with_capacity(*stride),
                    };
                    pooled.push(x);
                    if pooled.len() == *stride {
                        let y = conv.forward(&Tensor::cat(&pooled, 1)?)?;
                        self.queue.push_front((y, i + 1));
                    } else {
                        self.memory[i] = Memory::Pooled(pooled);
                    }
                }
                Layer::TimeGrow { stride, conv } => {
                    let y = conv.forward(&x)?;
                    let c = y.dim(1)? / stride;
                    for j in (0..*stride).rev() {
                        self.queue.push_front((y.narrow(1, j * c, c)?, i + 1));
                    }
                }
                layer => {
                    let y = layer.forward(&x)?;
                    self.queue.push_front((y, i + 1));
                }
            }
        }
        Ok(None)
    }
}
