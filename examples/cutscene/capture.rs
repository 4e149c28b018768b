//! The capture: walking into the door (or C) captures the game view into the in-world
//! screen, X cancels, and the status line follows the generation.

use bevy::prelude::*;
use bevy_framepack::prelude::*;

use crate::game::{CaptureCamera, DOOR, Player, Scene, Screen, Status};
use crate::measure::Stats;

/// The panel's Start button captures the game view into the in-world screen.
#[cfg(feature = "egui")]
pub fn panel_target(scene: Res<Scene>, screen: Query<Entity, With<Screen>>, mut panel: ResMut<FramePackPanel>) {
    let source = CaptureSource::Image(scene.capture.clone());
    panel.target = screen.single().ok().map(|e| (source, e));
}

pub fn trigger(
    keys: Res<ButtonInput<KeyCode>>,
    mut scene: ResMut<Scene>,
    player: Query<&Transform, With<Player>>,
    mut screen: Query<(Entity, &mut Sprite), With<Screen>>,
    mut commands: Commands,
) {
    let at_door = player.iter().any(|t| t.translation.truncate().distance(DOOR) < 40.0);
    let wants = keys.just_pressed(KeyCode::KeyC) || (at_door && !scene.triggered);
    scene.triggered |= at_door;
    if !wants {
        return;
    }
    let Ok((screen, mut sprite)) = screen.single_mut() else { return };
    // A new capture replaces the screen's player; untint the placeholder so frames show as made.
    sprite.color = Color::WHITE;
    commands.entity(screen).remove::<CutscenePlayer>();
    let source = CaptureSource::Image(scene.capture.clone());
    commands.trigger(CaptureCutscene { entity: screen, source, preset: scene.preset.clone() });
}

pub fn cancel(keys: Res<ButtonInput<KeyCode>>, scene: Res<Scene>, mut fp: FramePack) {
    if keys.just_pressed(KeyCode::KeyX)
        && let Some(job) = scene.job
    {
        fp.cancel(job);
    }
}

/// The status line's text of a capture that failed, shown by [`status`].
#[derive(Resource, Default)]
pub struct CaptureError(Option<String>);

pub fn capture_failed(ev: On<CaptureFailed>, mut error: ResMut<CaptureError>) {
    error.0 = Some(format!("Capture failed: {}", ev.error));
}

pub fn status(
    mut events: MessageReader<GenerationEvent>,
    mut capture: ResMut<CaptureError>,
    mut scene: ResMut<Scene>,
    mut text: Query<&mut Text2d, With<Status>>,
    mut stats: ResMut<Stats>,
) {
    let mut line = capture.0.take();
    for ev in events.read() {
        line = Some(match ev {
            GenerationEvent::Started { job, total_frames, .. } => {
                scene.job = Some(*job);
                stats.generating = true;
                format!("Generating {total_frames} frames…")
            }
            GenerationEvent::Progress { section, sections, step, steps, fraction, eta, .. } => format!(
                "Section {}/{sections} step {step}/{steps} ({:.0}%, ETA {:.1}s)",
                section + 1,
                fraction * 100.0,
                eta.as_secs_f32()
            ),
            GenerationEvent::Section { .. } => continue,
            GenerationEvent::Finished { .. } => {
                stats.generating = false;
                "Cutscene generated. C: capture again".into()
            }
            GenerationEvent::Failed { error, .. } => {
                stats.generating = false;
                format!("Failed: {error}")
            }
            GenerationEvent::Cancelled { .. } => {
                stats.generating = false;
                "Cancelled".into()
            }
        });
    }
    if let Some(line) = line {
        info!("{line}");
        for mut t in &mut text {
            t.0 = line.clone();
        }
    }
}

/// Any capture (the door, C, or the panel's Start) switches the capture camera on for the frame
/// the screenshot is taken in.
pub fn capture_camera_on(_: On<CaptureCutscene>, mut cameras: Query<&mut Camera, With<CaptureCamera>>) {
    cameras.iter_mut().for_each(|mut c| c.is_active = true);
}

/// The capture is over (the job started or could not): the capture camera stops rendering.
pub fn capture_camera_off(mut cameras: Query<&mut Camera, With<CaptureCamera>>) {
    cameras.iter_mut().for_each(|mut c| c.is_active = false);
}
