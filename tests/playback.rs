//! Clips as assets and playback control, with `MinimalPlugins`: end modes, pause, seek, speed,
//! the players' end events, `.cutscene` files, preload and late settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::asset::{AssetPlugin, LoadState};
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_framepack::FramePackWorker;
use bevy_framepack::framepack::packing::ScheduleChoice;
use bevy_framepack::prelude::*;

const W: u32 = 4;
const H: u32 = 2;

/// Every end event, in order.
#[derive(Resource, Default, Debug, PartialEq)]
struct Ends(Vec<String>);

fn on_finished(ev: On<CutsceneFinished>, mut ends: ResMut<Ends>) {
    ends.0.push(format!("finished {}", ev.entity));
}
fn on_looped(ev: On<CutsceneLooped>, mut ends: ResMut<Ends>) {
    ends.0.push(format!("looped {} {}", ev.entity, ev.loops));
}
fn on_failed(ev: On<CutsceneFailed>, mut ends: ResMut<Ends>) {
    ends.0.push(format!("failed {}: {}", ev.entity, ev.error));
}

fn app_in(dir: Option<&std::path::Path>) -> App {
    let mut app = App::new();
    let assets = AssetPlugin {
        file_path: dir.map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| "assets".into()),
        ..default()
    };
    app.add_plugins((MinimalPlugins, assets))
        .init_asset::<Image>()
        // 0.1 s per update: 3 clip frames at 30 fps.
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(100)))
        .add_plugins(FramePackPlugin)
        .init_resource::<Ends>()
        .add_observer(on_finished)
        .add_observer(on_looped)
        .add_observer(on_failed);
    app
}

/// A complete clip of `n` frames; frame `i` is filled with the byte `i`.
fn clip(app: &mut App, n: u8) -> Handle<CutsceneClip> {
    let frames = (0..n).map(|i| Arc::from(vec![i; (W * H * 4) as usize])).collect();
    let clip = CutsceneClip::from_frames(W, H, 30.0, frames).unwrap();
    app.world_mut().resource_mut::<Assets<CutsceneClip>>().add(clip)
}

fn shown(app: &App, e: Entity) -> Option<usize> {
    app.world().get::<CutscenePlayer>(e).and_then(CutscenePlayer::current_frame)
}

fn frames_shown(app: &mut App, e: Entity, updates: usize) -> Vec<Option<usize>> {
    (0..updates)
        .map(|_| {
            app.update();
            shown(app, e)
        })
        .collect()
}

/// A player of a fresh `n`-frame clip, and the frames it shows over `updates` updates.
fn play(n: u8, playback: CutscenePlayback, updates: usize) -> (App, Entity, Vec<Option<usize>>) {
    let mut app = app_in(None);
    let clip = clip(&mut app, n);
    let e = app.world_mut().spawn((CutscenePlayer::new(clip), playback)).id();
    let got = frames_shown(&mut app, e, updates);
    (app, e, got)
}

fn ends(app: &App) -> Vec<String> {
    app.world().resource::<Ends>().0.clone()
}

#[test]
fn once_stays_on_the_last_frame_and_finishes_exactly_once() {
    // The first update makes the image and shows frame 0 (Bevy's first delta is 0); then 3
    // frames per update.
    let (mut app, e, got) = play(9, CutscenePlayback::ONCE, 6);
    assert_eq!(got, [Some(0), Some(3), Some(6), Some(8), Some(8), Some(8)]);
    assert_eq!(app.world().get::<CutscenePlayer>(e).unwrap().state(), PlaybackState::Finished);
    frames_shown(&mut app, e, 5);
    assert_eq!(ends(&app), [format!("finished {e}")]);
}

#[test]
fn loop_wraps_and_reports_each_wrap_instead_of_finishing() {
    let (app, e, got) = play(4, CutscenePlayback::LOOP, 5);
    assert_eq!(got, [Some(0), Some(3), Some(2), Some(1), Some(0)]);
    assert_eq!(ends(&app), [format!("looped {e} 1"), format!("looped {e} 2"), format!("looped {e} 3")]);
    assert_eq!(app.world().get::<CutscenePlayer>(e).unwrap().loops(), 3);
}

