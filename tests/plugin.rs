//! `MinimalPlugins` integration tests with the embedded nano model (no GPU, no window).

use std::time::{Duration, Instant};

use bevy::asset::{AssetPlugin, LoadState};
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_framepack::framepack::models::transformer::{MemoryPlan, Residency};
use bevy_framepack::framepack::packing::ScheduleChoice;
use bevy_framepack::prelude::*;
use bevy_framepack::{FramePackError, FramePackWorker};

/// `GenerationEvent::Started`'s fields.
#[derive(Debug)]
struct Started {
    total_frames: usize,
    width: u32,
    height: u32,
}

/// `GenerationEvent::Section`'s fields.
#[derive(Debug)]
struct Section {
    index: usize,
    total: usize,
    frames: std::ops::Range<usize>,
}

#[derive(Debug)]
struct Failed {
    job: JobId,
    error: String,
}

#[derive(Resource, Default, Debug)]
struct Log {
    started: Vec<Started>,
    sections: Vec<Section>,
    progress: usize,
    finished: Vec<JobId>,
    failed: Vec<Failed>,
    cancelled: Vec<JobId>,
    /// Every job's events in order, to check that each ends exactly once, last.
    order: Vec<GenerationEvent>,
}

fn collect(mut log: ResMut<Log>, mut events: MessageReader<GenerationEvent>) {
    for ev in events.read() {
        log.order.push(ev.clone());
        match ev.clone() {
            GenerationEvent::Started { total_frames, width, height, .. } => {
                log.started.push(Started { total_frames, width, height })
            }
            GenerationEvent::Section { index, sections, frames, .. } => {
                log.sections.push(Section { index, total: sections, frames })
            }
            GenerationEvent::Progress { .. } => log.progress += 1,
            GenerationEvent::Finished { job } => log.finished.push(job),
            GenerationEvent::Failed { job, error } => log.failed.push(Failed { job, error: error.to_string() }),
            GenerationEvent::Cancelled { job } => log.cancelled.push(job),
        }
    }
}

/// Each job's events end with exactly one end event, and nothing follows it.
fn assert_each_job_ends_once(log: &Log) {
    let mut ended = std::collections::HashSet::new();
    for ev in &log.order {
        assert!(!ended.contains(&ev.job()), "{ev:?} after the end of its job");
        if ev.is_end() {
            ended.insert(ev.job());
        }
    }
}

fn app(settings: FramePackSettings) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, AssetPlugin::default()))
        .init_asset::<Image>()
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_secs_f64(1.0 / 30.0)))
        .add_plugins(FramePackPlugin)
        // Inserted after the plugin: the worker reads it when it starts.
        .insert_resource(settings)
        .init_resource::<Log>()
        .add_systems(Update, collect);
    app
}

fn image() -> RgbaImage {
    let (w, h) = (64u32, 64u32);
    let px = (0..w * h).flat_map(|i| [(i % w * 4) as u8, (i / w * 4) as u8, 128, 255]).collect();
    RgbaImage::new(w, h, px).unwrap()
}

fn nano_preset(seconds: f64, steps: usize) -> Preset {
    Preset {
        prompt: "a cat walks".into(),
        seconds,
        steps,
        schedule: ScheduleChoice::Geometric,
        resolution: 32,
        playback: BufferPolicy::Pause,
        ..Preset::default()
    }
}

fn generate(app: &mut App, preset: Preset) -> Result<JobTicket, FramePackError> {
    app.world_mut().run_system_once(move |mut fp: FramePack| fp.generate(preset.request(image()))).unwrap()
}

fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", app.world().resource::<Log>());
        app.update();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn round_trip_streams_sections_into_a_player() {
    let mut app = app(FramePackSettings::default());
    let preset = nano_preset(2.5, 2);
    let ticket = generate(&mut app, preset.clone()).unwrap();
    assert_eq!((ticket.width, ticket.height), (32, 32));
    assert!(ticket.sections >= 2);
    let player = app.world_mut().spawn((CutscenePlayer::new(ticket.clip.clone()), preset.playback_settings())).id();
    let second = app.world_mut().spawn((CutscenePlayer::new(ticket.clip.clone()), preset.playback_settings())).id();
    update_until(&mut app, "finish", |a| !a.world().resource::<Log>().finished.is_empty());
    {
        // Two players of one job play the one clip: its frames are not copied per player.
        let (a, b) =
            (app.world().get::<CutscenePlayer>(player).unwrap(), app.world().get::<CutscenePlayer>(second).unwrap());
        assert_eq!(a.clip(), b.clip());
        let clip = app.world().resource::<Assets<CutsceneClip>>().get(a.clip()).unwrap();
        assert_eq!(clip.status(), &ClipStatus::Complete);
        for i in 0..ticket.total_frames {
            assert_eq!(clip.frame(i).unwrap().len(), 32 * 32 * 4);
        }
        assert_eq!(clip.available(), ticket.total_frames);
    }
    {
        let log = app.world().resource::<Log>();
        assert_eq!(log.finished, [ticket.id]);
        assert!(log.failed.is_empty(), "{:?}", log.failed);
        assert_eq!(log.started.len(), 1);
        assert_eq!(log.started[0].total_frames, ticket.total_frames);
        assert_eq!((log.started[0].width, log.started[0].height), (32, 32));
        assert!(log.progress > 0);
        let idx: Vec<_> = log.sections.iter().map(|s| (s.index, s.total)).collect();
        let want: Vec<_> = (0..ticket.sections).map(|i| (i, ticket.sections)).collect();
        assert_eq!(idx, want);
        assert_eq!(log.sections.last().unwrap().frames.end, ticket.total_frames);
        assert_each_job_ends_once(log);
    }
    let p = app.world().get::<CutscenePlayer>(player).unwrap();
    assert!(p.current_frame().is_some());
    let handle = p.image().unwrap().clone();
    let img = app.world().resource::<Assets<Image>>().get(&handle).unwrap();
    assert_eq!(img.texture_descriptor.size.width, 32);
    // The frame went to the render world (RENDER_WORLD only) or is waiting for it.
    assert_eq!(img.data.as_ref().map(Vec::len).unwrap_or(32 * 32 * 4), 32 * 32 * 4);
    app.world_mut().write_message(AppExit::Success);
    app.update();
    assert!(!app.world().resource::<FramePackWorker>().is_running());
}

#[test]
fn playback_follows_the_preset_fps_and_never_skips_with_pause() {
    let mut app = app(FramePackSettings::default());
    let preset = nano_preset(2.5, 2);
    let ticket = generate(&mut app, preset.clone()).unwrap();
    let player = app.world_mut().spawn(CutscenePlayer::new(ticket.clip.clone())).id();
    let mut shown = Vec::new();
    update_until(&mut app, "playback to finish", |a| {
        let p = a.world().get::<CutscenePlayer>(player).unwrap();
        shown.push(p.current_frame());
        p.state() == PlaybackState::Finished
    });
    let frames: Vec<usize> = shown.into_iter().flatten().collect();
    assert_eq!(frames.first(), Some(&0));
    assert_eq!(frames.last(), Some(&(ticket.total_frames - 1)));
    // One frame per 1/30 s update at 30 fps: consecutive or repeated (buffering), never skipped.
    assert!(frames.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "{frames:?}");
    let mut distinct = frames.clone();
    distinct.dedup();
    assert_eq!(distinct, (0..ticket.total_frames).collect::<Vec<_>>());
}

#[test]
fn cancel_running_and_queued_jobs() {
    let mut app = app(FramePackSettings::default());
    let a = generate(&mut app, nano_preset(20.0, 4)).unwrap();
    let b = generate(&mut app, nano_preset(1.0, 1)).unwrap();
    assert_ne!(a.id, b.id);
    update_until(&mut app, "first section", |a| !a.world().resource::<Log>().sections.is_empty());
    app.world_mut()
        .run_system_once(move |mut fp: FramePack| {
            fp.cancel(b.id);
            fp.cancel(a.id);
        })
        .unwrap();
    update_until(&mut app, "both cancelled", |a| a.world().resource::<Log>().cancelled.len() == 2);
    let log = app.world().resource::<Log>();
    assert_eq!(log.cancelled, [a.id, b.id]);
    assert!(log.finished.is_empty() && log.failed.is_empty());
    assert!(log.sections.len() < a.sections);
    assert_each_job_ends_once(log);
    // The worker is still there for the next job.
    let c = generate(&mut app, nano_preset(1.0, 1)).unwrap();
    update_until(&mut app, "next job", |a| a.world().resource::<Log>().finished.contains(&c.id));
}

