//! [`FramePackPlugin`] and its system sets.

use bevy::asset::{AssetEventSystems, AssetTrackingSystems};
use bevy::prelude::*;

use crate::capture::on_capture;
use crate::clip::{ClipStatus, CutsceneClip, CutsceneClipLoader};
use crate::messages::*;
use crate::param::{FramePackStatus, FramePackWorker};
use crate::playback::{CutscenePlayback, CutscenePlayer, play_cutscenes, prepare_players};
use crate::preset::{Preset, PresetLoader};
use crate::settings::FramePackSettings;
use crate::worker::{JobEnd, Response};

/// FramePack video generation for Bevy: `app.add_plugins(FramePackPlugin)`.
///
/// Settings live in the [`FramePackSettings`] resource: insert it before or after adding the
/// plugin (the plugin inserts the default only when it is absent). Needs `AssetPlugin` (part of
/// `DefaultPlugins`; add it yourself next to `MinimalPlugins`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FramePackPlugin;

/// The plugin's systems, ordered against Bevy's sets.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FramePackSystems {
    /// `PreUpdate`, after asset tracking: drains the worker's responses, writes the messages and
    /// puts the frames into the jobs' [`CutsceneClip`]s.
    Receive,
    /// `PostUpdate`, before `AssetEventSystems`: makes new players' images and points their
    /// sprites, UI images and materials at them, advances playback, uploads the frame to show
    /// and triggers the players' end events.
    Playback,
    /// `Last`: stops the worker when the app exits.
    Shutdown,
}

impl Plugin for FramePackPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<FramePackSettings>()
            .register_type::<FramePackSettings>()
            .register_type::<CutscenePlayer>()
            .register_type::<CutscenePlayback>()
            .register_type::<GenerationEvent>()
            .init_resource::<FramePackWorker>()
            .init_resource::<FramePackStatus>()
            .register_type::<FramePackStatus>()
            .init_asset::<Preset>()
            .init_asset_loader::<PresetLoader>()
            .init_asset::<CutsceneClip>()
            .init_asset_loader::<CutsceneClipLoader>()
            .add_message::<GenerationEvent>()
            .add_observer(on_capture)
            .configure_sets(PreUpdate, FramePackSystems::Receive.after(AssetTrackingSystems))
            .configure_sets(PostUpdate, FramePackSystems::Playback.before(AssetEventSystems))
            .add_systems(
                PreUpdate,
                (refuse_late_settings, receive, crate::cache::poll_loads).in_set(FramePackSystems::Receive),
            )
            .add_systems(PostUpdate, (prepare_players, play_cutscenes).chain().in_set(FramePackSystems::Playback))
            .add_systems(Last, shutdown_on_exit.in_set(FramePackSystems::Shutdown));
    }
}

fn receive(
    settings: Res<FramePackSettings>,
    mut worker: ResMut<FramePackWorker>,
    mut clips: ResMut<Assets<CutsceneClip>>,
    mut status: ResMut<FramePackStatus>,
    mut events: MessageWriter<GenerationEvent>,
) {
    let responses: Vec<Response> = worker.drain().collect();
    for response in responses {
        let clip = response.job().and_then(|job| worker.clips.get(&job)).and_then(|h| clips.get_mut(h));
        let event = match response {
            Response::Started { job, sections, total_frames, width, height } => {
                if let Some(mut c) = clip {
                    c.set_total(total_frames);
                }
                GenerationEvent::Started { job, sections, total_frames, width, height }
            }
            Response::Progress { job, section, sections, step, steps, fraction, eta } => {
                GenerationEvent::Progress { job, section, sections, step, steps, fraction, eta }
            }
            Response::Preview { frame, .. } => {
                if let Some(mut c) = clip {
                    c.receive_preview(frame);
                }
                continue;
            }
            Response::Frame { job, index, frame } => {
                if let Some(mut c) = clip
                    && !c.receive(index, std::slice::from_ref(&frame))
                {
                    warn!("frame {index} of job {job:?} does not fit its clip");
                }
                continue;
            }
            Response::Section { job, index, sections, range } => {
                GenerationEvent::Section { job, index, sections, frames: range }
            }
            Response::Ended { job, end } => {
                let (status, event) = match end {
                    JobEnd::Done => (ClipStatus::Complete, GenerationEvent::Finished { job }),
                    JobEnd::Cancelled | JobEnd::GameGone => (ClipStatus::Cancelled, GenerationEvent::Cancelled { job }),
                    JobEnd::Failed(error) => {
                        error!("FramePack job {job:?} failed: {error}");
                        (ClipStatus::Failed(error.clone()), GenerationEvent::Failed { job, error })
                    }
                };
                let saved = worker.cache_saves.remove(&job);
                if let Some(mut c) = clip {
                    c.end(status);
                    if let Some(path) = saved
                        && c.status() == &ClipStatus::Complete
                    {
                        crate::cache::save(&c, path, settings.cache_limit_bytes);
                    }
                }
                worker.clips.remove(&job);
                event
            }
            Response::Model(loaded) => {
                *status = match loaded {
                    Ok(()) => FramePackStatus::Ready,
                    Err(e) => FramePackStatus::Failed(e),
                };
                continue;
            }
        };
        events.write(event);
    }
}

fn shutdown_on_exit(
    mut exit: MessageReader<AppExit>,
    mut worker: ResMut<FramePackWorker>,
    mut status: ResMut<FramePackStatus>,
) {
    if exit.read().next().is_some() {
        worker.shutdown();
        *status = FramePackStatus::Unloaded;
    }
}

/// Settings are read once, when the worker starts; a later change is refused with a warning.
fn refuse_late_settings(settings: Res<FramePackSettings>, worker: Res<FramePackWorker>) {
    if settings.is_changed()
        && let Some(running) = worker.settings()
        && !running.same_worker(&settings)
    {
        warn!(
            "FramePackSettings changed after the worker started; the worker keeps the settings it started with \
             (insert the settings before the first generation or preload)"
        );
    }
}
