//! "Capture this camera (or the window) now and generate with preset X": trigger
//! [`CaptureCutscene`] on the entity that will play it; the frame comes back through Bevy's
//! screenshot API and goes to the worker as the start image; the entity then gets a
//! [`CutscenePlayer`], or a [`CaptureFailed`] event says why not.

use bevy::camera::RenderTarget;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::window::WindowRef;

use crate::param::FramePack;
use crate::playback::CutscenePlayer;
use crate::preset::Preset;
use crate::request::{JobTicket, RgbaImage};

/// What to capture.
#[derive(Clone, Debug, PartialEq, Reflect)]
pub enum CaptureSource {
    /// The primary window.
    PrimaryWindow,
    /// Whatever this camera renders to (a window or an `Image`).
    Camera(Entity),
    /// A render-target image.
    Image(Handle<Image>),
}

/// Captures a frame and generates a cutscene from it, aimed at the entity that will play it:
/// `commands.trigger(CaptureCutscene { entity: screen, source, preset })`. When the frame
/// arrives (a frame or two later) the job is queued and the entity gets a [`CutscenePlayer`]; a
/// `Sprite`, `ImageNode` or `MeshMaterial3d<StandardMaterial>` on it then shows the cutscene.
/// Problems are reported with a [`CaptureFailed`] event on the same entity.
#[derive(EntityEvent, Clone, Debug)]
pub struct CaptureCutscene {
    /// The entity that receives the [`CutscenePlayer`].
    pub entity: Entity,
    /// What to capture.
    pub source: CaptureSource,
    /// The preset to generate with (must be loaded when the frame arrives).
    pub preset: Handle<Preset>,
}

/// A [`CaptureCutscene`] started its job: triggered on the entity that plays it, with the start
/// image the worker received (e.g. to show as a freeze frame while the first section generates).
#[derive(EntityEvent, Clone, Debug)]
pub struct CaptureStarted {
    /// The entity that received the [`CutscenePlayer`].
    pub entity: Entity,
    /// The job.
    pub ticket: JobTicket,
    /// The captured frame, as sent to the worker.
    pub image: RgbaImage,
}

/// A [`CaptureCutscene`] could not start a job: triggered on the entity that was to play it
/// (`commands.entity(screen).observe(|ev: On<CaptureFailed>| …)`, or a global observer).
#[derive(EntityEvent, Clone, Debug, PartialEq, Eq)]
pub struct CaptureFailed {
    /// The entity that was to receive the player.
    pub entity: Entity,
    /// Why.
    pub error: String,
}

pub(crate) fn on_capture(
    ev: On<CaptureCutscene>,
    mut commands: Commands,
    cameras: Query<Option<&RenderTarget>, With<Camera>>,
) {
    let player = ev.entity;
    let screenshot = match &ev.source {
        CaptureSource::PrimaryWindow => Screenshot::primary_window(),
        CaptureSource::Image(h) => Screenshot::image(h.clone()),
        CaptureSource::Camera(cam) => match cameras.get(*cam) {
            Ok(None | Some(RenderTarget::Window(WindowRef::Primary))) => Screenshot::primary_window(),
            Ok(Some(RenderTarget::Window(WindowRef::Entity(w)))) => Screenshot::window(*w),
            Ok(Some(RenderTarget::Image(t))) => Screenshot::image(t.handle.clone()),
            Ok(Some(other)) => {
                let error = format!("cannot capture a camera rendering to {other:?}");
                commands.trigger(CaptureFailed { entity: player, error });
                return;
            }
            Err(_) => {
                commands.trigger(CaptureFailed { entity: player, error: format!("{cam} is not a camera") });
                return;
            }
        },
    };
    let preset = ev.preset.clone();
    commands.spawn(screenshot).observe(
        move |cap: On<ScreenshotCaptured>,
              mut fp: FramePack,
              presets: Res<Assets<Preset>>,
              server: Res<AssetServer>,
              mut commands: Commands| {
            let not_loaded = || match (preset.path(), server.get_load_state(&preset)) {
                (Some(path), Some(bevy::asset::LoadState::Failed(e))) => {
                    format!("the preset {path} failed to load: {e}")
                }
                (Some(path), _) => format!("the preset {path} is not loaded yet"),
                (None, _) => "the preset is not loaded".to_string(),
            };
            let started = presets.get(&preset).ok_or_else(not_loaded).and_then(|p| {
                let image = RgbaImage::from_image(&cap.image).map_err(|e| e.to_string())?;
                let ticket = fp.generate(p.request(image.clone())).map_err(|e| e.to_string())?;
                Ok((CutscenePlayer::new(ticket.clip.clone()), p.playback_settings(), ticket, image))
            });
            match started {
                Ok((cutscene, playback, ticket, image)) => {
                    commands.entity(player).try_insert((cutscene, playback));
                    commands.trigger(CaptureStarted { entity: player, ticket, image });
                }
                Err(error) => {
                    commands.trigger(CaptureFailed { entity: player, error });
                }
            }
        },
    );
}
