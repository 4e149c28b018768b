//! The cutscene demo: walk the green square into the golden door (or press C); the game
//! captures its own frame and a generated cutscene continues it on the in-world screen while
//! the game keeps running. Arrows/WASD move, C captures, X cancels.
//!
//! ```sh
//! cargo run --example cutscene                                   # a window
//! cargo run --example cutscene -- --headless --frames 150 --out out   # offscreen (lavapipe works), PNGs in out/
//! cargo run --example cutscene -- --model path/to/bundle          # a real FramePack bundle
//! cargo run --example cutscene -- --preset presets/walk_through.preset.ron   # another preset
//! cargo run --release --example cutscene -- --headless --frames 600 --threads 1  # frame times
//! ```
//! The game is in `game.rs`, the capture and status line in `capture.rs`, the frame-time
//! measuring and the headless script in `measure.rs`.
//! With no `--model` it uses the embedded nano model, trained on procedural clips in this game's
//! style: the cutscene continues the captured frame with learned motion, on the CPU.

mod capture;
mod game;
mod measure;

use std::path::PathBuf;
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::window::ExitCondition;
use bevy::winit::WinitPlugin;
use bevy_framepack::prelude::*;

use capture::{CaptureError, cancel, capture_camera_off, capture_camera_on, capture_failed, status, trigger};
use game::{VIEW, move_player, setup};
use measure::{
    ModelFrames, Stats, headless_script, measure, playback_begins, playback_ends, save_capture, save_model_frames,
};

#[derive(Resource, Clone, Debug, Default)]
pub struct Args {
    pub headless: bool,
    pub frames: u32,
    pub out: PathBuf,
    pub model: Option<PathBuf>,
    pub preset: Option<String>,
    /// Inference threads (`--threads N`; default: one per core).
    pub threads: Option<usize>,
    /// Run inference at the game's priority (`--normal-priority`) instead of nice 10.
    pub normal_priority: bool,
}
fn parse_args() -> Result<Args, String> {
    let mut a = Args { frames: 150, out: "out".into(), ..default() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--headless" => a.headless = true,
            "--frames" => a.frames = value("--frames")?.parse().map_err(|e| format!("--frames: {e}"))?,
            "--out" => a.out = value("--out")?.into(),
            "--model" => a.model = Some(value("--model")?.into()),
            "--preset" => a.preset = Some(value("--preset")?),
            "--normal-priority" => a.normal_priority = true,
            "--threads" => a.threads = Some(value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?),
            other => {
                return Err(format!(
                    "unknown argument {other} (expected --headless, --frames N, --out DIR, --model DIR, \
                     --preset ASSET_PATH, --threads N, --normal-priority)"
                ));
            }
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if args.headless
        && let Err(e) = std::fs::create_dir_all(&args.out)
    {
        eprintln!("error: cannot create {}: {e}", args.out.display());
        std::process::exit(1);
    }
    let mut app = App::new();
    if args.headless {
        app.add_plugins(
            DefaultPlugins
                .set(WindowPlugin { primary_window: None, exit_condition: ExitCondition::DontExit, ..default() })
                .set(RenderPlugin { synchronous_pipeline_compilation: true, ..default() })
                .disable::<WinitPlugin>(),
        )
        .add_plugins(ScheduleRunnerPlugin::run_loop(Duration::ZERO));
    } else {
        app.add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window { title: "bevy_framepack demo".into(), resolution: VIEW.into(), ..default() }),
            ..default()
        }));
    }
    let mut settings = match &args.model {
        Some(dir) => FramePackSettings::from_dir(dir),
        None => FramePackSettings::default(),
    };
    settings.threads = args.threads;
    settings.low_priority = !args.normal_priority;
    // With `--features egui`: the FramePack panel (preset picker, prompt, start/cancel, progress).
    #[cfg(feature = "egui")]
    app.add_plugins((bevy_egui::EguiPlugin::default(), FramePackPanelPlugin))
        .add_systems(PostStartup, capture::panel_target);
    app.add_plugins(FramePackPlugin)
        .insert_resource(settings)
        .insert_resource(args)
        .init_resource::<Stats>()
        .init_resource::<ModelFrames>()
        .add_observer(save_capture)
        .init_resource::<CaptureError>()
        .add_observer(capture_failed)
        .add_observer(capture_camera_on)
        .add_observer(|_: On<CaptureStarted>, cameras: Query<&mut Camera, With<game::CaptureCamera>>| {
            capture_camera_off(cameras)
        })
        .add_observer(|_: On<CaptureFailed>, cameras: Query<&mut Camera, With<game::CaptureCamera>>| {
            capture_camera_off(cameras)
        })
        .add_systems(Startup, setup)
        .add_systems(
            Update,
            (move_player, trigger, cancel, status, headless_script, save_model_frames, measure).chain(),
        )
        .add_systems(
            PostUpdate,
            (playback_begins.before(FramePackSystems::Playback), playback_ends.after(FramePackSystems::Playback)),
        )
        .run();
}
