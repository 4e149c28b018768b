//! "Capture this camera (or the window) now and generate with preset X": trigger
//! [`CaptureCutscene`]; the frame comes back through Bevy's screenshot API and goes to the
//! worker as the start image; the player entity then gets a [`CutscenePlayer`].

use bevy::camera::RenderTarget;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::window::WindowRef;

use crate::playback::CutscenePlayer;
use crate::preset::Preset;
use crate::worker::{FramePack, RgbaImage};

/// What to capture.
#[derive(Clone, Debug, PartialEq)]
pub enum CaptureSource {
    /// The primary window.
    PrimaryWindow,
    /// Whatever this camera renders to (a window or an `Image`).
    Camera(Entity),
    /// A render-target image.
    Image(Handle<Image>),
}

/// Captures a frame and generates a cutscene from it: `commands.trigger(CaptureCutscene { … })`.
/// When the frame arrives (a frame or two later) the job is queued and `player` gets a
/// [`CutscenePlayer`]; a `Sprite`, `ImageNode` or `MeshMaterial3d<StandardMaterial>` on it then
/// shows the cutscene. Problems are reported with [`CaptureFailed`].
#[derive(Event, Clone, Debug)]
pub struct CaptureCutscene {
    /// What to capture.
    pub source: CaptureSource,
    /// The preset to generate with (must be loaded when the frame arrives).
    pub preset: Handle<Preset>,
    /// The entity that receives the [`CutscenePlayer`].
    pub player: Entity,
}

/// A [`CaptureCutscene`] could not start a job.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct CaptureFailed {
    /// The entity that was to receive the player.
    pub player: Entity,
    /// Why.
    pub error: String,
}

pub(crate) fn on_capture(
    ev: On<CaptureCutscene>,
    mut commands: Commands,
    cameras: Query<Option<&RenderTarget>, With<Camera>>,
    mut failed: MessageWriter<CaptureFailed>,
) {
    let player = ev.player;
    let screenshot = match &ev.source {
        CaptureSource::PrimaryWindow => Screenshot::primary_window(),
        CaptureSource::Image(h) => Screenshot::image(h.clone()),
        CaptureSource::Camera(cam) => match cameras.get(*cam) {
            Ok(None | Some(RenderTarget::Window(WindowRef::Primary))) => Screenshot::primary_window(),
            Ok(Some(RenderTarget::Window(WindowRef::Entity(w)))) => Screenshot::window(*w),
            Ok(Some(RenderTarget::Image(t))) => Screenshot::image(t.handle.clone()),
            Ok(Some(other)) => {
                failed
                    .write(CaptureFailed { player, error: format!("cannot capture a camera rendering to {other:?}") });
                return;
            }
            Err(_) => {
                failed.write(CaptureFailed { player, error: format!("{cam} is not a camera") });
                return;
            }
        },
    };
    let preset = ev.preset.clone();
    commands.spawn(screenshot).observe(
        move |cap: On<ScreenshotCaptured>,
              mut fp: FramePack,
              presets: Res<Assets<Preset>>,
              mut images: ResMut<Assets<Image>>,
              mut commands: Commands,
              mut failed: MessageWriter<CaptureFailed>| {
            let started = presets.get(&preset).ok_or_else(|| "the preset is not loaded".to_string()).and_then(|p| {
                let image = RgbaImage::from_image(&cap.image).map_err(|e| e.to_string())?;
                let ticket = fp.generate(p.request(image)).map_err(|e| e.to_string())?;
                Ok(CutscenePlayer::new(&ticket, p.fps, p.playback, &mut images))
            });
            match started {
                Ok(p) => {
                    commands.entity(player).try_insert(p);
                }
                Err(error) => {
                    failed.write(CaptureFailed { player, error });
                }
            }
        },
    );
}

type NewPlayers<'a> = (
    &'a CutscenePlayer,
    Option<&'a mut Sprite>,
    Option<&'a mut ImageNode>,
    Option<&'a MeshMaterial3d<StandardMaterial>>,
);

/// Points a new player's `Sprite`, `ImageNode` or `StandardMaterial` at its image.
pub(crate) fn attach_player_images(
    mut players: Query<NewPlayers, Added<CutscenePlayer>>,
    materials: Option<ResMut<Assets<StandardMaterial>>>,
) {
    let mut materials = materials;
    for (player, sprite, node, material) in &mut players {
        if let Some(mut s) = sprite {
            s.image = player.image().clone();
        }
        if let Some(mut n) = node {
            n.image = player.image().clone();
        }
        if let (Some(m), Some(materials)) = (material, materials.as_mut())
            && let Some(mut m) = materials.get_mut(&m.0)
        {
            m.base_color_texture = Some(player.image().clone());
        }
    }
}
