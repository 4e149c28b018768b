//! Frame-context packing: which history latents the transformer sees for a section, at which
//! compression, and at which RoPE frame index.
//!
//! A [`ContextSchedule`] is data: an optional anchor frame (the user's start frame, always at
//! full resolution and RoPE time 0) and groups of [`Level`]s, each `frames × kernel`. The
//! built-in schedules are the two released loops — [`ContextSchedule::geometric`] (F1, forward)
//! and [`ContextSchedule::inverted_anti_drifting`] (original, end first) — and two variants from
//! the paper, [`ContextSchedule::first_frame_priority`] and [`ContextSchedule::symmetric`]. Any
//! other arrangement can be written by hand (or in RON) and is handled by the same code.
//!
//! Positions. The video's latent frames are numbered by *real* position: 0 is the start latent,
//! `1..=n·W` the generated latents, `n·W + 1` the optional end latent. A section's window covers
//! `W` consecutive positions. History slots read real positions (zero latents where nothing
//! exists yet), while RoPE indices follow the schedule's compact layout
//! `[anchor][head][gap][past][window][future]`, exactly as FramePack's index splits.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Frames per second of FramePack videos (hard-coded in the released demos).
pub const FPS: f64 = 30.0;
/// Default latent window (latent frames generated per section).
pub const DEFAULT_WINDOW: usize = 9;
/// Spatial factor of the VAE: one latent pixel is 8×8 image pixels.
pub const VAE_SPATIAL: usize = 8;
/// Temporal factor of the VAE: every latent after the first decodes to 4 frames.
pub const VAE_TEMPORAL: usize = 4;

/// Patchify kernel `(t, h, w)` over latent frames, rows and columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "(usize, usize, usize)", into = "(usize, usize, usize)")]
pub struct Kernel {
    /// Latent frames per token.
    pub t: usize,
    /// Latent rows per token.
    pub h: usize,
    /// Latent columns per token.
    pub w: usize,
}

impl Kernel {
    /// The noisy-latent and 1x clean kernel `(1, 2, 2)`.
    pub const X1: Kernel = Kernel::new(1, 2, 2);
    /// The 2x history kernel `(2, 4, 4)`: 1/8 of the 1x tokens per frame.
    pub const X2: Kernel = Kernel::new(2, 4, 4);
    /// The 4x history kernel `(4, 8, 8)`: 1/64 of the 1x tokens per frame.
    pub const X4: Kernel = Kernel::new(4, 8, 8);

    /// A kernel of `t × h × w` latent cells.
    pub const fn new(t: usize, h: usize, w: usize) -> Self {
        Self { t, h, w }
    }

    /// Latent cells per token.
    pub fn volume(&self) -> usize {
        self.t * self.h * self.w
    }

    /// Tokens for `frames` latent frames of `h × w`, after replicate padding of every axis up
    /// to a multiple of the kernel (padding at the end, as FramePack does).
    pub fn tokens(&self, frames: usize, h: usize, w: usize) -> usize {
        frames.div_ceil(self.t) * h.div_ceil(self.h) * w.div_ceil(self.w)
    }
}

impl From<(usize, usize, usize)> for Kernel {
    fn from((t, h, w): (usize, usize, usize)) -> Self {
        Self { t, h, w }
    }
}

impl From<Kernel> for (usize, usize, usize) {
    fn from(k: Kernel) -> Self {
        (k.t, k.h, k.w)
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{},{})", self.t, self.h, self.w)
    }
}

/// `frames` consecutive history latents patchified with `kernel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// Number of latent frames in the level.
    pub frames: usize,
    /// Patchify kernel of the level.
    pub kernel: Kernel,
}

impl Level {
    /// `frames × kernel`.
    pub const fn new(frames: usize, kernel: Kernel) -> Self {
        Self { frames, kernel }
    }
}

/// Order in which sections are generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SectionOrder {
    /// First section first: sections arrive in play order (streaming), each decoded section is
    /// cross-faded *after* the frames so far. F1.
    Forward,
    /// Last section first, walking back toward the start frame, with the gap between the
    /// start frame and the window capped (FramePack's latent paddings); each decoded section is
    /// cross-faded *before* the frames so far. The original model.
    Inverted,
}

/// A frame-context packing schedule.
///
/// Each group lists its levels *nearest first*: `past` from the window backwards, `future` from
/// the window forwards, `head` from the start frame forwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextSchedule {
    /// Put the start latent at RoPE time 0 in the 1x set (first-frame conditioning).
    pub anchor: bool,
    /// Levels of the frames right after the start frame (the video's beginning).
    #[serde(default)]
    pub head: Vec<Level>,
    /// Levels of the frames right before the window.
    #[serde(default)]
    pub past: Vec<Level>,
    /// Levels of the frames right after the window.
    #[serde(default)]
    pub future: Vec<Level>,
    /// Generation order of the sections.
    pub order: SectionOrder,
}

