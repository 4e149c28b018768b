//! The measuring: frame times with and without a generation running, the playback systems'
//! cost on upload frames, and the headless script that walks to the door, saves screenshots,
//! the start image the worker received (`capture.png`) and the cutscene's frames at model
//! resolution (`frames/NNNN.png`), and prints the numbers.

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy_framepack::prelude::*;

use crate::Args;
use crate::game::{DOOR, Player, Scene, Screen};

/// Frame times with and without a generation running, and the main-world cost of the
/// playback systems on frames where a new cutscene frame was uploaded.
#[derive(Resource, Default)]
pub struct Stats {
    pub generating: bool,
    idle: Vec<f32>,
    busy: Vec<f32>,
    upload: Vec<f32>,
    playback_start: Option<(std::time::Instant, Option<usize>)>,
}

pub fn playback_begins(mut stats: ResMut<Stats>, screen: Query<&CutscenePlayer, With<Screen>>) {
    let shown = screen.single().ok().and_then(|p| p.current_frame());
    stats.playback_start = Some((std::time::Instant::now(), shown));
}

pub fn playback_ends(mut stats: ResMut<Stats>, screen: Query<&CutscenePlayer, With<Screen>>) {
    let shown = screen.single().ok().and_then(|p| p.current_frame());
    if let Some((t, before)) = stats.playback_start.take()
        && shown.is_some()
        && shown != before
    {
        stats.upload.push(t.elapsed().as_secs_f32() * 1000.0);
    }
}

pub fn measure(time: Res<Time>, mut stats: ResMut<Stats>) {
    let dt = time.delta_secs() * 1000.0;
    if dt > 0.0 {
        if stats.generating { stats.busy.push(dt) } else { stats.idle.push(dt) }
    }
}

fn percentiles(v: &[f32]) -> String {
    if v.is_empty() {
        return "no frames".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let at = |p: f32| s[((s.len() - 1) as f32 * p).round() as usize];
    format!("p50 {:.1} ms, p99 {:.1} ms over {} frames", at(0.5), at(0.99), s.len())
}

/// Headless mode: walk to the door by script, save PNGs of the game and of the cutscene
/// playing, exit after `--frames`.
#[allow(clippy::too_many_arguments)]
pub fn headless_script(
    args: Res<Args>,
    scene: Res<Scene>,
    mut frame: Local<u32>,
    mut saved: Local<Vec<String>>,
    mut last_saved_frame: Local<Option<usize>>,
    mut player: Query<&mut Transform, With<Player>>,
    screen: Query<&CutscenePlayer, With<Screen>>,
    stats: Res<Stats>,
    mut commands: Commands,
    mut exit: MessageWriter<AppExit>,
) {
    let Some(target) = scene.target.clone().filter(|_| args.headless) else { return };
    *frame += 1;
    let n = *frame;
    for mut t in &mut player {
        if n > 10 && t.translation.x < DOOR.x {
            t.translation.x = (t.translation.x + 25.0).min(DOOR.x);
        }
    }
    let mut save = |name: String| {
        let path = args.out.join(&name);
        commands.spawn(Screenshot::image(target.clone())).observe(save_to_disk(path));
        saved.push(name);
    };
    if n == 8 {
        save("game.png".into());
    }
    if let Ok(p) = screen.single()
        && let Some(f) = p.current_frame()
        && n.is_multiple_of(5)
        && n < args.frames
        && *last_saved_frame != Some(f)
    {
        *last_saved_frame = Some(f);
        save(format!("cutscene_{n:04}_frame{f:03}.png"));
    }
    if n == args.frames {
        save("last.png".into());
    }
    if n >= args.frames + 10 {
        // Screenshots arrive a few frames after the request.
        println!("saved to {}: {}", args.out.display(), saved.join(", "));
        println!("frame time without generation: {}", percentiles(&stats.idle));
        println!("frame time while generating:   {}", percentiles(&stats.busy));
        println!("playback systems on upload frames (main world): {}", percentiles(&stats.upload));
        exit.write(AppExit::Success);
    }
}

/// The clip of the last capture, and whether its frames were written.
#[derive(Resource, Default)]
pub struct ModelFrames(Option<Handle<CutsceneClip>>, bool);

fn write_png(path: &std::path::Path, (width, height): (u32, u32), rgba: Vec<u8>) {
    let image = Image::new(
        Extent3d { width, height, depth_or_array_layers: 1 },
        TextureDimension::D2,
        rgba,
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::MAIN_WORLD,
    );
    let saved =
        image.try_into_dynamic().map_err(|e| e.to_string()).and_then(|d| d.save(path).map_err(|e| e.to_string()));
    if let Err(e) = saved {
        error!("cannot write {}: {e}", path.display());
    }
}

/// Headless mode: writes the start image the worker received as `capture.png`.
pub fn save_capture(ev: On<CaptureStarted>, args: Res<Args>, mut frames: ResMut<ModelFrames>) {
    if args.headless {
        let size = (ev.image.width(), ev.image.height());
        write_png(&args.out.join("capture.png"), size, ev.image.pixels().to_vec());
        *frames = ModelFrames(Some(ev.ticket.clip.clone()), false);
    }
}

/// Headless mode: writes the cutscene's frames as `frames/NNNN.png` once generation ends.
pub fn save_model_frames(args: Res<Args>, clips: Res<Assets<CutsceneClip>>, mut frames: ResMut<ModelFrames>) {
    let ModelFrames(Some(handle), written) = &mut *frames else { return };
    let Some(clip) = clips.get(&*handle).filter(|c| c.is_final() && !*written) else { return };
    *written = true;
    let dir = args.out.join("frames");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        error!("cannot create {}: {e}", dir.display());
        return;
    }
    for i in 0..clip.available() {
        if let Some(f) = clip.frame(i) {
            write_png(&dir.join(format!("{i:04}.png")), (clip.width(), clip.height()), f.to_vec());
        }
    }
    info!("wrote {} frames of {}x{} to {}", clip.available(), clip.width(), clip.height(), dir.display());
}
