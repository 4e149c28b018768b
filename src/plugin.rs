//! [`FramePackPlugin`] and its system sets.

use bevy::asset::{AssetEventSystems, AssetTrackingSystems};
use bevy::prelude::*;

use crate::capture::{attach_player_images, on_capture};
use crate::messages::*;
use crate::param::FramePackWorker;
use crate::playback::{CutscenePlayer, play_cutscenes};
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
    /// hands frames to the [`CutscenePlayer`]s.
    Receive,
    /// `PostUpdate`, before `AssetEventSystems`: points new players' sprites, UI images and
    /// materials at their image, advances playback and uploads the frame to show.
    Playback,
    /// `Last`: stops the worker when the app exits.
    Shutdown,
}

impl Plugin for FramePackPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<FramePackSettings>()
            .register_type::<FramePackSettings>()
            .register_type::<CutscenePlayer>()
            .register_type::<GenerationEvent>()
            .init_resource::<FramePackWorker>()
            .init_asset::<Preset>()
            .init_asset_loader::<PresetLoader>()
            .add_message::<GenerationEvent>()
            .add_observer(on_capture)
            .configure_sets(PreUpdate, FramePackSystems::Receive.after(AssetTrackingSystems))
            .configure_sets(PostUpdate, FramePackSystems::Playback.before(AssetEventSystems))
            .add_systems(PreUpdate, receive.in_set(FramePackSystems::Receive))
            .add_systems(PostUpdate, (attach_player_images, play_cutscenes).chain().in_set(FramePackSystems::Playback))
            .add_systems(Last, shutdown_on_exit.in_set(FramePackSystems::Shutdown));
    }
}

fn receive(
    worker: Res<FramePackWorker>,
    mut players: Query<&mut CutscenePlayer>,
    mut events: MessageWriter<GenerationEvent>,
) {
    let mut for_job = |job: JobId, f: &mut dyn FnMut(&mut CutscenePlayer)| {
        for mut p in &mut players {
            if p.job() == job {
                f(&mut p);
            }
        }
    };
    for response in worker.drain() {
        let event = match response {
            Response::Started { job, sections, total_frames, width, height } => {
                for_job(job, &mut |p| p.generation_total(total_frames));
                GenerationEvent::Started { job, sections, total_frames, width, height }
            }
            Response::Progress { job, section, sections, step, steps, fraction, eta } => {
                GenerationEvent::Progress { job, section, sections, step, steps, fraction, eta }
            }
            Response::Preview { job, frame } => {
                for_job(job, &mut |p| p.receive_preview(frame.clone()));
                continue;
            }
            Response::Section { job, index, sections, range, frames } => {
                for_job(job, &mut |p| {
                    if !p.receive(range.start, &frames) {
                        warn!("CutscenePlayer of job {job:?}: the section's frames do not fit its image");
                    }
                });
                GenerationEvent::Section { job, index, sections, frames: range }
            }
            Response::Ended { job, end } => {
                for_job(job, &mut |p| p.end_generation());
                match end {
                    JobEnd::Done => GenerationEvent::Finished { job },
                    JobEnd::Cancelled | JobEnd::GameGone => GenerationEvent::Cancelled { job },
                    JobEnd::Failed(error) => {
                        error!("FramePack job {job:?} failed: {error}");
                        GenerationEvent::Failed { job, error }
                    }
                }
            }
        };
        events.write(event);
    }
}

fn shutdown_on_exit(mut exit: MessageReader<AppExit>, mut worker: ResMut<FramePackWorker>) {
    if exit.read().next().is_some() {
        worker.shutdown();
    }
}