#[test]
fn despawn_and_remove_apply_after_the_finished_event() {
    let mut app = app_in(None);
    let clip = clip(&mut app, 3);
    let gone = app.world_mut().spawn((CutscenePlayer::new(clip.clone()), CutscenePlayback::DESPAWN)).id();
    let kept = app.world_mut().spawn((Sprite::default(), CutscenePlayer::new(clip), CutscenePlayback::REMOVE)).id();
    frames_shown(&mut app, kept, 4);
    assert!(app.world().get_entity(gone).is_err(), "Despawn keeps the entity");
    let entity = app.world().entity(kept);
    assert!(!entity.contains::<CutscenePlayer>() && !entity.contains::<CutscenePlayback>());
    assert!(entity.contains::<Sprite>(), "Remove takes only the player");
    let mut got = ends(&app);
    got.sort();
    let mut want = vec![format!("finished {gone}"), format!("finished {kept}")];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn pause_speed_and_seek_control_a_playing_cutscene() {
    let mut app = app_in(None);
    let clip = clip(&mut app, 30);
    let e = app.world_mut().spawn((CutscenePlayer::new(clip), CutscenePlayback::ONCE.paused())).id();
    assert_eq!(frames_shown(&mut app, e, 3), [Some(0), Some(0), Some(0)], "starts paused");
    app.world_mut().get_mut::<CutscenePlayback>(e).unwrap().paused = false;
    assert_eq!(frames_shown(&mut app, e, 2), [Some(3), Some(6)]);
    app.world_mut().get_mut::<CutscenePlayback>(e).unwrap().speed = 2.0;
    assert_eq!(frames_shown(&mut app, e, 1), [Some(12)]);
    app.world_mut().get_mut::<CutscenePlayer>(e).unwrap().seek(2);
    app.world_mut().get_mut::<CutscenePlayback>(e).unwrap().speed = 1.0;
    assert_eq!(frames_shown(&mut app, e, 2), [Some(5), Some(8)]);
    // Seeking a finished player plays on from there, and it finishes (once) again.
    app.world_mut().get_mut::<CutscenePlayer>(e).unwrap().seek(27);
    assert_eq!(frames_shown(&mut app, e, 3), [Some(29), Some(29), Some(29)]);
    app.world_mut().get_mut::<CutscenePlayer>(e).unwrap().seek(26);
    assert_eq!(frames_shown(&mut app, e, 2), [Some(29), Some(29)]);
    assert_eq!(ends(&app), [format!("finished {e}"), format!("finished {e}")]);
}

#[test]
fn virtual_time_pauses_with_the_game_and_real_time_does_not() {
    let mut app = app_in(None);
    let clip = clip(&mut app, 30);
    let game = app.world_mut().spawn(CutscenePlayer::new(clip.clone())).id();
    let real = app.world_mut().spawn((CutscenePlayer::new(clip), CutscenePlayback::ONCE.with_real_time())).id();
    frames_shown(&mut app, game, 2);
    app.world_mut().resource_mut::<Time<Virtual>>().pause();
    frames_shown(&mut app, game, 2);
    assert_eq!((shown(&app, game), shown(&app, real)), (Some(3), Some(9)));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bevy-framepack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_loaded<A: Asset>(app: &mut App, handle: &Handle<A>) -> LoadState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.update();
        let state = app.world().resource::<AssetServer>().load_state(handle);
        if matches!(state, LoadState::Loaded | LoadState::Failed(_)) {
            return state;
        }
        assert!(Instant::now() < deadline, "timed out loading");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        app.update();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_generated_clip_saves_and_loads_back_as_an_asset_with_identical_frames() {
    let dir = temp_dir("clips");
    let mut app = app_in(Some(&dir));
    let preset = Preset {
        prompt: "a cat walks".into(),
        seconds: 1.0,
        steps: 1,
        resolution: 32,
        schedule: ScheduleChoice::Geometric,
        ..Preset::default()
    };
    let image = RgbaImage::new(8, 8, (0..256).map(|i| i as u8).collect()).unwrap();
    let ticket = app
        .world_mut()
        .run_system_once(move |mut fp: FramePack| fp.generate(preset.request(image.clone())))
        .unwrap()
        .unwrap();
    update_until(&mut app, "the clip", |a| {
        a.world().resource::<Assets<CutsceneClip>>().get(&ticket.clip).is_some_and(CutsceneClip::is_final)
    });
    let clips = app.world().resource::<Assets<CutsceneClip>>();
    let generated = clips.get(&ticket.clip).unwrap().clone();
    assert_eq!(generated.status(), &ClipStatus::Complete);
    assert_eq!(generated.len(), ticket.total_frames);
    generated.save(dir.join("intro.cutscene")).unwrap();

    let loaded: Handle<CutsceneClip> = app.world().resource::<AssetServer>().load("intro.cutscene");
    assert!(matches!(wait_loaded(&mut app, &loaded), LoadState::Loaded));
    let clips = app.world().resource::<Assets<CutsceneClip>>();
    let back = clips.get(&loaded).unwrap();
    assert_eq!((back.width(), back.height(), back.len()), (generated.width(), generated.height(), generated.len()));
    for i in 0..generated.len() {
        assert_eq!(back.frame(i).unwrap()[..], generated.frame(i).unwrap()[..], "frame {i}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_or_truncated_clip_file_is_a_load_error_naming_it_and_the_game_keeps_running() {
    let dir = temp_dir("bad-clips");
    let mut good = bevy_framepack::framepack::clip::Clip::new(W, H, 30.0);
    good.frames = vec![vec![7; (W * H * 3) as usize]; 3];
    let bytes = good.encode().unwrap();
    std::fs::write(dir.join("truncated.cutscene"), &bytes[..bytes.len() - 5]).unwrap();
    std::fs::write(dir.join("garbage.cutscene"), b"not a clip at all").unwrap();
    let mut app = app_in(Some(&dir));
    for (name, words) in [("truncated", "truncated"), ("garbage", "not a .cutscene file")] {
        let path = format!("{name}.cutscene");
        let handle: Handle<CutsceneClip> = app.world().resource::<AssetServer>().load(path.clone());
        let e = app.world_mut().spawn((CutscenePlayer::new(handle.clone()), CutscenePlayback::DESPAWN)).id();
        let LoadState::Failed(err) = wait_loaded(&mut app, &handle) else { panic!("{name} loaded") };
        let text = err.to_string();
        assert!(text.contains(&path) && text.contains(words), "{text}");
        for _ in 0..3 {
            app.update();
        }
        let got = ends(&app);
        let last = got.last().expect("a CutsceneFailed event");
        assert!(last.starts_with(&format!("failed {e}: cannot load the clip")) && last.contains(&path), "{last}");
        assert!(app.world().get_entity(e).is_err(), "the end mode applies to a clip that cannot load");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn preload_reaches_ready_before_any_job_and_late_settings_are_refused() {
    let mut app = app_in(None);
    assert_eq!(app.world().resource::<FramePackStatus>(), &FramePackStatus::Unloaded);
    app.world_mut().run_system_once(|mut fp: FramePack| fp.preload()).unwrap().unwrap();
    assert_eq!(app.world().resource::<FramePackStatus>(), &FramePackStatus::Loading);
    update_until(&mut app, "ready", |a| a.world().resource::<FramePackStatus>() == &FramePackStatus::Ready);
    let started = app.world().resource::<FramePackWorker>().settings().cloned().expect("running");
    // A change after the start is logged and not applied.
    app.world_mut().resource_mut::<FramePackSettings>().response_capacity = 3;
    app.update();
    assert_eq!(app.world().resource::<FramePackWorker>().settings(), Some(&started));
    app.world_mut().write_message(AppExit::Success);
    app.update();
    assert_eq!(app.world().resource::<FramePackStatus>(), &FramePackStatus::Unloaded);
}

#[test]
fn a_model_that_cannot_load_is_a_failed_status() {
    let mut app = app_in(None);
    app.insert_resource(FramePackSettings::from_dir("/nonexistent/framepack-bundle"));
    app.world_mut().run_system_once(|mut fp: FramePack| fp.preload()).unwrap().unwrap();
    update_until(&mut app, "failure", |a| {
        matches!(a.world().resource::<FramePackStatus>(), FramePackStatus::Failed(_))
    });
    let FramePackStatus::Failed(e) = app.world().resource::<FramePackStatus>() else { unreachable!() };
    assert!(e.to_string().contains("cannot load the model"), "{e}");
}

#[test]
fn the_shipped_clip_plays_with_no_model_loaded() {
    let mut app = app_in(None);
    let clip: Handle<CutsceneClip> = app.world().resource::<AssetServer>().load("cutscenes/ball.cutscene");
    let e = app.world_mut().spawn((CutscenePlayer::new(clip.clone()), CutscenePlayback::ONCE)).id();
    assert!(matches!(wait_loaded(&mut app, &clip), LoadState::Loaded));
    let loaded = app.world().resource::<Assets<CutsceneClip>>().get(&clip).unwrap();
    assert_eq!((loaded.width(), loaded.height(), loaded.len()), (128, 96, 73));
    update_until(&mut app, "the end", |a| {
        a.world().get::<CutscenePlayer>(e).unwrap().state() == PlaybackState::Finished
    });
    assert_eq!(shown(&app, e), Some(72));
    assert_eq!(app.world().resource::<FramePackStatus>(), &FramePackStatus::Unloaded);
    assert!(!app.world().resource::<FramePackWorker>().is_running());
}

#[derive(Resource, Default)]
struct Messages(Vec<GenerationEvent>);

fn record(mut log: ResMut<Messages>, mut events: MessageReader<GenerationEvent>) {
    log.0.extend(events.read().cloned());
}

fn cache_app(dir: &std::path::Path) -> App {
    let mut app = app_in(None);
    app.insert_resource(FramePackSettings::default().with_cache(dir).with_threads(1))
        .init_resource::<Messages>()
        .add_systems(Update, record);
    app
}

/// Generates (or replays) one small request and waits for its clip.
fn cached_run(app: &mut App) -> (JobTicket, CutsceneClip) {
    let preset =
        Preset { prompt: "a ball bounces".into(), seconds: 1.0, steps: 1, resolution: 32, ..Preset::default() };
    let image = RgbaImage::new(8, 8, (0..256).map(|i| (i * 3) as u8).collect()).unwrap();
    let ticket = app
        .world_mut()
        .run_system_once(move |mut fp: FramePack| fp.generate(preset.request(image.clone())))
        .unwrap()
        .unwrap();
    update_until(app, "the clip", |a| {
        a.world().resource::<Assets<CutsceneClip>>().get(&ticket.clip).is_some_and(CutsceneClip::is_final)
    });
    let clip = app.world().resource::<Assets<CutsceneClip>>().get(&ticket.clip).unwrap().clone();
    (ticket, clip)
}

fn same_frames(a: &CutsceneClip, b: &CutsceneClip) -> bool {
    a.len() == b.len() && (0..a.len()).all(|i| a.frame(i).unwrap()[..] == b.frame(i).unwrap()[..])
}

#[test]
fn the_cache_replays_a_request_seen_before_without_the_model() {
    let dir = temp_dir("cache");
    let mut first = cache_app(&dir);
    let (ticket, generated) = cached_run(&mut first);
    assert_eq!(generated.status(), &ClipStatus::Complete);
    let file = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "cutscene"))
    };
    update_until(&mut first, "the cache file", |_| file().is_some());
    drop(first);

    let mut second = cache_app(&dir);
    let (replay, clip) = cached_run(&mut second);
    assert!(same_frames(&clip, &generated), "the cached clip has other frames");
    assert_eq!((replay.width, replay.height, replay.total_frames), (ticket.width, ticket.height, ticket.total_frames));
    assert!(!second.world().resource::<FramePackWorker>().is_running(), "a cache hit started the model");
    second.update();
    let log = &second.world().resource::<Messages>().0;
    assert!(
        matches!(log[..], [GenerationEvent::Started { .. }, GenerationEvent::Finished { job }] if job == replay.id),
        "{log:?}"
    );

    // An unreadable cache file is generated again (and the frames are the same: the CPU path is
    // deterministic).
    std::fs::write(file().unwrap(), b"garbage").unwrap();
    let mut third = cache_app(&dir);
    let (_, again) = cached_run(&mut third);
    assert!(third.world().resource::<FramePackWorker>().is_running());
    assert!(same_frames(&again, &generated));
    let _ = std::fs::remove_dir_all(&dir);
}
