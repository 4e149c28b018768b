//! Cutscene playback: frames stream into one [`Image`] while later sections still generate.

use std::sync::Arc;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use serde::Deserialize;

use crate::messages::JobId;
use crate::request::JobTicket;

/// What playback does when it reaches a frame that is not generated yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Reflect)]
pub enum BufferPolicy {
    /// Keep showing the last frame and keep the clock running: when frames arrive, playback
    /// jumps to where the clock is (real-time, may skip frames).
    Hold,
    /// Stop the clock on the last frame and resume with the next one (never skips).
    #[default]
    Pause,
    /// Replay the frames generated so far from the start until more arrive.
    Loop,
}

/// Where playback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Reflect)]
pub enum PlaybackState {
    /// No frame yet.
    Waiting,
    /// Playing generated frames.
    Playing,
    /// Caught up with generation; the [`BufferPolicy`] applies.
    Buffering,
    /// The last frame has been shown.
    Finished,
}

/// The playback state machine, free of rendering: feed it time and the number of frames
/// available, ask it which frame to show.
#[derive(Clone, Debug, PartialEq, Reflect)]
pub struct PlaybackClock {
    fps: f32,
    policy: BufferPolicy,
    /// Position in frames.
    position: f64,
    available: usize,
    total: Option<usize>,
    state: PlaybackState,
    shown: Option<usize>,
}

impl PlaybackClock {
    /// A clock at frame 0 with nothing available.
    pub fn new(fps: f32, policy: BufferPolicy) -> Self {
        Self {
            fps: if fps.is_finite() && fps > 0.0 { fps } else { 30.0 },
            policy,
            position: 0.0,
            available: 0,
            total: None,
            state: PlaybackState::Waiting,
            shown: None,
        }
    }

    /// Frames `0..available` can be shown.
    pub fn set_available(&mut self, available: usize) {
        self.available = available;
    }

    /// The video has `total` frames; once they are all shown playback finishes. Call it with
    /// the frames available when generation stops early (cancelled or failed).
    pub fn set_total(&mut self, total: usize) {
        self.total = Some(total);
    }

    /// The state.
    pub fn state(&self) -> PlaybackState {
        self.state
    }

    /// The frame to show, if any.
    pub fn frame(&self) -> Option<usize> {
        self.shown
    }

    /// Advances by `dt` seconds; returns the frame to show.
    pub fn advance(&mut self, dt: f32) -> Option<usize> {
        if self.state == PlaybackState::Finished {
            return self.shown;
        }
        if self.available == 0 {
            if self.total == Some(0) {
                self.state = PlaybackState::Finished;
            }
            return self.shown;
        }
        if self.state != PlaybackState::Waiting {
            self.position += f64::from(dt.max(0.0) * self.fps);
        }
        let avail = self.available as f64;
        let index = self.position as usize;
        if index < self.available {
            self.state = PlaybackState::Playing;
            self.shown = Some(index);
        } else if self.total.is_some_and(|t| self.available >= t) {
            self.state = PlaybackState::Finished;
            self.shown = Some(self.available - 1);
        } else {
            self.state = PlaybackState::Buffering;
            match self.policy {
                BufferPolicy::Hold => self.shown = Some(self.available - 1),
                BufferPolicy::Pause => {
                    // Sit on the last frame; the next one follows as soon as it arrives.
                    self.position = avail - 1.0;
                    self.shown = Some(self.available - 1);
                }
                BufferPolicy::Loop => {
                    self.position %= avail;
                    self.shown = Some(self.position as usize);
                }
            }
        }
        self.shown
    }
}

/// Plays a generation job into an [`Image`]. Put the image on a `Sprite`, an `ImageNode` or a
/// `StandardMaterial`: the image keeps its size, so the GPU texture is reused, and its pixels
/// live in the render world only (`RenderAssetUsages::RENDER_WORLD`).
#[derive(Component, Debug, Reflect)]
#[reflect(Component, Debug)]
pub struct CutscenePlayer {
    job: JobId,
    image: Handle<Image>,
    size: (u32, u32),
    #[reflect(ignore)]
    frames: Vec<Option<Arc<[u8]>>>,
    clock: PlaybackClock,
    uploaded: Option<usize>,
    #[reflect(ignore)]
    preview: Option<Arc<[u8]>>,
    preview_shown: bool,
}

impl CutscenePlayer {
    /// A player for the job of `ticket`, with a black image of the job's frame size.
    pub fn new(ticket: &JobTicket, fps: f32, policy: BufferPolicy, images: &mut Assets<Image>) -> Self {
        let image = Image::new_fill(
            Extent3d { width: ticket.width, height: ticket.height, depth_or_array_layers: 1 },
            TextureDimension::D2,
            &[0, 0, 0, 255],
            TextureFormat::Rgba8UnormSrgb,
            RenderAssetUsages::RENDER_WORLD,
        );
        Self {
            job: ticket.id,
            image: images.add(image),
            size: (ticket.width, ticket.height),
            frames: vec![None; ticket.total_frames],
            clock: PlaybackClock::new(fps, policy),
            uploaded: None,
            preview: None,
            preview_shown: false,
        }
    }