/// FramePack's history levels, nearest first: 1 frame at 1x, 2 at 2x, 16 at 4x (19 frames).
pub const FRAMEPACK_LEVELS: [Level; 3] =
    [Level::new(1, Kernel::X1), Level::new(2, Kernel::X2), Level::new(16, Kernel::X4)];

impl ContextSchedule {
    /// F1 forward sampling: start + 16@4x, 2@2x, 1@1x before the window (`[1, 16, 2, 1, W]`).
    pub fn geometric() -> Self {
        Self {
            anchor: true,
            head: vec![],
            past: FRAMEPACK_LEVELS.to_vec(),
            future: vec![],
            order: SectionOrder::Forward,
        }
    }

    /// The original model's inverted anti-drifting sampling: `[1, pad·W, W, 1, 2, 16]`, the end
    /// of the video first.
    pub fn inverted_anti_drifting() -> Self {
        Self {
            anchor: true,
            head: vec![],
            past: vec![],
            future: FRAMEPACK_LEVELS.to_vec(),
            order: SectionOrder::Inverted,
        }
    }

    /// Forward sampling in which the beginning of the video is kept as well as the most recent
    /// frames (paper §8.2: "isn't the first frame most important?"): start + the 2 frames after it
    /// at 2x and the next 4 at 4x, then 8@4x, 2@2x, 1@1x before the window. Same 1x budget as
    /// [`Self::geometric`], 10 fewer 4x frames of recent history.
    pub fn first_frame_priority() -> Self {
        Self {
            anchor: true,
            head: vec![Level::new(2, Kernel::X2), Level::new(4, Kernel::X4)],
            past: vec![Level::new(1, Kernel::X1), Level::new(2, Kernel::X2), Level::new(8, Kernel::X4)],
            future: vec![],
            order: SectionOrder::Forward,
        }
    }

    /// Symmetric progression (paper §8.2): context compressed with distance on both sides of
    /// the window, 1@1x, 2@2x, 8@4x before and after. Generated forward, the future side holds
    /// the planned end frame (when one is given) once the window comes near it.
    pub fn symmetric() -> Self {
        let side = vec![Level::new(1, Kernel::X1), Level::new(2, Kernel::X2), Level::new(8, Kernel::X4)];
        Self { anchor: true, head: vec![], past: side.clone(), future: side, order: SectionOrder::Forward }
    }

    fn levels(&self) -> impl Iterator<Item = &Level> {
        self.head.iter().chain(&self.past).chain(&self.future)
    }

    /// Checks that the schedule has at least one level and no empty level or kernel.
    pub fn validate(&self) -> Result<()> {
        if self.levels().next().is_none() {
            return Err(Error::invalid("schedule", "a context schedule needs at least one level"));
        }
        for l in self.levels() {
            if l.frames == 0 {
                return Err(Error::invalid("schedule", format!("level with kernel {} has 0 frames", l.kernel)));
            }
            if l.kernel.t == 0 || l.kernel.h == 0 || l.kernel.w == 0 {
                return Err(Error::invalid("schedule", format!("kernel {} has a zero size", l.kernel)));
            }
        }
        Ok(())
    }

    /// History latents the schedule can hold (excluding the anchor).
    pub fn capacity(&self) -> usize {
        self.levels().map(|l| l.frames).sum()
    }

