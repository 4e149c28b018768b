//! Writing a generation job's sections to a video file in play order.
//!
//! Sections arrive in generation order: in play order with the forward (F1) loop, end first with
//! the inverted loop. [`OrderedWriter`] pushes every frame to the sink as soon as all frames
//! before it have arrived, so the forward loop streams to disk and the inverted loop writes
//! everything once the first frames (generated last) exist.

use std::collections::BTreeMap;
use std::path::Path;

use framepack::generator::{Frame, Section};

use crate::video::{self, FrameSink, VideoError};

/// Writes frames in play order to a [`FrameSink`], buffering those that arrive early.
pub struct OrderedWriter {
    sink: Option<Box<dyn FrameSink>>,
    pending: BTreeMap<usize, Frame>,
    next: usize,
    total: usize,
    width: usize,
    height: usize,
}

impl OrderedWriter {
    /// Opens `path` (a PNG directory, `.gif` or `.mp4`) for `total` frames of `width × height` at
    /// `fps`.
    pub fn create(path: &Path, width: usize, height: usize, fps: u32, total: usize) -> Result<Self, VideoError> {
        let sink = video::create(path, width as u32, height as u32, fps)?;
        Ok(Self { sink: Some(sink), pending: BTreeMap::new(), next: 0, total, width, height })
    }

    /// Frames written so far.
    pub fn written(&self) -> usize {
        self.next
    }

    /// Adds a section's frames; writes all that are now in order.
    pub fn push(&mut self, section: Section) -> Result<(), VideoError> {
        for (i, f) in section.frame_range.zip(section.frames) {
            self.push_frame(i, f)?;
        }
        Ok(())
    }

    /// Adds frame `i`; writes all that are now in order.
    pub fn push_frame(&mut self, i: usize, f: Frame) -> Result<(), VideoError> {
        if i >= self.total || i < self.next || self.pending.contains_key(&i) {
            return Err(VideoError::Unsupported(format!("frame {i} is out of range or arrived twice")));
        }
        if (f.width, f.height) != (self.width, self.height) {
            return Err(VideoError::Unsupported(format!(
                "frame {i} is {}x{}, the video is {}x{}",
                f.width, f.height, self.width, self.height
            )));
        }
        self.pending.insert(i, f);
        let sink = self.sink.as_mut().expect("open until finish");
        while let Some(f) = self.pending.remove(&self.next) {
            sink.push(&f.rgb)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Finishes the file; fails if frames are missing.
    pub fn finish(mut self) -> Result<(), VideoError> {
        if self.next != self.total {
            return Err(VideoError::Unsupported(format!("only {} of {} frames were generated", self.next, self.total)));
        }
        self.sink.take().expect("open").finish()
    }
}