#[test]
fn exit_during_generation_stops_the_worker_quickly() {
    let mut app = app(FramePackSettings::default());
    generate(&mut app, nano_preset(30.0, 8)).unwrap();
    update_until(&mut app, "generation to start", |a| a.world().resource::<Log>().progress > 0);
    let t = Instant::now();
    app.world_mut().write_message(AppExit::Success);
    app.update();
    assert!(!app.world().resource::<FramePackWorker>().is_running());
    assert!(t.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t.elapsed());
    let refused = generate(&mut app, nano_preset(1.0, 1));
    assert!(matches!(refused, Err(FramePackError::WorkerUnavailable(_))), "{refused:?}");
}

#[test]
fn dropping_the_app_mid_generation_does_not_hang() {
    let mut app = app(FramePackSettings::default().with_response_capacity(1));
    generate(&mut app, nano_preset(30.0, 8)).unwrap();
    update_until(&mut app, "generation to start", |a| a.world().resource::<Log>().progress > 0);
    // Stop draining: the bounded channel fills up and the worker waits on it.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    drop(app);
    assert!(t.elapsed() < Duration::from_secs(10), "drop took {:?}", t.elapsed());
}

#[test]
fn failures_become_messages_and_the_game_keeps_running() {
    let mut app = app(FramePackSettings::from_dir("/nonexistent/framepack-bundle"));
    let job = generate(&mut app, nano_preset(1.0, 1)).unwrap();
    update_until(&mut app, "failure", |a| !a.world().resource::<Log>().failed.is_empty());
    let log = app.world().resource::<Log>();
    assert_eq!(log.failed[0].job, job.id);
    assert!(log.failed[0].error.contains("cannot load the model"), "{}", log.failed[0].error);
    for _ in 0..3 {
        app.update();
    }
    // Bad requests are refused up front with a clear error.
    let mut bad = nano_preset(1.0, 1);
    bad.steps = 0;
    let e = generate(&mut app, bad).unwrap_err();
    assert!(e.to_string().contains("steps"), "{e}");
    let e = app.world_mut().run_system_once(|| RgbaImage::new(4, 4, vec![0; 3])).unwrap().unwrap_err();
    assert!(e.to_string().contains("needs 64 bytes"), "{e}");
}

#[test]
fn low_vram_budget_streams_the_nano_model_or_explains_why_not() {
    let mut tiny = app(FramePackSettings::default().with_low_vram_budget(1));
    generate(&mut tiny, nano_preset(1.0, 1)).unwrap();
    update_until(&mut tiny, "a failure for a 1-byte budget", |a| !a.world().resource::<Log>().failed.is_empty());
    let error = &tiny.world().resource::<Log>().failed[0].error;
    assert!(error.contains("memory budget"), "{error}");

    // The smallest budget that works streams every block of the nano transformer.
    let cfg = framepack_train::dit::nano_transformer_config();
    let plan = MemoryPlan::new(&cfg, candle_core::DType::F32, Residency::Resident).unwrap();
    let minimum = plan.fixed_bytes + 2 * plan.block_bytes.iter().max().unwrap();
    let mut streamed = app(FramePackSettings::default().with_low_vram_budget(minimum));
    let job = generate(&mut streamed, nano_preset(1.0, 1)).unwrap();
    update_until(&mut streamed, "finish", |a| !a.world().resource::<Log>().finished.is_empty());
    assert_eq!(streamed.world().resource::<Log>().finished, [job.id]);
}

fn asset_app(dir: &std::path::Path) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin { file_path: dir.to_string_lossy().into_owned(), ..default() },
        FramePackPlugin,
    ));
    app
}

