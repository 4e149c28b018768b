//! Low-VRAM mode: the blocks' weights stay in the memory-mapped checkpoint on the
//! host and are moved to the device just ahead of use, one block ahead on a helper thread; the
//! leading blocks that fit a memory budget stay resident.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::thread::JoinHandle;

use candle_core::DType;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{DualBlock, SingleBlock};
use super::{Config, Transformer};
use crate::error::{Error, Result};
use crate::weights;

/// Where the transformer's weights live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Residency {
    /// Every weight is loaded onto the device once.
    #[default]
    Resident,
    /// Block streaming within `budget_bytes` of device memory for weights: the embedders, text
    /// refiner and output layer stay resident, two block-sized slots are kept for streaming (the
    /// block in use and the next one loading), and as many leading blocks as still fit stay
    /// resident. Activations come on top of the budget.
    Streamed {
        /// Device memory the transformer's weights may occupy.
        budget_bytes: u64,
    },
}

/// How a model's weights would be placed for a budget: computed from the config alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of the weights outside the blocks (always resident).
    pub fixed_bytes: u64,
    /// Bytes of every block in execution order (dual-stream blocks, then single-stream).
    pub block_bytes: Vec<u64>,
    /// Leading blocks kept on the device.
    pub resident_blocks: usize,
}

impl MemoryPlan {
    /// The placement of `cfg`'s weights in `dtype`: all resident for [`Residency::Resident`],
    /// else the longest resident prefix of blocks that keeps [`MemoryPlan::peak_bytes`] within
    /// the budget.
    pub fn new(cfg: &Config, dtype: DType, residency: Residency) -> Result<Self> {
        let shapes = weights::requested_shapes(|vb| Transformer::new(vb, cfg))?;
        let mut fixed = 0u64;
        let mut blocks = BTreeMap::<(u8, usize), u64>::new();
        for (name, shape) in &shapes {
            // The q/k norm weights and the output projection are kept in f32 whatever the dtype.
            let f32_kept = (name.contains(".norm_") && name.contains(".attn.")) || name.starts_with("proj_out.");
            let size = if f32_kept { 4 } else { dtype.size_in_bytes() };
            let bytes = shape.iter().product::<usize>() as u64 * size as u64;
            match block_of(name) {
                Some(key) => *blocks.entry(key).or_default() += bytes,
                None => fixed += bytes,
            }
        }
        let block_bytes: Vec<u64> = blocks.into_values().collect();
        let n = block_bytes.len();
        let mut plan = Self { fixed_bytes: fixed, block_bytes, resident_blocks: n };
        if let Residency::Streamed { budget_bytes } = residency {
            let fits = (0..=n).rev().find(|&r| {
                plan.resident_blocks = r;
                plan.peak_bytes() <= budget_bytes
            });
            match fits {
                Some(r) => plan.resident_blocks = r,
                None => {
                    plan.resident_blocks = 0;
                    return Err(Error::invalid(
                        "memory budget",
                        format!(
                            "{} is below the {} this model needs with every block streamed \
                             (non-block weights {} + two streaming slots of {})",
                            gib(budget_bytes),
                            gib(plan.peak_bytes()),
                            gib(plan.fixed_bytes),
                            gib(plan.block_bytes.iter().copied().max().unwrap_or(0))
                        ),
                    ));
                }
            }
        }
        Ok(plan)
    }

    /// Blocks moved to the device for every use.
    pub fn streamed_blocks(&self) -> usize {
        self.block_bytes.len() - self.resident_blocks
    }

    /// Weights that stay on the device.
    pub fn resident_bytes(&self) -> u64 {
        self.fixed_bytes + self.block_bytes[..self.resident_blocks].iter().sum::<u64>()
    }

    /// Most weight bytes on the device at once: the resident weights plus, when blocks stream,
    /// two slots of the largest streamed block.
    pub fn peak_bytes(&self) -> u64 {
        let slot = self.block_bytes[self.resident_blocks..].iter().copied().max().unwrap_or(0);
        self.resident_bytes() + 2 * slot
    }

