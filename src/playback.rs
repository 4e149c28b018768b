//! Cutscene playback: a [`CutscenePlayer`] plays a [`CutsceneClip`] into one [`Image`] while later
//! sections still generate; [`CutscenePlayback`] controls it.

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use serde::Deserialize;

use crate::clip::{ClipStatus, CutsceneClip};
use crate::messages::GenerationError;

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
    looping: bool,
    loops: u32,
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
            looping: false,
            loops: 0,
        }
    }

    /// What to do on reaching frames that are not generated yet.
    pub fn set_policy(&mut self, policy: BufferPolicy) {
        self.policy = policy;
    }

    /// Whether playback starts again from frame 0 after the last frame of a complete video
    /// (instead of finishing).
    pub fn set_looping(&mut self, looping: bool) {
        self.looping = looping;
    }

    /// Times playback wrapped from the last frame to the first.
    pub fn loops(&self) -> u32 {
        self.loops
    }

    /// Moves to `frame` (clamped to the video's last frame once its length is known); a
    /// finished clock plays on from there.
    pub fn seek(&mut self, frame: usize) {
        let frame = match self.total {
            Some(t) => frame.min(t.saturating_sub(1)),
            None => frame,
        };
        self.position = frame as f64;
        if self.state == PlaybackState::Finished {
            self.state = PlaybackState::Playing;
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
            if self.looping {
                self.loops += (self.position / avail) as u32;
                self.position %= avail;
                self.state = PlaybackState::Playing;
                self.shown = Some(self.position as usize);
            } else {
                self.state = PlaybackState::Finished;
                self.shown = Some(self.available - 1);
            }
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

/// What a player does after the last frame of its clip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Reflect)]
pub enum PlaybackMode {
    /// Stay on the last frame.
    #[default]
    Once,
    /// Start again from the first frame (once the clip is complete; until then the
    /// [`BufferPolicy`] applies).
    Loop,
    /// Despawn the entity.
    Despawn,
    /// Remove the [`CutscenePlayer`] and its [`CutscenePlayback`] (the image keeps the last frame).
    Remove,
}

/// Which clock drives playback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Reflect)]
pub enum PlaybackTime {
    /// `Time<Virtual>`: pauses and scales with the game.
    #[default]
    Virtual,
    /// `Time<Real>`: runs while the game is paused.
    Real,
}

/// How a [`CutscenePlayer`] plays: end mode, buffering, speed, pause and clock. Read every
/// frame, so changing it controls a playing cutscene (`playback.paused = true`).
#[derive(Component, Clone, Copy, Debug, PartialEq, Reflect)]
#[reflect(Component, Debug, Default)]
pub struct CutscenePlayback {
    /// What happens after the last frame.
    pub mode: PlaybackMode,
    /// What happens on reaching frames that are not generated yet.
    pub buffer: BufferPolicy,
    /// Playback rate relative to the clip's frame rate (1.0: 30 fps for FramePack).
    pub speed: f32,
    /// Whether the clock stands still.
    pub paused: bool,
    /// Virtual (game) or real time.
    pub time: PlaybackTime,
}

impl Default for CutscenePlayback {
    fn default() -> Self {
        Self::ONCE
    }
}

impl CutscenePlayback {
    /// Play once and stay on the last frame.
    pub const ONCE: Self = Self {
        mode: PlaybackMode::Once,
        buffer: BufferPolicy::Pause,
        speed: 1.0,
        paused: false,
        time: PlaybackTime::Virtual,
    };
    /// Loop.
    pub const LOOP: Self = Self { mode: PlaybackMode::Loop, ..Self::ONCE };
    /// Play once, then despawn the entity.
    pub const DESPAWN: Self = Self { mode: PlaybackMode::Despawn, ..Self::ONCE };
    /// Play once, then remove the player.
    pub const REMOVE: Self = Self { mode: PlaybackMode::Remove, ..Self::ONCE };

    /// With this buffering policy.
    pub fn with_buffer(self, buffer: BufferPolicy) -> Self {
        Self { buffer, ..self }
    }
    /// With this speed.
    pub fn with_speed(self, speed: f32) -> Self {
        Self { speed, ..self }
    }
    /// Starting paused.
    pub fn paused(self) -> Self {
        Self { paused: true, ..self }
    }
    /// Driven by real time.
    pub fn with_real_time(self) -> Self {
        Self { time: PlaybackTime::Real, ..self }
    }
}

/// Plays a [`CutsceneClip`] into an [`Image`], like Bevy's `AudioPlayer` plays a sound:
/// `commands.spawn((Sprite::default(), CutscenePlayer::new(ticket.clip), CutscenePlayback::LOOP))`.
///
/// Once the clip's size is known the player makes its image and points a `Sprite`, an
/// `ImageNode` or a `StandardMaterial` on its entity at it (features `2d`, `ui`, `3d`). The
/// image keeps its size, so the GPU texture is reused, and its pixels live in the render world
/// only (`RenderAssetUsages::RENDER_WORLD`). At the end it triggers [`CutsceneFinished`] (or
/// [`CutsceneLooped`] each time it wraps), and [`CutsceneFailed`] if the clip's generation or
/// loading failed; each at most once (per wrap).
#[derive(Component, Debug, Reflect)]
#[reflect(Component, Debug)]
#[require(CutscenePlayback)]
pub struct CutscenePlayer {
    clip: Handle<CutsceneClip>,
    image: Option<Handle<Image>>,
    clock: Option<PlaybackClock>,
    seek: Option<usize>,
    uploaded: Option<usize>,
    preview_shown: bool,
    preview_seen: Option<u64>,
    failed: bool,
    ended: bool,
}

impl CutscenePlayer {
    /// A player of `clip`, from its first frame.
    pub fn new(clip: Handle<CutsceneClip>) -> Self {
        Self {
            clip,
            image: None,
            clock: None,
            seek: None,
            uploaded: None,
            preview_shown: false,
            preview_seen: None,
            failed: false,
            ended: false,
        }
    }

    /// The clip it plays.
    pub fn clip(&self) -> &Handle<CutsceneClip> {
        &self.clip
    }
    /// The image the frames go to, once the clip's size is known.
    pub fn image(&self) -> Option<&Handle<Image>> {
        self.image.as_ref()
    }
    /// The playback state.
    pub fn state(&self) -> PlaybackState {
        self.clock.as_ref().map_or(PlaybackState::Waiting, PlaybackClock::state)
    }
    /// The frame shown now.
    pub fn current_frame(&self) -> Option<usize> {
        self.uploaded
    }
    /// Times playback wrapped to the first frame ([`PlaybackMode::Loop`]).
    pub fn loops(&self) -> u32 {
        self.clock.as_ref().map_or(0, PlaybackClock::loops)
    }
    /// Jumps to `frame` at the next update (a finished player plays on from there).
    pub fn seek(&mut self, frame: usize) {
        self.seek = Some(frame);
        self.ended = false;
    }
    /// Whether the image shows a preview (the tiny decoder's estimate of the section being
    /// sampled, sent when the request asks for previews) while the player waits for frames.
    pub fn showing_preview(&self) -> bool {
        self.preview_shown
    }
}

/// A [`CutscenePlayer`] showed the last frame of its clip (not triggered in
/// [`PlaybackMode::Loop`], nor after [`CutsceneFailed`]). `Despawn` and `Remove` apply after it.
#[derive(EntityEvent, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutsceneFinished {
    /// The player's entity.
    pub entity: Entity,
}

/// A looping [`CutscenePlayer`] went from the last frame back to the first.
#[derive(EntityEvent, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutsceneLooped {
    /// The player's entity.
    pub entity: Entity,
    /// Wraps so far.
    pub loops: u32,
}