#[test]
fn presets_load_as_assets_and_malformed_ones_report_line_and_column() {
    let dir = std::env::temp_dir().join(format!("bevy_framepack_presets_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ok.preset.ron"), "(name: \"ok\", prompt: \"a cat\", seconds: 1.0, playback: Loop)")
        .unwrap();
    std::fs::write(dir.join("bad.preset.ron"), "(\n  name: \"bad\",\n  seconds: \"long\",\n)").unwrap();
    let mut app = asset_app(&dir);
    let server = app.world().resource::<AssetServer>().clone();
    let ok: Handle<Preset> = server.load("ok.preset.ron");
    let bad: Handle<Preset> = server.load("bad.preset.ron");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        app.update();
        let done = |h: &Handle<Preset>| matches!(server.load_state(h), LoadState::Loaded | LoadState::Failed(_));
        if done(&ok) && done(&bad) {
            break;
        }
        assert!(Instant::now() < deadline, "timed out loading presets");
        std::thread::sleep(Duration::from_millis(5));
    }
    let presets = app.world().resource::<Assets<Preset>>();
    let p = presets.get(&ok).unwrap();
    assert_eq!((p.name.as_str(), p.seconds, p.playback), ("ok", 1.0, BufferPolicy::Loop));
    let LoadState::Failed(e) = server.load_state(&bad) else { panic!("bad preset loaded") };
    let text = e.to_string();
    assert!(text.contains("bad.preset.ron:3:"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_edited_preset_reloads_in_place() {
    // The `hot` feature's file watcher calls `AssetServer::reload` on change; this drives the
    // same path by hand, so it runs without the watcher.
    let dir = std::env::temp_dir().join(format!("bevy_framepack_reload_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scene.preset.ron");
    std::fs::write(&file, "(prompt: \"a cat\", steps: 4)").unwrap();
    let mut app = asset_app(&dir);
    let server = app.world().resource::<AssetServer>().clone();
    let handle: Handle<Preset> = server.load("scene.preset.ron");
    let steps = |a: &App| a.world().resource::<Assets<Preset>>().get(&handle).map(|p| p.steps);
    let deadline = Instant::now() + Duration::from_secs(20);
    while steps(&app) != Some(4) {
        assert!(Instant::now() < deadline, "timed out loading the preset");
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&file, "(prompt: \"a dog\", steps: 9)").unwrap();
    server.reload("scene.preset.ron");
    while steps(&app) != Some(9) {
        assert!(Instant::now() < deadline, "timed out reloading the preset");
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(app.world().resource::<Assets<Preset>>().get(&handle).unwrap().prompt, "a dog");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn presets_with_an_end_image_load_it_and_generate_towards_it() {
    let dir = std::env::temp_dir().join(format!("bevy_framepack_end_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/presets/door_end.png");
    std::fs::copy(shipped, dir.join("end.png")).unwrap();
    let preset = |schedule: &str, image: &str| {
        format!(
            "(prompt: \"a door\", seconds: 1.0, steps: 1, resolution: 32, schedule: {schedule}, end_image: Some(\"{image}\"))"
        )
    };
    std::fs::write(dir.join("end.preset.ron"), preset("InvertedAntiDrifting", "end.png")).unwrap();
    std::fs::write(dir.join("geometric.preset.ron"), preset("Geometric", "end.png")).unwrap();
    std::fs::write(dir.join("missing.preset.ron"), preset("Symmetric", "nope.png")).unwrap();
    let mut app = asset_app(&dir);
    app.insert_resource(FramePackSettings::default()).init_resource::<Log>().add_systems(Update, collect);
    let server = app.world().resource::<AssetServer>().clone();
    let handles: Vec<Handle<Preset>> =
        ["end", "geometric", "missing"].iter().map(|n| server.load(format!("{n}.preset.ron"))).collect();
    update_until(&mut app, "the presets", |a| {
        let server = a.world().resource::<AssetServer>();
        handles.iter().all(|h| matches!(server.load_state(h), LoadState::Loaded | LoadState::Failed(_)))
    });
    let end = app.world().resource::<Assets<Preset>>().get(&handles[0]).expect("loaded").clone();
    let pixels = end.end_pixels.as_ref().expect("the loader reads the end image");
    assert_eq!((pixels.width(), pixels.height()), (96, 96));
    for (h, words) in [(&handles[1], "no context after the window"), (&handles[2], "nope.png")] {
        let LoadState::Failed(e) = server.load_state(h) else { panic!("loaded despite {words}") };
        assert!(e.to_string().contains(words), "{e}");
    }
    let job = generate(&mut app, end).unwrap();
    update_until(&mut app, "finish", |a| !a.world().resource::<Log>().finished.is_empty());
    assert_eq!(app.world().resource::<Log>().finished, [job.id]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_player_is_shown_by_the_sprite_ui_image_and_material_on_its_entity() {
    let mut app = app(FramePackSettings::default());
    app.init_asset::<StandardMaterial>();
    let ticket = generate(&mut app, nano_preset(1.0, 1)).unwrap();
    let material = app.world_mut().resource_mut::<Assets<StandardMaterial>>().add(StandardMaterial::default());
    let e = app.world_mut().spawn((Sprite::default(), ImageNode::default(), MeshMaterial3d(material.clone()))).id();
    app.update();
    app.world_mut()
        .entity_mut(e)
        .insert((CutscenePlayer::new(ticket.clip), CutscenePlayback::ONCE.with_buffer(BufferPolicy::Hold)));
    app.update();
    let handle = app.world().get::<CutscenePlayer>(e).unwrap().image().expect("the clip's size is known").clone();
    assert_eq!(app.world().get::<Sprite>(e).unwrap().image, handle);
    assert_eq!(app.world().get::<ImageNode>(e).unwrap().image, handle);
    let m = app.world().resource::<Assets<StandardMaterial>>().get(&material).unwrap();
    assert_eq!(m.base_color_texture.as_ref(), Some(&handle));
}

#[derive(Resource, Default)]
struct CaptureLog(Vec<CaptureFailed>);

#[test]
fn capturing_something_that_is_not_a_camera_reports_capture_failed() {
    let mut app = app(FramePackSettings::default());
    app.init_resource::<CaptureLog>();
    let not_a_camera = app.world_mut().spawn_empty().id();
    // The failure is an event on the player entity.
    let player = app
        .world_mut()
        .spawn_empty()
        .observe(|ev: On<CaptureFailed>, mut log: ResMut<CaptureLog>| log.0.push(ev.event().clone()))
        .id();
    app.world_mut().trigger(CaptureCutscene {
        entity: player,
        source: CaptureSource::Camera(not_a_camera),
        preset: Handle::default(),
    });
    app.update();
    let log = &app.world().resource::<CaptureLog>().0;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entity, player);
    assert!(log[0].error.contains("is not a camera"), "{}", log[0].error);
}

#[test]
fn previews_stand_in_on_the_player_until_frames_arrive() {
    let dir = std::env::temp_dir().join(format!("bevy-framepack-previews-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    framepack_train::testing::write_tiny_bundle(&dir, 3).unwrap();
    let mut app = app(FramePackSettings::from_dir(&dir));
    // Inverted: frame 0 only exists after the last section, so the player waits the whole job.
    let preset = Preset {
        schedule: ScheduleChoice::InvertedAntiDrifting,
        decoder: DecoderChoice::Tiny,
        previews: true,
        ..nano_preset(2.4, 3)
    };
    let ticket = generate(&mut app, preset.clone()).unwrap();
    let player = app.world_mut().spawn((CutscenePlayer::new(ticket.clip.clone()), preset.playback_settings())).id();
    let mut saw_preview = false;
    update_until(&mut app, "finish", |a| {
        let p = a.world().get::<CutscenePlayer>(player).unwrap();
        if p.showing_preview() {
            let clip = a.world().resource::<Assets<CutsceneClip>>().get(p.clip()).unwrap();
            assert_eq!(clip.available(), 0, "previews only while nothing can play");
            saw_preview = true;
        }
        !a.world().resource::<Log>().finished.is_empty()
    });
    assert!(saw_preview, "no preview reached the player");
    assert!(app.world().resource::<Log>().failed.is_empty());
    for _ in 0..3 {
        app.update();
    }
    let p = app.world().get::<CutscenePlayer>(player).unwrap();
    assert!(!p.showing_preview() && p.current_frame().is_some(), "real frames replace the preview");
    let _ = std::fs::remove_dir_all(&dir);
}
