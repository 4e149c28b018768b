//! Remote generation over NATS JetStream, loopback only: every test starts its own
//! `nats-server -js` on a free 127.0.0.1 port (`framepack_remote::testing`) and `framepack
//! worker` processes, and stops them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use framepack::JobSettings;
use framepack::packing::ScheduleChoice;
use framepack::pipeline::{Pipeline, Request};
use framepack::preprocess::RgbImage;
use framepack_remote::testing::NatsServer;
use framepack_remote::{Client, Credentials, FailureKind, JobEvent, RemoteError, RemoteOptions};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-remote-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_bundle(name: &str) -> PathBuf {
    let weights = temp_dir(name).join("weights");
    framepack_train::testing::write_tiny_bundle(&weights, 5).unwrap();
    weights
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A `framepack worker` process, killed on drop.
struct Worker {
    child: Child,
    name: String,
}

impl Worker {
    /// Starts a worker and waits until it listens for jobs.
    fn start(url: &str, model: &[&str], name: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_framepack"))
            .args(["worker", "--nats", url, "--name", name, "--ack-wait", "2"])
            .args(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ready for jobs") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("worker {name} did not become ready"));
        Self { child, name: name.to_string() }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image(w: usize, h: usize) -> RgbImage {
    RgbImage::new(w, h, (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect()).unwrap()
}

fn request(steps: usize, seconds: f64, resolution: usize) -> Request {
    Request {
        image: image(96, 80),
        end_image: None,
        prompt: "a ball bounces".into(),
        resolution,
        settings: JobSettings { steps, seconds, schedule: ScheduleChoice::Geometric, ..JobSettings::default() },
    }
}

/// Everything a job delivered, in arrival order.
#[derive(Default, Debug)]
struct Outcome {
    events: Vec<JobEvent>,
    frames: Vec<(usize, Vec<u8>)>,
    error: Option<RemoteError>,
}

impl Outcome {
    fn end(&self) -> Option<&JobEvent> {
        self.events.last().filter(|e| e.is_end())
    }
    fn workers(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Started { worker, .. } | JobEvent::Restarted { worker, .. } => Some(worker.clone()),
                _ => None,
            })
            .collect()
    }
    fn sorted_frames(&self) -> Vec<Vec<u8>> {
        let mut f = self.frames.clone();
        f.sort_by_key(|(i, _)| *i);
        f.into_iter().map(|(_, rgb)| rgb).collect()
    }
}

/// Follows `job` to its end (or an error), calling `on` for every event; fails after `limit`.
async fn follow(client: &Client, job: &str, limit: Duration, mut on: impl FnMut(&JobEvent)) -> Outcome {
    let mut events = client.events(job).await.unwrap();
    let mut out = Outcome::default();
    let deadline = Instant::now() + limit;
    loop {
        let next = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), events.next()).await;
        match next.unwrap_or_else(|_| panic!("job {job} did not end within {limit:?}: {:?}", out.events.last())) {
            None => break,
            Some(Err(e)) => {
                out.error = Some(e);
                break;
            }
            Some(Ok(ev)) => {
                on(&ev);
                if let JobEvent::Frame { index, frame } = &ev {
                    out.frames.push((*index, frame.rgb.clone()));
                    out.events.push(JobEvent::Frame { index: *index, frame: frame.clone() });
                } else {
                    out.events.push(ev);
                }
            }
        }
    }
    out
}

fn local_frames(paths: &framepack::bundle::BundlePaths, req: &Request) -> Vec<Vec<u8>> {
    let mut p = Pipeline::load(paths, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    let job = p.start(req).unwrap();
    job.flat_map(|s| s.unwrap().frames).map(|f| f.rgb).collect()
}

#[test]
fn remote_frames_are_byte_equal_to_local_ones_for_the_nano_model() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let _w = Worker::start(&url, &["--nano"], "nano", &[]);
    // 2 sections, so the second one's packed history comes from the first.
    let req = request(3, 2.4, 64);
    let out = runtime().block_on(async {
        let client = Client::connect(&RemoteOptions::new(&url)).await.unwrap();
        let job = client.submit(&req).await.unwrap();
        follow(&client, &job, Duration::from_secs(300), |_| {}).await
    });
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?}", out.error);
    let JobEvent::Started { total_frames, width, height, ref worker, .. } = out.events[0] else {
        panic!("first event {:?}", out.events[0])
    };
    assert_eq!(worker, "nano");
    let sections = out.events.iter().filter(|e| matches!(e, JobEvent::Section { .. })).count();
    let progress = out.events.iter().filter(|e| matches!(e, JobEvent::Progress { .. })).count();
    assert_eq!((sections, progress), (2, 6));
    let local = local_frames(&framepack_nano::bundle(), &req);
    assert_eq!(local.len(), total_frames);
    assert_eq!(local[0].len(), (width * height * 3) as usize);
    let remote = out.sorted_frames();
    assert!(remote == local, "remote frames differ from local ones");
}