    /// The exact layout of one section: RoPE indices and the latents that fill every slot.
    pub fn layout(&self, plan: &SectionPlan, section: usize) -> Result<SectionLayout> {
        self.validate()?;
        if self.order != plan.order {
            return Err(Error::invalid(
                "section plan",
                format!("plan is for {:?} order but the schedule is {:?}", plan.order, self.order),
            ));
        }
        let info = plan.section(section)?;
        let w = plan.window as i64;
        let window = &info.latents;
        let (win_start, win_end) = (window.start as i64, window.end as i64);
        let last = plan.total_latents() as i64 - 1;
        let generated = |p: i64| match plan.order {
            SectionOrder::Forward => p < win_start,
            SectionOrder::Inverted => p >= win_end,
        };
        let content = |p: i64| -> Slot {
            if p == 0 {
                Slot::Start
            } else if p > 0 && p <= last && generated(p) {
                Slot::Latent(p as usize)
            } else if p == last + 1 {
                Slot::End
            } else {
                Slot::Zero
            }
        };

        // Real positions of each group's frames, nearest first.
        let past_pos: Vec<Vec<i64>> = walk(&self.past, win_start - 1, -1);
        let future_pos: Vec<Vec<i64>> = walk(&self.future, win_end, 1);
        let head_pos: Vec<Vec<i64>> = walk(&self.head, 1, 1);
        let covered: std::collections::HashSet<i64> = past_pos.iter().chain(&future_pos).flatten().copied().collect();

        let mut timeline: Vec<Placed> = Vec::new();
        if self.anchor {
            timeline.push(Placed { kernel: Kernel::X1, slot: Slot::Start });
        }
        for (level, pos) in self.head.iter().zip(&head_pos) {
            for &p in pos {
                let slot = if covered.contains(&p) { Slot::Zero } else { content(p) };
                timeline.push(Placed { kernel: level.kernel, slot });
            }
        }
        let gap = match plan.order {
            SectionOrder::Forward => 0,
            SectionOrder::Inverted => info.padding * plan.window,
        };
        let gap_start = timeline.len();
        // Past levels are laid out oldest first, each level in time order.
        let mut past_slots = Vec::new();
        for (level, pos) in self.past.iter().zip(&past_pos).rev() {
            for &p in pos.iter().rev() {
                past_slots.push(Placed { kernel: level.kernel, slot: content(p) });
            }
        }
        let window_index = (gap_start + gap + past_slots.len()) as i64;
        let mut future_slots = Vec::new();
        for (level, pos) in self.future.iter().zip(&future_pos) {
            for &p in pos {
                future_slots.push(Placed { kernel: level.kernel, slot: content(p) });
            }
        }

        let mut layout = SectionLayout {
            section,
            latents: window.clone(),
            indices_latents: (window_index..window_index + w).collect(),
            groups: Vec::new(),
        };
        let mut index = 0i64;
        let place = |layout: &mut SectionLayout, placed: &[Placed], index: &mut i64| {
            for p in placed {
                layout.group_mut(p.kernel).push(*index, p.slot);
                *index += 1;
            }
        };
        place(&mut layout, &timeline, &mut index);
        index += gap as i64;
        place(&mut layout, &past_slots, &mut index);
        index += w;
        place(&mut layout, &future_slots, &mut index);
        Ok(layout)
    }

    /// Token counts of every group and of the noisy window for a latent of `h × w`.
    pub fn context_tokens(&self, window: usize, h: usize, w: usize) -> Result<TokenCounts> {
        self.validate()?;
        check_latent_size(h, w)?;
        check_window(window)?;
        let mut frames: Vec<(Kernel, usize)> = Vec::new();
        let mut add = |k: Kernel, n: usize| match frames.iter_mut().find(|(g, _)| *g == k) {
            Some((_, f)) => *f += n,
            None => frames.push((k, n)),
        };
        if self.anchor {
            add(Kernel::X1, 1);
        }
        for l in self.head.iter().chain(self.past.iter().rev()).chain(&self.future) {
            add(l.kernel, l.frames);
        }
        let groups: Vec<(Kernel, usize)> = frames.iter().map(|&(k, n)| (k, k.tokens(n, h, w))).collect();
        let noisy = Kernel::X1.tokens(window, h, w);
        Ok(TokenCounts { noisy, groups })
    }
}

fn walk(levels: &[Level], from: i64, step: i64) -> Vec<Vec<i64>> {
    let mut p = from;
    levels
        .iter()
        .map(|l| {
            (0..l.frames)
                .map(|_| {
                    let cur = p;
                    p += step;
                    cur
                })
                .collect()
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Placed {
    kernel: Kernel,
    slot: Slot,
}

fn check_window(window: usize) -> Result<()> {
    if window == 0 {
        return Err(Error::invalid("latent window", "must be at least 1 latent frame"));
    }
    Ok(())
}

fn check_latent_size(h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 || h % 2 != 0 || w % 2 != 0 {
        return Err(Error::invalid(
            "latent size",
            format!("latent height and width must be even and non-zero (the (1,2,2) patch kernel), got {h}×{w}"),
        ));
    }
    Ok(())
}

/// What fills one context slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// The start latent (the user's image).
    Start,
    /// The generated latent at this real position (`1..=n·W`).
    Latent(usize),
    /// The end latent when an end frame is given, else zeros.
    End,
    /// A zero latent (history that does not exist yet).
    Zero,
}

/// The frames and RoPE indices of one patchify kernel in a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGroup {
    /// Patchify kernel shared by the group.
    pub kernel: Kernel,
    /// RoPE frame index of each latent, in the order the latents are stacked.
    pub indices: Vec<i64>,
    /// What fills each latent.
    pub slots: Vec<Slot>,
}

impl KernelGroup {
    fn push(&mut self, index: i64, slot: Slot) {
        self.indices.push(index);
        self.slots.push(slot);
    }
}

/// Everything the transformer needs to know about one section's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionLayout {
    /// Generation-order index of the section.
    pub section: usize,
    /// Real latent positions generated by this section.
    pub latents: Range<usize>,
    /// RoPE frame indices of the noisy window (`indices_latents`).
    pub indices_latents: Vec<i64>,
    /// One group per kernel, in the order kernels first appear on the timeline.
    pub groups: Vec<KernelGroup>,
}