/// Why a [`CutscenePlayer`] cannot play its whole clip.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CutsceneError {
    /// The clip's generation failed; the frames generated before still play.
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// The clip's file did not load.
    #[error("cannot load the clip: {0}")]
    Load(String),
}

/// A [`CutscenePlayer`]'s clip failed to generate or load (triggered once on its entity).
#[derive(EntityEvent, Clone, Debug, PartialEq, Eq)]
pub struct CutsceneFailed {
    /// The player's entity.
    pub entity: Entity,
    /// What went wrong.
    pub error: CutsceneError,
}

/// Makes a player's image once its clip's size is known and points a `Sprite`, `ImageNode` or
/// `StandardMaterial` (with the plugin's `2d`, `ui` and `3d` features) on its entity at it.
#[allow(unused_variables, unused_mut)]
pub(crate) fn prepare_players(
    mut players: Query<(Entity, &mut CutscenePlayer)>,
    clips: Res<Assets<CutsceneClip>>,
    images: Option<ResMut<Assets<Image>>>,
    #[cfg(feature = "2d")] mut sprites: Query<&mut Sprite>,
    #[cfg(feature = "ui")] mut nodes: Query<&mut ImageNode>,
    #[cfg(feature = "3d")] materials: (
        Query<&MeshMaterial3d<StandardMaterial>>,
        Option<ResMut<Assets<StandardMaterial>>>,
    ),
) {
    let Some(mut images) = images else { return };
    #[cfg(feature = "3d")]
    let (handles, mut materials) = materials;
    for (entity, mut player) in &mut players {
        if player.image.is_some() {
            continue;
        }
        let Some(clip) = clips.get(&player.clip) else { continue };
        let image = images.add(Image::new_fill(
            Extent3d { width: clip.width(), height: clip.height(), depth_or_array_layers: 1 },
            TextureDimension::D2,
            &[0, 0, 0, 255],
            TextureFormat::Rgba8UnormSrgb,
            RenderAssetUsages::RENDER_WORLD,
        ));
        #[cfg(feature = "2d")]
        if let Ok(mut s) = sprites.get_mut(entity) {
            s.image = image.clone();
        }
        #[cfg(feature = "ui")]
        if let Ok(mut n) = nodes.get_mut(entity) {
            n.image = image.clone();
        }
        #[cfg(feature = "3d")]
        if let (Ok(m), Some(materials)) = (handles.get(entity), materials.as_mut())
            && let Some(mut m) = materials.get_mut(&m.0)
        {
            m.base_color_texture = Some(image.clone());
        }
        player.image = Some(image);
    }
}