#[test]
fn two_workers_finish_four_jobs_and_large_frames_go_through_the_object_store() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("four");
    let w = ["--weights", weights.to_str().unwrap()];
    // Frames are sent through the object store (no blob fits in 1 byte).
    let _a = Worker::start(&url, &w, "a", &["--inline-limit", "1"]);
    let _b = Worker::start(&url, &w, "b", &["--inline-limit", "1"]);
    let req = request(6, 2.4, 32);
    let outs = runtime().block_on(async {
        let client = Client::connect(&RemoteOptions::new(&url)).await.unwrap();
        let mut jobs = Vec::new();
        for _ in 0..4 {
            jobs.push(client.submit(&req).await.unwrap());
        }
        let mut outs = Vec::new();
        for job in &jobs {
            outs.push(follow(&client, job, Duration::from_secs(300), |_| {}).await);
        }
        outs
    });
    let local = local_frames(&framepack::bundle::BundlePaths::from_dir(&weights), &req);
    let mut workers: Vec<String> = outs.iter().flat_map(Outcome::workers).collect();
    for o in &outs {
        assert_eq!(o.end(), Some(&JobEvent::Finished), "{:?}", o.error);
        assert!(o.sorted_frames() == local, "frames differ from a local run");
    }
    workers.sort();
    workers.dedup();
    assert_eq!(workers, ["a", "b"], "both workers took jobs");
}

#[test]
fn a_killed_worker_s_job_finishes_on_the_other() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("kill");
    let w = ["--weights", weights.to_str().unwrap()];
    let mut workers = [Worker::start(&url, &w, "first", &[]), Worker::start(&url, &w, "second", &[])];
    let req = request(8, 2.4, 32);
    let rt = runtime();
    let client = rt.block_on(Client::connect(&RemoteOptions::new(&url))).unwrap();
    let job = rt.block_on(client.submit(&req)).unwrap();
    let mut running = String::new();
    let mut killed: Option<String> = None;
    let out = rt.block_on(follow(&client, &job, Duration::from_secs(300), |ev| match ev {
        JobEvent::Started { worker, .. } => running = worker.clone(),
        // kill -9 the worker running it in the middle of its first section.
        JobEvent::Progress { section: 0, step: 3, .. } if killed.is_none() => {
            let victim = workers.iter_mut().find(|w| w.name == running).expect("a known worker");
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
            killed = Some(running.clone());
        }
        _ => {}
    }));
    let killed = killed.expect("the job ran long enough to kill its worker");
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?}", out.error);
    let restarted: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| {
            if let JobEvent::Restarted { attempt, worker } = e { Some((*attempt, worker.clone())) } else { None }
        })
        .collect();
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_eq!(restarted[0].0, 2);
    assert_ne!(restarted[0].1, killed, "the other worker took the job over");
    let mut seen = std::collections::HashSet::new();
    assert!(out.frames.iter().all(|(i, _)| seen.insert(*i)), "no frame arrives twice");
    assert!(out.sorted_frames() == local_frames(&framepack::bundle::BundlePaths::from_dir(&weights), &req));
    let survivor = workers.iter_mut().find(|w| w.name != killed).unwrap();
    assert!(survivor.alive());
}

#[test]
fn cancel_stops_a_running_job_within_one_step() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("cancel");
    let _w = Worker::start(&url, &["--weights", weights.to_str().unwrap()], "w", &[]);
    let rt = runtime();
    let client = rt.block_on(Client::connect(&RemoteOptions::new(&url))).unwrap();
    let job = rt.block_on(client.submit(&request(40, 4.8, 32))).unwrap();
    let out = rt.block_on(async {
        let mut events = client.events(&job).await.unwrap();
        let mut after_cancel = None;
        let mut last = None;
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), events.next()).await.expect("no hang") {
            let ev = ev.unwrap();
            match (&ev, &mut after_cancel) {
                (JobEvent::Progress { step: 2, .. }, None) => {
                    client.cancel(&job).await.unwrap();
                    after_cancel = Some(0usize);
                }
                (JobEvent::Progress { .. }, Some(n)) => *n += 1,
                _ => {}
            }
            last = Some(ev);
        }
        (after_cancel, last)
    });
    assert_eq!(out.1, Some(JobEvent::Cancelled));
    // The step running when the flag landed may finish; the next one does not start.
    let steps_after = out.0.expect("cancelled after step 2");
    assert!(steps_after <= 2, "{steps_after} sampler steps ran after the cancel");
}