impl SectionLayout {
    fn group_mut(&mut self, kernel: Kernel) -> &mut KernelGroup {
        if let Some(i) = self.groups.iter().position(|g| g.kernel == kernel) {
            return &mut self.groups[i];
        }
        self.groups.push(KernelGroup { kernel, indices: vec![], slots: vec![] });
        self.groups.last_mut().expect("just pushed")
    }

    /// The group of a kernel, if the schedule uses it.
    pub fn group(&self, kernel: Kernel) -> Option<&KernelGroup> {
        self.groups.iter().find(|g| g.kernel == kernel)
    }

    fn indices(&self, kernel: Kernel) -> Vec<i64> {
        self.group(kernel).map(|g| g.indices.clone()).unwrap_or_default()
    }

    /// `indices_latents_clean`: the 1x set, anchor first.
    pub fn indices_latents_clean(&self) -> Vec<i64> {
        self.indices(Kernel::X1)
    }

    /// `indices_latents_history_2x`.
    pub fn indices_latents_history_2x(&self) -> Vec<i64> {
        self.indices(Kernel::X2)
    }

    /// `indices_latents_history_4x`.
    pub fn indices_latents_history_4x(&self) -> Vec<i64> {
        self.indices(Kernel::X4)
    }

    /// Fails unless every kernel is one the released model has an embedder for.
    pub fn check_model_kernels(&self) -> Result<()> {
        match self.groups.iter().find(|g| ![Kernel::X1, Kernel::X2, Kernel::X4].contains(&g.kernel)) {
            Some(g) => Err(Error::invalid(
                "schedule",
                format!(
                    "kernel {} has no patch embedder in the FramePack transformer (only (1,2,2), (2,4,4), (4,8,8))",
                    g.kernel
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Token counts of a section's packed sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCounts {
    /// Tokens of the noisy window.
    pub noisy: usize,
    /// Tokens per kernel group (after replicate padding), in the order kernels first appear on
    /// the timeline, as in [`SectionLayout::groups`].
    pub groups: Vec<(Kernel, usize)>,
}

impl TokenCounts {
    /// Context (clean) tokens.
    pub fn context(&self) -> usize {
        self.groups.iter().map(|(_, n)| n).sum()
    }

    /// Image-stream tokens: context plus noisy.
    pub fn total(&self) -> usize {
        self.context() + self.noisy
    }
}

/// The paper's context length `S·L_f + L_f·Σ_{i<T} λ^{−i}` for `s` predicted frames and `t`
/// history frames, each history frame `i` (0 = most recent) compressed by `λ^i`.
pub fn paper_context_length(s: usize, t: usize, lambda: f64, l_f: f64) -> f64 {
    let history: f64 = (0..t).map(|i| lambda.powi(-(i as i32))).sum();
    s as f64 * l_f + l_f * history
}

/// The bound of [`paper_context_length`] as the history grows: `(S + λ/(λ−1))·L_f`.
pub fn paper_context_limit(s: usize, lambda: f64, l_f: f64) -> f64 {
    (s as f64 + lambda / (lambda - 1.0)) * l_f
}

/// FramePack's latent paddings for the inverted loop: `[n−1, …, 0]`, or `[3, 2, …, 2, 1, 0]`
/// when `n > 4` (the gap between start frame and window is capped).
pub fn inverted_paddings(n: usize) -> Vec<usize> {
    if n > 4 {
        let mut p = vec![3];
        p.extend(std::iter::repeat_n(2, n - 3));
        p.extend([1, 0]);
        p
    } else {
        (0..n).rev().collect()
    }
}

/// How a video is cut into sections and in which order they are generated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionPlan {
    /// Latent frames generated per section (`W`).
    pub window: usize,
    /// Number of sections (`n`).
    pub sections: usize,
    /// Generation order.
    pub order: SectionOrder,
}

/// One section of a [`SectionPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Generation-order index.
    pub index: usize,
    /// Real latent positions it generates.
    pub latents: Range<usize>,
    /// Video frames those latents cover in the final video (`4p − 3` for latent position p).
    pub frames: Range<usize>,
    /// Empty windows between the start frame and the window in RoPE time (inverted order only).
    pub padding: usize,
}

impl SectionPlan {
    /// Plans `seconds` of video at 30 fps: `max(1, round(seconds·30 / 4W))` sections (Python
    /// rounding, so 3 s with W = 9 gives 2 sections).
    pub fn from_seconds(seconds: f64, window: usize, order: SectionOrder) -> Result<Self> {
        check_window(window)?;
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(Error::invalid(
                "seconds",
                format!("video length must be a positive number of seconds, got {seconds}"),
            ));
        }
        let n = (seconds * FPS / (4 * window) as f64).round_ties_even().max(1.0);
        Self::new(n as usize, window, order)
    }

    /// A plan of exactly `sections` sections.
    pub fn new(sections: usize, window: usize, order: SectionOrder) -> Result<Self> {
        check_window(window)?;
        if sections == 0 {
            return Err(Error::invalid("sections", "a video needs at least one section"));
        }
        Ok(Self { window, sections, order })
    }

    /// Video frames sampled per section, `4W − 3` (33 for W = 9).
    pub fn frames_per_section(&self) -> usize {
        4 * self.window - 3
    }

    /// Latent frames of the finished video, start latent included: `1 + n·W`.
    pub fn total_latents(&self) -> usize {
        1 + self.sections * self.window
    }

    /// Video frames of the finished video: `4(1 + n·W) − 3` (36n + 1 for W = 9).
    pub fn total_frames(&self) -> usize {
        latent_to_frames(self.total_latents())
    }

    /// Length of the finished video in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.total_frames() as f64 / FPS
    }

    /// The section generated `index`-th.
    pub fn section(&self, index: usize) -> Result<SectionInfo> {
        if index >= self.sections {
            return Err(Error::invalid("section", format!("section {index} of a {}-section plan", self.sections)));
        }
        let (slot, padding) = match self.order {
            SectionOrder::Forward => (index, 0),
            SectionOrder::Inverted => (self.sections - 1 - index, inverted_paddings(self.sections)[index]),
        };
        let start = 1 + slot * self.window;
        let latents = start..start + self.window;
        let frames = latent_to_frames(latents.start)..latent_to_frames(latents.end);
        Ok(SectionInfo { index, latents, frames, padding })
    }

    /// All sections in generation order.
    pub fn sections(&self) -> impl Iterator<Item = SectionInfo> + '_ {
        (0..self.sections).map(|i| self.section(i).expect("index in range"))
    }
}