    /// The job it plays.
    pub fn job(&self) -> JobId {
        self.job
    }
    /// The image the frames go to.
    pub fn image(&self) -> &Handle<Image> {
        &self.image
    }
    /// The playback state.
    pub fn state(&self) -> PlaybackState {
        self.clock.state()
    }
    /// The frame shown now.
    pub fn current_frame(&self) -> Option<usize> {
        self.uploaded
    }
    /// The RGBA8 pixels of frame `index`, if received. Every player of a job shares the same
    /// frame buffers.
    pub fn frame(&self, index: usize) -> Option<&[u8]> {
        self.frames.get(index).and_then(|f| f.as_deref())
    }

    /// Frames received so far (in order from the start, without gaps).
    pub fn available(&self) -> usize {
        self.frames.iter().take_while(|f| f.is_some()).count()
    }

    fn frame_bytes(&self) -> usize {
        self.size.0 as usize * self.size.1 as usize * 4
    }

    /// Stores frames `start..` (RGBA8 of the player's size, shared with the job's other players);
    /// frames of another size are refused.
    pub(crate) fn receive(&mut self, start: usize, frames: &[Arc<[u8]>]) -> bool {
        if frames.iter().any(|f| f.len() != self.frame_bytes()) {
            return false;
        }
        for (i, f) in frames.iter().enumerate() {
            if let Some(slot) = self.frames.get_mut(start + i) {
                *slot = Some(f.clone());
            }
        }
        self.clock.set_available(self.available());
        true
    }

    /// Whether the image shows a preview (the tiny decoder's estimate of the section being
    /// sampled, sent when the request asks for previews) while the player waits for frames.
    pub fn showing_preview(&self) -> bool {
        self.preview_shown
    }

    /// Keeps a preview frame (RGBA8 of the player's size) to show while waiting; frames of
    /// another size are ignored.
    pub(crate) fn receive_preview(&mut self, frame: Arc<[u8]>) {
        if frame.len() == self.frame_bytes() {
            self.preview = Some(frame);
        }
    }

    /// Generation stopped: no frames beyond those received will come.
    pub(crate) fn end_generation(&mut self) {
        self.preview = None;
        let n = self.available();
        self.frames.truncate(n);
        self.clock.set_total(n);
    }

    pub(crate) fn generation_total(&mut self, total: usize) {
        self.frames.resize(total, None);
        self.clock.set_total(total);
        self.clock.set_available(self.available());
    }
}

pub(crate) fn play_cutscenes(
    time: Res<Time>,
    mut players: Query<&mut CutscenePlayer>,
    images: Option<ResMut<Assets<Image>>>,
) {
    let Some(mut images) = images else { return };
    let dt = time.delta_secs();
    for mut player in &mut players {
        let player = &mut *player;
        let shown = player.clock.advance(dt);
        // Previews stand in while nothing plays: before the first frame, and while buffering
        // (except under `Loop`, which replays what it has).
        let waiting = match player.clock.state() {
            PlaybackState::Waiting => true,
            PlaybackState::Buffering => player.clock.policy != BufferPolicy::Loop,
            _ => false,
        };
        if waiting {
            if let (Some(frame), Some(mut image)) = (player.preview.take(), images.get_mut(&player.image)) {
                image.data = Some(frame.to_vec());
                player.preview_shown = true;
            }
            if player.preview_shown {
                continue;
            }
        }
        if player.preview_shown {
            player.preview_shown = false;
            player.uploaded = None;
        }
        if let Some(index) = shown
            && shown != player.uploaded
            && let (Some(Some(frame)), Some(mut image)) = (player.frames.get(index), images.get_mut(&player.image))
        {
            image.data = Some(frame.to_vec());
            player.uploaded = shown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(clock: &mut PlaybackClock, dt: f32, n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| clock.advance(dt)).collect()
    }

    #[test]
    fn waits_then_plays_at_fps() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Pause);
        assert_eq!(c.advance(0.1), None);
        assert_eq!(c.state(), PlaybackState::Waiting);
        c.set_available(5);
        assert_eq!(run(&mut c, 0.1, 5), [Some(0), Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(c.state(), PlaybackState::Playing);
    }

    #[test]
    fn pause_holds_then_resumes_without_skipping() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Pause);
        c.set_available(3);
        assert_eq!(run(&mut c, 0.1, 6), [Some(0), Some(1), Some(2), Some(2), Some(2), Some(2)]);
        assert_eq!(c.state(), PlaybackState::Buffering);
        c.set_available(6);
        assert_eq!(run(&mut c, 0.1, 3), [Some(3), Some(4), Some(5)]);
    }

    #[test]
    fn hold_keeps_the_clock_running_and_skips() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Hold);
        c.set_available(3);
        assert_eq!(run(&mut c, 0.1, 6), [Some(0), Some(1), Some(2), Some(2), Some(2), Some(2)]);
        c.set_available(10);
        assert_eq!(c.advance(0.1), Some(6));
    }

    #[test]
    fn loop_replays_available_frames() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Loop);
        c.set_available(3);
        assert_eq!(run(&mut c, 0.1, 7), [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(c.state(), PlaybackState::Buffering);
    }

    #[test]
    fn finishes_on_the_last_frame() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Pause);
        c.set_available(3);
        c.set_total(3);
        assert_eq!(run(&mut c, 0.1, 5), [Some(0), Some(1), Some(2), Some(2), Some(2)]);
        assert_eq!(c.state(), PlaybackState::Finished);
    }

    #[test]
    fn empty_video_finishes() {
        let mut c = PlaybackClock::new(10.0, BufferPolicy::Pause);
        c.set_total(0);
        assert_eq!(c.advance(0.1), None);
        assert_eq!(c.state(), PlaybackState::Finished);
    }
}