#[test]
fn a_stopped_server_fails_the_job_with_a_clear_error_and_the_worker_survives() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("stop");
    let mut worker = Worker::start(&url, &["--weights", weights.to_str().unwrap()], "w", &[]);
    let rt = runtime();
    let opts = RemoteOptions::new(&url).with_disconnect_timeout(Duration::from_secs(2));
    let client = rt.block_on(Client::connect(&opts)).unwrap();
    let job = rt.block_on(client.submit(&request(40, 4.8, 32))).unwrap();
    let started = Instant::now();
    let mut stopped_at = None;
    let out = rt.block_on(follow(&client, &job, Duration::from_secs(120), |ev| {
        if matches!(ev, JobEvent::Progress { step: 2, .. }) && stopped_at.is_none() {
            server.stop();
            stopped_at = Some(Instant::now());
        }
    }));
    let stopped_at = stopped_at.expect("the job was running when the server stopped");
    let err = out.error.expect("an error, not an end event");
    assert!(matches!(err, RemoteError::Disconnected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("lost the connection"), "{text}");
    let waited = stopped_at.elapsed();
    assert!(waited < Duration::from_secs(10), "the error took {waited:?} (timeout 2 s)");
    assert!(started.elapsed() < Duration::from_secs(120));
    // The worker rides out the outage and serves jobs again once the server is back.
    std::thread::sleep(Duration::from_millis(500));
    assert!(worker.alive(), "the worker crashed when the server stopped");
    server.restart().unwrap();
    let out = rt.block_on(async {
        let client = Client::connect(&RemoteOptions::new(&url)).await.unwrap();
        let job = client.submit(&request(2, 1.2, 32)).await.unwrap();
        follow(&client, &job, Duration::from_secs(120), |_| {}).await
    });
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?}", out.error);
}

#[test]
fn a_short_outage_is_ridden_out_and_the_job_finishes() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("outage");
    let _worker = Worker::start(&url, &["--weights", weights.to_str().unwrap()], "w", &[]);
    let rt = runtime();
    let opts = RemoteOptions::new(&url).with_disconnect_timeout(Duration::from_secs(30));
    let client = rt.block_on(Client::connect(&opts)).unwrap();
    let req = request(8, 2.4, 32);
    let job = rt.block_on(client.submit(&req)).unwrap();
    let mut restarted = false;
    let out = rt.block_on(follow(&client, &job, Duration::from_secs(120), |ev| {
        if matches!(ev, JobEvent::Progress { step: 2, .. }) && !restarted {
            // Down for a second, back on the same port and store.
            server.stop();
            std::thread::sleep(Duration::from_secs(1));
            server.restart().unwrap();
            restarted = true;
        }
    }));
    assert!(restarted);
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?} {:?}", out.error, out.events);
    let mut seen = std::collections::HashSet::new();
    assert!(out.frames.iter().all(|(i, _)| seen.insert(*i)), "no frame arrives twice");
    assert!(out.sorted_frames() == local_frames(&framepack::bundle::BundlePaths::from_dir(&weights), &req));
}