/// Frames decoded from `latents` causal latents: `4T − 3` (0 for 0).
pub fn latent_to_frames(latents: usize) -> usize {
    (VAE_TEMPORAL * latents).saturating_sub(VAE_TEMPORAL - 1)
}

/// A schedule by name, or written out; what presets and the CLI hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScheduleChoice {
    /// [`ContextSchedule::geometric`].
    Geometric,
    /// [`ContextSchedule::inverted_anti_drifting`].
    InvertedAntiDrifting,
    /// [`ContextSchedule::first_frame_priority`].
    FirstFramePriority,
    /// [`ContextSchedule::symmetric`].
    Symmetric,
    /// A user-defined schedule.
    Custom(ContextSchedule),
}

impl ScheduleChoice {
    /// The schedule this names.
    pub fn resolve(&self) -> ContextSchedule {
        match self {
            ScheduleChoice::Geometric => ContextSchedule::geometric(),
            ScheduleChoice::InvertedAntiDrifting => ContextSchedule::inverted_anti_drifting(),
            ScheduleChoice::FirstFramePriority => ContextSchedule::first_frame_priority(),
            ScheduleChoice::Symmetric => ContextSchedule::symmetric(),
            ScheduleChoice::Custom(s) => s.clone(),
        }
    }
}

impl FromStr for ScheduleChoice {
    type Err = Error;

    /// Parses `geometric` (alias `f1`), `inverted` (alias `original`), `first-frame` or
    /// `symmetric`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "geometric" | "f1" | "forward" => ScheduleChoice::Geometric,
            "inverted" | "inverted-anti-drifting" | "original" => ScheduleChoice::InvertedAntiDrifting,
            "first-frame" | "first-frame-priority" => ScheduleChoice::FirstFramePriority,
            "symmetric" => ScheduleChoice::Symmetric,
            other => {
                return Err(Error::invalid(
                    "schedule",
                    format!("unknown schedule `{other}` (expected geometric, inverted, first-frame or symmetric)"),
                ));
            }
        })
    }
}
