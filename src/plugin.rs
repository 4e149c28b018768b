//! [`FramePackPlugin`] and its system sets.

use bevy::asset::{AssetEventSystems, AssetTrackingSystems};
use bevy::prelude::*;

use crate::capture::{CaptureFailed, attach_player_images, on_capture};
use crate::messages::*;
use crate::playback::{CutscenePlayer, play_cutscenes};
use crate::preset::{Preset, PresetLoader};
use crate::settings::FramePackSettings;
use crate::worker::{FramePackWorker, Response};

/// FramePack video generation for Bevy: `app.add_plugins(FramePackPlugin)`.
///
/// Settings live in the [`FramePackSettings`] resource (insert it before or after adding the
/// plugin, or use [`FramePackPlugin::with_settings`]). Needs `AssetPlugin` (part of
/// `DefaultPlugins`; add it yourself next to `MinimalPlugins`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FramePackPlugin;

impl FramePackPlugin {
    /// The plugin plus settings, for those who prefer a builder:
    /// `app.add_plugins(FramePackPlugin::with_settings(FramePackSettings::from_dir("models/framepack")))`.
    pub fn with_settings(settings: FramePackSettings) -> FramePackPluginWithSettings {
        FramePackPluginWithSettings(settings)
    }
}

/// [`FramePackPlugin`] that also inserts its [`FramePackSettings`] (see [`FramePackPlugin::with_settings`]).
#[derive(Clone, Debug)]
pub struct FramePackPluginWithSettings(pub FramePackSettings);

impl Plugin for FramePackPluginWithSettings {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.0.clone()).add_plugins(FramePackPlugin);
    }
}

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
            .init_resource::<FramePackWorker>()
            .init_asset::<Preset>()
            .init_asset_loader::<PresetLoader>()
            .add_message::<GenerationStarted>()
            .add_message::<SectionReady>()
            .add_message::<GenerationProgress>()
            .add_message::<GenerationFinished>()
            .add_message::<GenerationFailed>()
            .add_message::<GenerationCancelled>()
            .add_message::<CaptureFailed>()
            .add_observer(on_capture)
            .configure_sets(PreUpdate, FramePackSystems::Receive.after(AssetTrackingSystems))
            .configure_sets(PostUpdate, FramePackSystems::Playback.before(AssetEventSystems))
            .add_systems(PreUpdate, receive.in_set(FramePackSystems::Receive))
            .add_systems(PostUpdate, (attach_player_images, play_cutscenes).chain().in_set(FramePackSystems::Playback))
            .add_systems(Last, shutdown_on_exit.in_set(FramePackSystems::Shutdown));
    }
}

#[derive(bevy::ecs::system::SystemParam)]
struct Writers<'w> {
    started: MessageWriter<'w, GenerationStarted>,
    section: MessageWriter<'w, SectionReady>,
    progress: MessageWriter<'w, GenerationProgress>,
    finished: MessageWriter<'w, GenerationFinished>,
    failed: MessageWriter<'w, GenerationFailed>,
    cancelled: MessageWriter<'w, GenerationCancelled>,
}

fn receive(worker: Res<FramePackWorker>, mut players: Query<&mut CutscenePlayer>, mut out: Writers) {
    let mut for_job = |job: JobId, f: &mut dyn FnMut(&mut CutscenePlayer)| {
        for mut p in &mut players {
            if p.job() == job {
                f(&mut p);
            }
        }
    };
    for response in worker.drain() {
        match response {
            Response::Started(m) => {
                for_job(m.job, &mut |p| p.generation_total(m.total_frames));
                out.started.write(m);
            }
            Response::Progress(m) => {
                out.progress.write(m);
            }
            Response::Preview { job, width, height, frame } => {
                for_job(job, &mut |p| p.receive_preview((width, height), frame.clone()));
            }
            Response::Section { ready, width, height, frames } => {
                for_job(ready.job, &mut |p| {
                    if !p.receive(ready.frames.start, (width, height), &frames) {
                        warn!("CutscenePlayer of job {:?}: frames of {width}x{height} do not fit its image", ready.job);
                    }
                });
                out.section.write(ready);
            }
            Response::Finished(job) => {
                for_job(job, &mut |p| p.end_generation());
                out.finished.write(GenerationFinished { job });
            }
            Response::Failed(m) => {
                for_job(m.job, &mut |p| p.end_generation());
                error!("FramePack job {:?} failed: {}", m.job, m.error);
                out.failed.write(m);
            }
            Response::Cancelled(job) => {
                for_job(job, &mut |p| p.end_generation());
                out.cancelled.write(GenerationCancelled { job });
            }
        }
    }
}

fn shutdown_on_exit(mut exit: MessageReader<AppExit>, mut worker: ResMut<FramePackWorker>) {
    if exit.read().next().is_some() {
        worker.shutdown();
    }
}