    /// Bytes of all weights.
    pub fn total_bytes(&self) -> u64 {
        self.fixed_bytes + self.block_bytes.iter().sum::<u64>()
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `(0, i)` for `transformer_blocks.i.*`, `(1, i)` for `single_transformer_blocks.i.*`.
fn block_of(name: &str) -> Option<(u8, usize)> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix("transformer_blocks.") {
        (0, rest)
    } else {
        (1, name.strip_prefix("single_transformer_blocks.")?)
    };
    Some((kind, rest.split('.').next()?.parse().ok()?))
}

/// Loads streamed blocks from the checkpoint onto the model's device.
#[derive(Clone)]
pub(super) struct Streamer {
    pub vb: VarBuilder<'static>,
    pub dim: usize,
    pub heads: usize,
    pub mlp: usize,
}

impl std::fmt::Debug for Streamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamer").field("device", self.vb.device()).field("dtype", &self.vb.dtype()).finish()
    }
}

/// An owned block, loaded for one use.
pub(super) enum Loaded {
    Dual(DualBlock),
    Single(SingleBlock),
}

impl Streamer {
    fn load(&self, index: usize, n_dual: usize) -> candle_core::Result<Loaded> {
        Ok(if index < n_dual {
            Loaded::Dual(DualBlock::new(self.vb.pp("transformer_blocks").pp(index), self.dim, self.heads, self.mlp)?)
        } else {
            let vb = self.vb.pp("single_transformer_blocks").pp(index - n_dual);
            Loaded::Single(SingleBlock::new(vb, self.dim, self.heads, self.mlp)?)
        })
    }
}

/// Hands out the blocks of one forward pass in execution order: resident blocks by reference,
/// streamed ones loaded while the previous block runs.
pub(super) struct BlockWalk<'a> {
    model: &'a Transformer,
    pending: Option<(usize, JoinHandle<candle_core::Result<Loaded>>)>,
}

impl<'a> BlockWalk<'a> {
    pub fn new(model: &'a Transformer) -> Self {
        Self { model, pending: None }
    }

    fn n_dual(&self) -> usize {
        self.model.transformer_blocks.len()
    }

    fn is_streamed(&self, index: usize) -> bool {
        let n_dual = self.n_dual();
        if index < n_dual {
            self.model.transformer_blocks[index].is_none()
        } else {
            self.model.single_transformer_blocks.get(index - n_dual).is_some_and(|b| b.is_none())
        }
    }

    /// Block `index` (0-based over dual then single blocks), loading it if it streams, and
    /// starts loading the next streamed block.
    fn take(&mut self, index: usize) -> Result<Option<Loaded>> {
        let loaded = if !self.is_streamed(index) {
            None
        } else {
            let stream = self.model.stream.as_ref().expect("streamed blocks have a streamer");
            match self.pending.take() {
                Some((i, handle)) if i == index => Some(
                    handle.join().map_err(|_| Error::invalid("block streaming", "the loading thread panicked"))??,
                ),
                other => {
                    if let Some((_, handle)) = other {
                        let _ = handle.join();
                    }
                    Some(stream.load(index, self.n_dual())?)
                }
            }
        };
        let total = self.n_dual() + self.model.single_transformer_blocks.len();
        if self.pending.is_none()
            && let Some(next) = (index + 1..total).find(|&j| self.is_streamed(j))
        {
            let stream = self.model.stream.clone().expect("streamed blocks have a streamer");
            let n_dual = self.n_dual();
            self.pending = Some((next, std::thread::spawn(move || stream.load(next, n_dual))));
        }
        Ok(loaded)
    }

    /// Dual-stream block `i`.
    pub fn dual(&mut self, i: usize) -> Result<Cow<'a, DualBlock>> {
        match self.take(i)? {
            Some(Loaded::Dual(b)) => Ok(Cow::Owned(b)),
            Some(Loaded::Single(_)) => unreachable!("index {i} is a dual-stream block"),
            None => Ok(Cow::Borrowed(self.model.transformer_blocks[i].as_ref().expect("resident"))),
        }
    }

    /// Single-stream block `i`.
    pub fn single(&mut self, i: usize) -> Result<Cow<'a, SingleBlock>> {
        match self.take(self.n_dual() + i)? {
            Some(Loaded::Single(b)) => Ok(Cow::Owned(b)),
            Some(Loaded::Dual(_)) => unreachable!("index {i} is a single-stream block"),
            None => Ok(Cow::Borrowed(self.model.single_transformer_blocks[i].as_ref().expect("resident"))),
        }
    }
}

impl Drop for BlockWalk<'_> {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.pending.take() {
            let _ = handle.join();
        }
    }
}
