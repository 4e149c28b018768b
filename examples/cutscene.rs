//! The cutscene demo: walk the green square into the golden door (or press C); the game
//! captures its own frame and a generated cutscene continues it on the in-world screen while
//! the game keeps running. Arrows/WASD move, C captures, X cancels.
//!
//! ```sh
//! cargo run --example cutscene                                   # a window
//! cargo run --example cutscene -- --headless --frames 150 --out out   # offscreen (lavapipe works), PNGs in out/
//! cargo run --example cutscene -- --model path/to/bundle          # a real FramePack bundle
//! cargo run --example cutscene -- --preset presets/walk_through.preset.ron   # another preset
//! ```
//! With no `--model` it uses the embedded nano model, trained on procedural clips in this game's
//! style: the cutscene continues the captured frame with learned motion, on the CPU.

use std::path::PathBuf;
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::camera::RenderTarget;
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::render::render_resource::TextureFormat;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy::window::ExitCondition;
use bevy::winit::WinitPlugin;
use bevy_framepack::prelude::*;

const VIEW: (u32, u32) = (640, 480);
const DOOR: Vec2 = Vec2::new(220.0, -120.0);

#[derive(Resource, Clone, Debug, Default)]
struct Args {
    headless: bool,
    frames: u32,
    out: PathBuf,
    model: Option<PathBuf>,
    preset: Option<String>,
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
            other => {
                return Err(format!(
                    "unknown argument {other} (expected --headless, --frames N, --out DIR, --model DIR, \
                     --preset ASSET_PATH)"
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
    let settings = match &args.model {
        Some(dir) => FramePackSettings::from_dir(dir),
        None => FramePackSettings::default(),
    };
    // With `--features egui`: the FramePack panel (preset picker, prompt, start/cancel, progress).
    #[cfg(feature = "egui")]
    app.add_plugins((bevy_egui::EguiPlugin::default(), FramePackPanelPlugin)).add_systems(PostStartup, panel_target);
    app.add_plugins(FramePackPlugin)
        .insert_resource(settings)
        .insert_resource(args)
        .init_resource::<Stats>()
        .init_resource::<CaptureError>()
        .add_observer(capture_failed)
        .add_systems(Startup, setup)
        .add_systems(Update, (move_player, trigger, cancel, status, headless_script, measure).chain())
        .add_systems(
            PostUpdate,
            (playback_begins.before(FramePackSystems::Playback), playback_ends.after(FramePackSystems::Playback)),
        )
        .run();
}

#[derive(Component)]
struct Player;
#[derive(Component)]
struct Screen;
#[derive(Component)]
struct Status;
#[derive(Resource)]
struct Scene {
    camera: Entity,
    target: Option<Handle<Image>>,
    preset: Handle<Preset>,
    job: Option<JobId>,
    triggered: bool,
}

fn setup(mut commands: Commands, args: Res<Args>, server: Res<AssetServer>, mut images: ResMut<Assets<Image>>) {
    let target = args
        .headless
        .then(|| images.add(Image::new_target_texture(VIEW.0, VIEW.1, TextureFormat::Rgba8UnormSrgb, None)));
    let mut camera = commands.spawn(Camera2d);
    if let Some(t) = &target {
        camera.insert(RenderTarget::from(t.clone()));
    }
    let camera = camera.id();
    let rect = |c: Color, size: Vec2, at: Vec2, z: f32| {
        (Sprite { color: c, custom_size: Some(size), ..default() }, Transform::from_translation(at.extend(z)))
    };
    commands.spawn(rect(Color::srgb(0.15, 0.2, 0.3), Vec2::new(640.0, 480.0), Vec2::ZERO, 0.0));
    commands.spawn(rect(Color::srgb(0.35, 0.25, 0.2), Vec2::new(640.0, 120.0), Vec2::new(0.0, -180.0), 0.1));
    for (i, x) in [-220.0f32, -60.0, 80.0].into_iter().enumerate() {
        let c = Color::hsl(40.0 * i as f32 + 180.0, 0.5, 0.45);
        commands.spawn(rect(c, Vec2::new(70.0, 90.0 + 30.0 * i as f32), Vec2::new(x, -75.0 + 15.0 * i as f32), 0.2));
    }
    commands.spawn(rect(Color::srgb(0.9, 0.75, 0.2), Vec2::new(50.0, 90.0), DOOR, 0.3));
    commands.spawn((rect(Color::srgb(0.2, 0.85, 0.3), Vec2::splat(36.0), Vec2::new(-280.0, -120.0), 0.5), Player));
    // The in-world screen: frame + the cutscene sprite (a CutscenePlayer is added on capture).
    commands.spawn(rect(Color::srgb(0.05, 0.05, 0.05), Vec2::new(236.0, 180.0), Vec2::new(180.0, 130.0), 0.6));
    commands.spawn((rect(Color::srgb(0.2, 0.2, 0.2), Vec2::new(224.0, 168.0), Vec2::new(180.0, 130.0), 0.7), Screen));
    commands.spawn((
        Text2d::new("Walk into the golden door or press C"),
        TextFont { font_size: FontSize::Px(14.0), ..default() },
        Transform::from_xyz(-135.0, 210.0, 1.0),
        Status,
    ));
    let preset = match (&args.preset, &args.model) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => "presets/door.preset.ron".into(),
        (None, None) => "presets/nano.preset.ron".into(),
    };
    commands.insert_resource(Scene { camera, target, preset: server.load(preset), job: None, triggered: false });
}

/// The panel's Start button captures the game view into the in-world screen.
#[cfg(feature = "egui")]
fn panel_target(scene: Res<Scene>, screen: Query<Entity, With<Screen>>, mut panel: ResMut<FramePackPanel>) {
    let source = match &scene.target {
        Some(t) => CaptureSource::Image(t.clone()),
        None => CaptureSource::Camera(scene.camera),
    };
    panel.target = screen.single().ok().map(|e| (source, e));
}

fn move_player(keys: Res<ButtonInput<KeyCode>>, time: Res<Time>, mut q: Query<&mut Transform, With<Player>>) {
    let mut dir = Vec2::ZERO;
    for (k, d) in [
        (KeyCode::ArrowLeft, Vec2::NEG_X),
        (KeyCode::KeyA, Vec2::NEG_X),
        (KeyCode::ArrowRight, Vec2::X),
        (KeyCode::KeyD, Vec2::X),
        (KeyCode::ArrowUp, Vec2::Y),
        (KeyCode::KeyW, Vec2::Y),
        (KeyCode::ArrowDown, Vec2::NEG_Y),
        (KeyCode::KeyS, Vec2::NEG_Y),
    ] {
        if keys.pressed(k) {
            dir += d;
        }
    }
    for mut t in &mut q {
        let p = t.translation.truncate() + dir.normalize_or_zero() * 200.0 * time.delta_secs();
        t.translation = p.clamp(Vec2::new(-300.0, -220.0), Vec2::new(300.0, 220.0)).extend(t.translation.z);
    }
}

fn trigger(
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
    let source = match &scene.target {
        Some(t) => CaptureSource::Image(t.clone()),
        None => CaptureSource::Camera(scene.camera),
    };
    commands.trigger(CaptureCutscene { entity: screen, source, preset: scene.preset.clone() });
}

fn cancel(keys: Res<ButtonInput<KeyCode>>, scene: Res<Scene>, mut fp: FramePack) {
    if keys.just_pressed(KeyCode::KeyX)
        && let Some(job) = scene.job
    {
        fp.cancel(job);
    }
}

/// The status line's text of a capture that failed, shown by [`status`].
#[derive(Resource, Default)]
struct CaptureError(Option<String>);

fn capture_failed(ev: On<CaptureFailed>, mut error: ResMut<CaptureError>) {
    error.0 = Some(format!("Capture failed: {}", ev.error));
}

fn status(
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

/// Frame times with and without a generation running, and the main-world cost of the
/// playback systems on frames where a new cutscene frame was uploaded.
#[derive(Resource, Default)]
struct Stats {
    generating: bool,
    idle: Vec<f32>,
    busy: Vec<f32>,
    upload: Vec<f32>,
    playback_start: Option<(std::time::Instant, Option<usize>)>,
}

fn playback_begins(mut stats: ResMut<Stats>, screen: Query<&CutscenePlayer, With<Screen>>) {
    let shown = screen.single().ok().and_then(|p| p.current_frame());
    stats.playback_start = Some((std::time::Instant::now(), shown));
}

fn playback_ends(mut stats: ResMut<Stats>, screen: Query<&CutscenePlayer, With<Screen>>) {
    let shown = screen.single().ok().and_then(|p| p.current_frame());
    if let Some((t, before)) = stats.playback_start.take()
        && shown.is_some()
        && shown != before
    {
        stats.upload.push(t.elapsed().as_secs_f32() * 1000.0);
    }
}

fn measure(time: Res<Time>, mut stats: ResMut<Stats>) {
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
fn headless_script(
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
