//! [`CutsceneClip`]: a cutscene's frames as an asset. A generation job fills one section by
//! section; a `.cutscene` file loads into one (see [`framepack::clip`] for the format), so a
//! game can generate once and replay without the model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bevy::asset::io::Reader;
use bevy::asset::{AssetLoader, LoadContext};
use bevy::prelude::*;
use framepack::clip::{Clip, ClipError};

use crate::messages::{GenerationError, JobId};

/// Where a clip's frames stand.
#[derive(Clone, Debug, PartialEq, Eq, Reflect)]
pub enum ClipStatus {
    /// A job is generating it; frames arrive section by section.
    Generating(JobId),
    /// Every frame is there.
    Complete,
    /// Generation was cancelled: the frames received so far are the whole clip.
    Cancelled,
    /// Generation failed: the frames received so far are the whole clip.
    Failed(GenerationError),
}

/// The frames of one cutscene (RGBA8, `width × height`, shared by every player that plays it).
///
/// Generated clips come with the [`JobTicket`](crate::JobTicket) of their job; saved ones load
/// from `.cutscene` files through the asset server. Any number of
/// [`CutscenePlayer`](crate::CutscenePlayer)s can play one clip without copying its frames.
#[derive(Asset, TypePath, Clone, Debug)]
pub struct CutsceneClip {
    width: u32,
    height: u32,
    fps: f32,
    frames: Vec<Option<Arc<[u8]>>>,
    status: ClipStatus,
    preview: Option<(u64, Arc<[u8]>)>,
    meta: BTreeMap<String, String>,
}

/// Opaque RGBA8 of RGB8 pixels.
pub(crate) fn rgba_from_rgb(rgb: &[u8]) -> Arc<[u8]> {
    rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

impl CutsceneClip {
    /// An empty clip that `job` will fill with `total` frames.
    pub(crate) fn generating(job: JobId, (width, height): (u32, u32), total: usize) -> Self {
        Self {
            width,
            height,
            fps: framepack::packing::FPS as f32,
            frames: vec![None; total],
            status: ClipStatus::Generating(job),
            preview: None,
            meta: BTreeMap::new(),
        }
    }

    /// A complete clip of RGBA8 frames of `width × height`; `None` if a frame has another size.
    pub fn from_frames(width: u32, height: u32, fps: f32, frames: Vec<Arc<[u8]>>) -> Option<Self> {
        let bytes = width as usize * height as usize * 4;
        if frames.iter().any(|f| f.len() != bytes) || !(fps.is_finite() && fps > 0.0) {
            return None;
        }
        Some(Self {
            width,
            height,
            fps,
            frames: frames.into_iter().map(Some).collect(),
            status: ClipStatus::Complete,
            preview: None,
            meta: BTreeMap::new(),
        })
    }

    /// A clip from a decoded `.cutscene` file.
    pub fn from_file(clip: &Clip) -> Self {
        Self {
            width: clip.width,
            height: clip.height,
            fps: clip.fps,
            frames: clip.frames.iter().map(|f| Some(rgba_from_rgb(f))).collect(),
            status: ClipStatus::Complete,
            preview: None,
            meta: clip.meta.clone(),
        }
    }

    /// The clip as a `.cutscene` file's content: the frames received so far (without gaps).
    pub fn to_file(&self) -> Clip {
        let mut clip = Clip::new(self.width, self.height, self.fps);
        clip.frames = self.frames.iter().map_while(|f| f.as_deref()).map(rgb_from_rgba).collect();
        clip.meta = self.meta.clone();
        clip
    }

    /// Writes the frames received so far to a `.cutscene` file (through a temporary file).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ClipError> {
        self.to_file().save(path.as_ref())
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// The native frame rate (30 for FramePack).
    pub fn fps(&self) -> f32 {
        self.fps
    }
    /// Frames of the whole clip (those still generating included).
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    /// Whether the clip has no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// Frames that can play: the received ones from the start, without gaps (an inverted
    /// schedule generates the end first, so frame 0 may come last).
    pub fn available(&self) -> usize {
        self.frames.iter().take_while(|f| f.is_some()).count()
    }
    /// The RGBA8 pixels of frame `index`, if received.
    pub fn frame(&self, index: usize) -> Option<&Arc<[u8]>> {
        self.frames.get(index).and_then(Option::as_ref)
    }
    /// Where generation stands.
    pub fn status(&self) -> &ClipStatus {
        &self.status
    }
    /// Whether no more frames will come (complete, cancelled or failed).
    pub fn is_final(&self) -> bool {
        !matches!(self.status, ClipStatus::Generating(_))
    }
    /// Free-form metadata saved with the clip (prompt, seed, cache key, …).
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }
    /// Metadata to save with the clip.
    pub fn meta_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.meta
    }

    /// The latest preview (the tiny decoder's estimate of the section being sampled) with its
    /// sequence number.
    pub(crate) fn preview(&self) -> Option<&(u64, Arc<[u8]>)> {
        self.preview.as_ref()
    }

    fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    /// Stores frames `start..`; frames of another size are refused.
    pub(crate) fn receive(&mut self, start: usize, frames: &[Arc<[u8]>]) -> bool {
        if frames.iter().any(|f| f.len() != self.frame_bytes()) {
            return false;
        }
        for (i, f) in frames.iter().enumerate() {
            if let Some(slot) = self.frames.get_mut(start + i) {
                *slot = Some(f.clone());
            }
        }
        true
    }

    pub(crate) fn receive_preview(&mut self, frame: Arc<[u8]>) {
        if frame.len() == self.frame_bytes() {
            let n = self.preview.as_ref().map_or(0, |(n, _)| n + 1);
            self.preview = Some((n, frame));
        }
    }

    pub(crate) fn set_total(&mut self, total: usize) {
        self.frames.resize(total, None);
    }

    /// Generation stopped: the frames received so far are the clip.
    pub(crate) fn end(&mut self, status: ClipStatus) {
        self.preview = None;
        let n = self.available();
        self.frames.truncate(n);
        self.status = status;
    }
}

fn rgb_from_rgba(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
}

/// Loads [`CutsceneClip`]s from `*.cutscene` files.
#[derive(Default, TypePath)]
pub struct CutsceneClipLoader;

/// Why a `.cutscene` file did not load.
#[derive(Debug, thiserror::Error)]
pub enum CutsceneClipLoaderError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The asset path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid clip (not a `.cutscene` file, truncated, corrupt frames, …).
    #[error("{path}: {source}")]
    Clip {
        /// The asset path.
        path: String,
        /// What is wrong.
        source: ClipError,
    },
}

impl AssetLoader for CutsceneClipLoader {
    type Asset = CutsceneClip;
    type Settings = ();
    type Error = CutsceneClipLoaderError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _: &(),
        cx: &mut LoadContext<'_>,
    ) -> Result<CutsceneClip, Self::Error> {
        let path = cx.path().to_string();
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|source| CutsceneClipLoaderError::Io { path: path.clone(), source })?;
        let clip = Clip::decode(&bytes).map_err(|source| CutsceneClipLoaderError::Clip { path, source })?;
        Ok(CutsceneClip::from_file(&clip))
    }

    fn extensions(&self) -> &[&str] {
        &["cutscene"]
    }
}