fn upload(images: &mut Assets<Image>, image: &Handle<Image>, frame: &[u8]) {
    if let Some(mut image) = images.get_mut(image) {
        image.data = Some(frame.to_vec());
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn play_cutscenes(
    virtual_time: Res<Time<Virtual>>,
    real_time: Res<Time<Real>>,
    mut players: Query<(Entity, &mut CutscenePlayer, &CutscenePlayback)>,
    clips: Res<Assets<CutsceneClip>>,
    server: Res<AssetServer>,
    images: Option<ResMut<Assets<Image>>>,
    mut commands: Commands,
) {
    let Some(mut images) = images else { return };
    for (entity, mut player, settings) in &mut players {
        let player = &mut *player;
        let Some(clip) = clips.get(&player.clip) else {
            if !player.failed
                && let Some(bevy::asset::LoadState::Failed(e)) = server.get_load_state(&player.clip)
            {
                player.failed = true;
                commands.trigger(CutsceneFailed { entity, error: CutsceneError::Load(e.to_string()) });
                end_of_playback(&mut commands, entity, settings.mode);
            }
            continue;
        };
        let Some(image) = player.image.clone() else { continue };
        if !player.failed
            && let ClipStatus::Failed(e) = clip.status()
        {
            player.failed = true;
            commands.trigger(CutsceneFailed { entity, error: CutsceneError::Generation(e.clone()) });
        }
        let clock = player.clock.get_or_insert_with(|| PlaybackClock::new(clip.fps(), settings.buffer));
        clock.set_policy(settings.buffer);
        clock.set_looping(settings.mode == PlaybackMode::Loop);
        clock.set_available(clip.available());
        if clip.is_final() {
            clock.set_total(clip.len());
        }
        if let Some(frame) = player.seek.take() {
            clock.seek(frame);
        }
        let dt = match settings.time {
            PlaybackTime::Virtual => virtual_time.delta_secs(),
            PlaybackTime::Real => real_time.delta_secs(),
        };
        let dt = if settings.paused || !settings.speed.is_finite() { 0.0 } else { dt * settings.speed.max(0.0) };
        let loops = clock.loops();
        let shown = clock.advance(dt);
        let state = clock.state();
        if clock.loops() > loops {
            commands.trigger(CutsceneLooped { entity, loops: clock.loops() });
        }
        // Previews stand in while nothing plays: before the first frame, and while buffering
        // (except under `Loop`, which replays what it has).
        let waiting = match state {
            PlaybackState::Waiting => true,
            PlaybackState::Buffering => settings.buffer != BufferPolicy::Loop,
            _ => false,
        };
        if waiting {
            if let Some((n, frame)) = clip.preview()
                && player.preview_seen != Some(*n)
            {
                upload(&mut images, &image, frame);
                player.preview_seen = Some(*n);
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
            && let Some(frame) = clip.frame(index)
        {
            upload(&mut images, &image, frame);
            player.uploaded = shown;
        }
        if state == PlaybackState::Finished && !player.ended {
            player.ended = true;
            if !player.failed {
                commands.trigger(CutsceneFinished { entity });
            }
            end_of_playback(&mut commands, entity, settings.mode);
        }
    }
}

fn end_of_playback(commands: &mut Commands, entity: Entity, mode: PlaybackMode) {
    match mode {
        PlaybackMode::Once | PlaybackMode::Loop => {}
        PlaybackMode::Despawn => {
            commands.entity(entity).try_despawn();
        }
        PlaybackMode::Remove => {
            commands.entity(entity).try_remove::<(CutscenePlayer, CutscenePlayback)>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(clock: &mut PlaybackClock, dt: f32, n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| clock.advance(dt)).collect()
    }

    /// A 10 fps clock with `available` frames.
    fn clock(policy: BufferPolicy, available: usize) -> PlaybackClock {
        let mut c = PlaybackClock::new(10.0, policy);
        c.set_available(available);
        c
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
        let mut c = clock(BufferPolicy::Pause, 3);
        assert_eq!(run(&mut c, 0.1, 6), [Some(0), Some(1), Some(2), Some(2), Some(2), Some(2)]);
        assert_eq!(c.state(), PlaybackState::Buffering);
        c.set_available(6);
        assert_eq!(run(&mut c, 0.1, 3), [Some(3), Some(4), Some(5)]);
    }

    #[test]
    fn hold_keeps_the_clock_running_and_skips() {
        let mut c = clock(BufferPolicy::Hold, 3);
        assert_eq!(run(&mut c, 0.1, 6), [Some(0), Some(1), Some(2), Some(2), Some(2), Some(2)]);
        c.set_available(10);
        assert_eq!(c.advance(0.1), Some(6));
    }

    #[test]
    fn loop_replays_available_frames() {
        let mut c = clock(BufferPolicy::Loop, 3);
        assert_eq!(run(&mut c, 0.1, 7), [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(c.state(), PlaybackState::Buffering);
    }

    #[test]
    fn finishes_on_the_last_frame() {
        let mut c = clock(BufferPolicy::Pause, 3);
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
