//! `ModelSource::Remote` with `MinimalPlugins`: jobs go to an in-process worker
//! (`framepack_remote::WorkerThread`) through a throwaway `nats-server -js` on 127.0.0.1, and
//! come back as the same messages and clips as local jobs.

use std::time::{Duration, Instant};

use bevy::asset::AssetPlugin;
use bevy::ecs::system::RunSystemOnce;
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_framepack::framepack::packing::ScheduleChoice;
use bevy_framepack::framepack::pipeline::Pipeline;
use bevy_framepack::framepack_remote::testing::NatsServer;
use bevy_framepack::framepack_remote::{RemoteOptions, WorkerOptions, WorkerThread};
use bevy_framepack::prelude::*;

#[derive(Resource, Default)]
struct Log(Vec<GenerationEvent>);

fn collect(mut log: ResMut<Log>, mut events: MessageReader<GenerationEvent>) {
    log.0.extend(events.read().cloned());
}

fn app(settings: FramePackSettings) -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, AssetPlugin::default()))
        .init_asset::<Image>()
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_secs_f64(1.0 / 30.0)))
        .add_plugins(FramePackPlugin)
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

fn preset(seconds: f64, steps: usize) -> Preset {
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

fn generate(app: &mut App, preset: Preset) -> JobTicket {
    app.world_mut().run_system_once(move |mut fp: FramePack| fp.generate(preset.request(image()))).unwrap().unwrap()
}

fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&Log) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(app.world().resource::<Log>()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", app.world().resource::<Log>().0);
        app.update();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn nano_worker(url: &str) -> WorkerThread {
    let opts = WorkerOptions { remote: RemoteOptions::new(url), name: "in-process".into(), ..WorkerOptions::default() };
    WorkerThread::spawn(
        opts,
        Box::new(|| {
            let d = candle_core::Device::Cpu;
            Pipeline::load(&framepack_nano::bundle(), &d, candle_core::DType::F32)
        }),
    )
    .unwrap()
}

#[test]
fn remote_jobs_give_the_same_messages_and_clip_frames_as_local_ones() {
    let server = NatsServer::start().unwrap();
    let _worker = nano_worker(&server.url());
    let mut remote = app(FramePackSettings::remote(server.url()));
    let ticket = generate(&mut remote, preset(2.4, 2));
    update_until(&mut remote, "the remote job", |l| l.0.iter().any(GenerationEvent::is_end));
    let mut local = app(FramePackSettings::default());
    let local_ticket = generate(&mut local, preset(2.4, 2));
    update_until(&mut local, "the local job", |l| l.0.iter().any(GenerationEvent::is_end));
    // Progress may be dropped when the game lags; everything else is the same, in order.
    let skeleton = |app: &App| -> Vec<GenerationEvent> {
        app.world()
            .resource::<Log>()
            .0
            .iter()
            .filter(|e| !matches!(e, GenerationEvent::Progress { .. }))
            .cloned()
            .map(|mut e| {
                match &mut e {
                    GenerationEvent::Started { job, .. }
                    | GenerationEvent::Section { job, .. }
                    | GenerationEvent::Finished { job }
                    | GenerationEvent::Failed { job, .. }
                    | GenerationEvent::Cancelled { job }
                    | GenerationEvent::Progress { job, .. } => *job = JobId(0),
                }
                e
            })
            .collect()
    };
    let events = skeleton(&remote);
    assert_eq!(events, skeleton(&local));
    assert!(matches!(events.last(), Some(GenerationEvent::Finished { .. })), "{events:?}");
    assert_eq!(events.iter().filter(|e| matches!(e, GenerationEvent::Section { .. })).count(), 2);
    let clips = remote.world().resource::<Assets<CutsceneClip>>();
    let local_clips = local.world().resource::<Assets<CutsceneClip>>();
    let (r, l) = (clips.get(&ticket.clip).unwrap(), local_clips.get(&local_ticket.clip).unwrap());
    assert_eq!(r.status(), &ClipStatus::Complete);
    assert_eq!((r.len(), r.available()), (l.len(), l.len()));
    for i in 0..l.len() {
        assert!(r.frame(i) == l.frame(i), "frame {i} differs");
    }
}

#[test]
fn cancel_reaches_the_remote_worker() {
    let server = NatsServer::start().unwrap();
    let _worker = nano_worker(&server.url());
    let mut app = app(FramePackSettings::remote(server.url()));
    let ticket = generate(&mut app, preset(6.0, 30));
    update_until(&mut app, "the first step", |l| l.0.iter().any(|e| matches!(e, GenerationEvent::Progress { .. })));
    app.world_mut().run_system_once(move |mut fp: FramePack| fp.cancel(ticket.id)).unwrap();
    update_until(&mut app, "the cancel", |l| l.0.iter().any(GenerationEvent::is_end));
    let log = &app.world().resource::<Log>().0;
    assert_eq!(log.last(), Some(&GenerationEvent::Cancelled { job: ticket.id }));
    let clip = app.world().resource::<Assets<CutsceneClip>>().get(&ticket.clip).unwrap();
    assert_eq!(clip.status(), &ClipStatus::Cancelled);
}

#[test]
fn an_unreachable_server_fails_the_job_and_the_game_keeps_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut app = app(FramePackSettings::remote(url.clone()));
    let ticket = generate(&mut app, preset(1.2, 2));
    update_until(&mut app, "the failure", |l| l.0.iter().any(GenerationEvent::is_end));
    let log = &app.world().resource::<Log>().0;
    let Some(GenerationEvent::Failed { job, error }) = log.last() else { panic!("{log:?}") };
    assert_eq!(*job, ticket.id);
    assert!(matches!(error, GenerationError::Remote(_)), "{error:?}");
    assert!(error.to_string().contains(&format!("cannot reach the NATS server at {url}")), "{error}");
    assert!(matches!(app.world().resource::<FramePackStatus>(), FramePackStatus::Failed(_)));
    for _ in 0..10 {
        app.update();
    }
    // The next job tries to connect again and fails the same way.
    let again = generate(&mut app, preset(1.2, 2));
    update_until(&mut app, "the second failure", |l| {
        l.0.iter().any(|e| matches!(e, GenerationEvent::Failed { job, .. } if *job == again.id))
    });
}