#[test]
fn a_malformed_job_is_rejected_and_the_worker_keeps_working() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("malformed");
    let mut worker = Worker::start(&url, &["--weights", weights.to_str().unwrap()], "w", &[]);
    let rt = runtime();
    let client = rt.block_on(Client::connect(&RemoteOptions::new(&url))).unwrap();
    for (job, payload) in [
        ("garbage", b"{\"not\": \"a job\"}".to_vec()),
        ("truncated", framepack_remote::protocol::Envelope::new(&1u8, vec![vec![1, 2, 3]]).encode()[..9].to_vec()),
        ("wrong-header", framepack_remote::protocol::Envelope::new(&"hello", vec![]).encode()),
    ] {
        rt.block_on(client.publish_job(job, payload)).unwrap();
        let out = rt.block_on(follow(&client, job, Duration::from_secs(60), |_| {}));
        let Some(JobEvent::Failed { kind, message }) = out.end() else { panic!("{job}: {:?}", out.events) };
        assert_eq!(*kind, FailureKind::Rejected, "{job}");
        assert!(message.contains("malformed job"), "{job}: {message}");
    }
    // A request the model refuses (no sampler steps) is an invalid request, not a crash.
    let job = rt.block_on(client.submit(&request(0, 1.2, 32))).unwrap();
    let out = rt.block_on(follow(&client, &job, Duration::from_secs(60), |_| {}));
    assert!(matches!(out.end(), Some(JobEvent::Failed { kind: FailureKind::InvalidRequest, .. })), "{:?}", out.events);
    assert!(worker.alive());
    let job = rt.block_on(client.submit(&request(2, 1.2, 32))).unwrap();
    let out = rt.block_on(follow(&client, &job, Duration::from_secs(120), |_| {}));
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?}", out.error);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let t = Instant::now();
    let err = runtime().block_on(Client::connect(&RemoteOptions::new(&url))).err().expect("no server");
    assert!(t.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot reach the NATS server at {url}")), "{text}");
    // The CLI says the same in one line.
    let dir = temp_dir("unreachable");
    let img = dir.join("start.png");
    image::save_buffer(&img, &vec![90u8; 32 * 32 * 3], 32, 32, image::ExtendedColorType::Rgb8).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_framepack"))
        .args(["generate", "--remote", &url, "--image", img.to_str().unwrap(), "--out"])
        .arg(dir.join("x.cutscene"))
        .args(["--quiet", "--resolution", "32"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot reach the NATS server at"), "{stderr}");
}

#[test]
fn generate_remote_writes_the_same_clip_as_a_local_run() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let weights = tiny_bundle("cli");
    let _w = Worker::start(&url, &["--weights", weights.to_str().unwrap()], "w", &[]);
    let dir = temp_dir("cli-out");
    let img = dir.join("start.png");
    image::save_buffer(&img, &image(96, 80).into_raw(), 96, 80, image::ExtendedColorType::Rgb8).unwrap();
    let run = |how: &[&str], out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_framepack"))
            .arg("generate")
            .args(how)
            .args(["--image", img.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--quiet", "--resolution", "32", "--steps", "3", "--seconds", "2.4", "--schedule", "geometric"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let (remote, local) = (dir.join("remote.cutscene"), dir.join("local.cutscene"));
    let said = run(&["--remote", &url], &remote);
    assert!(said.contains("on w:"), "{said}");
    run(&["--weights", weights.to_str().unwrap()], &local);
    assert_eq!(std::fs::read(&remote).unwrap(), std::fs::read(&local).unwrap());
}

#[test]
fn credentials_pass_through_and_a_refusal_is_clear() {
    let server = NatsServer::start_with(Some("authorization { user: game, password: s3cret }\n")).unwrap();
    let url = server.url();
    let rt = runtime();
    let err = rt.block_on(Client::connect(&RemoteOptions::new(&url))).err().expect("refused without credentials");
    assert!(matches!(err, RemoteError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("the NATS server at {url} refused the connection")), "{err}");
    let creds = Credentials::UserPassword { user: "game".into(), password: "s3cret".into() };
    let opts = RemoteOptions::new(&url).with_credentials(creds);
    assert!(!format!("{opts:?}").contains("s3cret"), "Debug shows no password");
    // A worker with the wrong password stops with the refusal instead of retrying forever.
    let weights = tiny_bundle("auth");
    let o = Command::new(env!("CARGO_BIN_EXE_framepack"))
        .args(["worker", "--nats", &url, "--weights", weights.to_str().unwrap(), "--nats-user", "game"])
        .env("FRAMEPACK_NATS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("refused the connection"), "{stderr}");
    // The right one serves jobs.
    let _w = Worker::start(
        &url,
        &["--weights", weights.to_str().unwrap()],
        "w",
        &["--nats-user", "game", "--nats-password", "s3cret"],
    );
    let out = rt.block_on(async {
        let client = Client::connect(&opts).await.unwrap();
        let job = client.submit(&request(2, 1.2, 32)).await.unwrap();
        follow(&client, &job, Duration::from_secs(120), |_| {}).await
    });
    assert_eq!(out.end(), Some(&JobEvent::Finished), "{:?}", out.error);
}
