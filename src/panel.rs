//! The egui panel (feature `egui`): preset picker, prompt editing, start/cancel, progress bar
//! with ETA and a live thumbnail of the cutscene playing.
//!
//! Add [`FramePackPanelPlugin`] next to bevy_egui's `EguiPlugin` and tell the panel what to
//! capture and which entity plays the result with [`FramePackPanel::target`].

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, EguiTextureHandle, egui};

use crate::capture::{CaptureCutscene, CaptureFailed, CaptureSource};
use crate::messages::*;
use crate::param::FramePack;
use crate::playback::CutscenePlayer;
use crate::preset::Preset;

/// Adds the FramePack egui window (needs bevy_egui's `EguiPlugin`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FramePackPanelPlugin;

impl Plugin for FramePackPanelPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<FramePackPanel>()
            .add_observer(|ev: On<CaptureFailed>, mut panel: ResMut<FramePackPanel>| {
                panel.status = format!("capture failed: {}", ev.error);
            })
            .add_systems(Update, track_jobs)
            .add_systems(EguiPrimaryContextPass, panel_ui);
    }
}

/// The panel's state; set [`FramePackPanel::target`] to enable the Start button.
#[derive(Resource, Debug, Default)]
pub struct FramePackPanel {
    /// What Start captures, and the entity that receives the [`CutscenePlayer`].
    pub target: Option<(CaptureSource, Entity)>,
    /// The selected preset.
    pub preset: Option<AssetId<Preset>>,
    /// The prompt being edited (starts as the selected preset's).
    pub prompt: String,
    job: Option<JobId>,
    fraction: f32,
    eta_secs: f32,
    status: String,
}

fn track_jobs(mut panel: ResMut<FramePackPanel>, mut events: MessageReader<GenerationEvent>) {
    for ev in events.read() {
        match ev {
            GenerationEvent::Started { job, total_frames, .. } => {
                panel.job = Some(*job);
                panel.fraction = 0.0;
                panel.status = format!("generating {total_frames} frames");
            }
            GenerationEvent::Progress { section, sections, step, steps, fraction, eta, .. } => {
                panel.fraction = *fraction;
                panel.eta_secs = eta.as_secs_f32();
                panel.status = format!("section {}/{sections}, step {step}/{steps}", section + 1);
            }
            GenerationEvent::Section { .. } => {}
            GenerationEvent::Finished { .. } => {
                panel.job = None;
                panel.fraction = 1.0;
                panel.status = "finished".into();
            }
            GenerationEvent::Failed { error, .. } => {
                panel.job = None;
                panel.status = format!("failed: {error}");
            }
            GenerationEvent::Cancelled { .. } => {
                panel.job = None;
                panel.status = "cancelled".into();
            }
        }
    }
}

fn panel_ui(
    mut contexts: EguiContexts,
    mut panel: ResMut<FramePackPanel>,
    mut presets: ResMut<Assets<Preset>>,
    players: Query<&CutscenePlayer>,
    mut framepack: FramePack,
    mut commands: Commands,
) -> Result {
    let thumbnail = panel
        .target
        .as_ref()
        .and_then(|(_, e)| players.get(*e).ok())
        .and_then(|p| Some((p.image()?.clone(), p.current_frame(), p.state())));
    let texture = thumbnail.as_ref().map(|(image, ..)| {
        contexts.image_id(image).unwrap_or_else(|| contexts.add_image(EguiTextureHandle::Weak(image.id())))
    });
    let ctx = contexts.ctx_mut()?;
    let panel = &mut *panel;
    let mut start = false;
    let mut cancel = false;
    egui::Window::new("FramePack").default_width(260.0).show(ctx, |ui| {
        let selected = panel.preset.and_then(|id| presets.get(id)).map(|p| p.name.clone()).unwrap_or_default();
        egui::ComboBox::from_label("preset").selected_text(selected).show_ui(ui, |ui| {
            for (id, p) in presets.iter() {
                if ui.selectable_label(panel.preset == Some(id), &p.name).clicked() {
                    panel.preset = Some(id);
                    panel.prompt = p.prompt.clone();
                }
            }
        });
        ui.label("prompt");
        ui.text_edit_multiline(&mut panel.prompt);
        ui.horizontal(|ui| {
            let can_start = panel.target.is_some() && panel.preset.is_some() && panel.job.is_none();
            start = ui.add_enabled(can_start, egui::Button::new("Start")).clicked();
            cancel = ui.add_enabled(panel.job.is_some(), egui::Button::new("Cancel")).clicked();
        });
        if panel.target.is_none() {
            ui.label("(set FramePackPanel::target to enable Start)");
        }
        let eta = if panel.job.is_some() { format!(" ETA {:.1}s", panel.eta_secs) } else { String::new() };
        ui.add(egui::ProgressBar::new(panel.fraction).text(format!("{:.0}%{eta}", panel.fraction * 100.0)));
        ui.label(&panel.status);
        if let (Some(id), Some((_, frame, state))) = (texture, &thumbnail) {
            ui.image(egui::load::SizedTexture::new(id, [192.0, 144.0]));
            ui.label(format!("{state:?}, frame {}", frame.map_or("-".into(), |f| f.to_string())));
        }
    });
    if cancel && let Some(job) = panel.job {
        framepack.cancel(job);
    }
    if start
        && let (Some((source, player)), Some(preset)) =
            (panel.target.clone(), panel.preset.and_then(|id| presets.get(id)))
    {
        let edited = Preset { prompt: panel.prompt.clone(), ..preset.clone() };
        let preset = presets.add(edited);
        panel.status = "capturing".into();
        commands.entity(player).remove::<CutscenePlayer>();
        commands.trigger(CaptureCutscene { entity: player, source, preset });
    }
    Ok(())
}
