//! Rendering test (feature `render_tests`; runs under lavapipe with no GPU): capture a camera,
//! generate with the nano model, and check that the cutscene shows up on a sprite.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy::camera::RenderTarget;
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::render::gpu_readback::{Readback, ReadbackComplete};
use bevy::render::render_resource::{TextureFormat, TextureUsages};
use bevy::window::ExitCondition;
use bevy::winit::WinitPlugin;
use bevy_framepack::framepack::packing::Schedule;
use bevy_framepack::prelude::*;

const SIZE: u32 = 64;

fn distinct_colors(rgba: &[u8]) -> usize {
    let mut c: Vec<[u8; 4]> = rgba.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect();
    c.sort_unstable();
    c.dedup();
    c.len()
}

#[test]
fn captured_frame_becomes_a_cutscene_on_a_sprite() {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin { primary_window: None, exit_condition: ExitCondition::DontExit, ..default() })
            .set(RenderPlugin { synchronous_pipeline_compilation: true, ..default() })
            .disable::<WinitPlugin>(),
    )
    .add_plugins(FramePackPlugin);
    app.finish();
    app.cleanup();

    let world = app.world_mut();
    let mut target = Image::new_target_texture(SIZE, SIZE, TextureFormat::Rgba8UnormSrgb, None);
    target.texture_descriptor.usage |= TextureUsages::COPY_SRC;
    let target = world.resource_mut::<Assets<Image>>().add(target);
    let preset = world.resource_mut::<Assets<Preset>>().add(Preset {
        prompt: "a cat walks".into(),
        seconds: 1.0,
        steps: 2,
        schedule: Schedule::Geometric,
        resolution: SIZE as usize,
        playback: BufferPolicy::Pause,
        ..default()
    });
    let camera = world
        .spawn((
            Camera2d,
            Camera { clear_color: ClearColorConfig::Custom(Color::srgb(0.2, 0.4, 0.8)), ..default() },
            RenderTarget::from(target.clone()),
        ))
        .id();
    let screen =
        world.spawn(Sprite { custom_size: Some(Vec2::splat(SIZE as f32)), color: Color::WHITE, ..default() }).id();
    let latest: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let sink = latest.clone();
    world
        .spawn(Readback::texture(target.clone()))
        .observe(move |ev: On<ReadbackComplete>| *sink.lock().unwrap() = Some(ev.data.clone()));

    // Let the scene render once, then capture the camera.
    for _ in 0..3 {
        app.update();
    }
    let before = latest.lock().unwrap().clone().expect("a readback of the scene");
    assert!(distinct_colors(&before) <= 2, "the scene is a white sprite on blue");
    app.world_mut().trigger(CaptureCutscene { source: CaptureSource::Camera(camera), preset, player: screen });

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut shown = None;
    while Instant::now() < deadline {
        app.update();
        let state = app.world().get::<CutscenePlayer>(screen).map(|p| (p.state(), p.current_frame()));
        if let Some((_, Some(frame))) = state
            && frame >= 3
        {
            // A few updates more so the uploaded frame reaches the readback.
            for _ in 0..4 {
                app.update();
            }
            shown = latest.lock().unwrap().clone();
            break;
        }
    }
    let shown = shown.expect("the cutscene never played");
    assert_eq!(shown.len(), (SIZE * SIZE * 4) as usize);
    // The nano model's frames are noise: many colors where the scene had two.
    assert!(distinct_colors(&shown) > 32, "cutscene frame looks blank ({} colors)", distinct_colors(&shown));
    let sprite = app.world().get::<Sprite>(screen).unwrap();
    assert_eq!(&sprite.image, app.world().get::<CutscenePlayer>(screen).unwrap().image());
}
