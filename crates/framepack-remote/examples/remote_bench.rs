//! Remote generation on this machine: jobs per minute with 1 and 2 workers, and the latency the
//! remote path adds to each section against the same job run locally. Nano model, a throwaway
//! `nats-server -js` on 127.0.0.1 (`$NATS_SERVER_BIN` or the PATH), in-process workers
//! (`WorkerThread`), each with its own inference thread pool.
//!
//! `cargo run --release -p framepack-remote --example remote_bench --features testing [-- --jobs 4 --reps 3]`

use std::time::{Duration, Instant};

use framepack::JobSettings;
use framepack::packing::ScheduleChoice;
use framepack::pipeline::{Pipeline, Request};
use framepack::preprocess::RgbImage;
use framepack_remote::testing::NatsServer;
use framepack_remote::{Client, JobEvent, RemoteOptions, WorkerOptions, WorkerThread};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn request() -> Request {
    let (w, h) = (96, 72);
    let rgb = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
    Request {
        image: RgbImage::new(w, h, rgb).expect("image"),
        end_image: None,
        prompt: "a ball bounces, the camera pans right".into(),
        resolution: 64,
        settings: JobSettings {
            steps: 10,
            seconds: 2.4,
            schedule: ScheduleChoice::Geometric,
            ..JobSettings::default()
        },
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool")
}

fn worker(url: &str, name: &str, threads: usize) -> WorkerThread {
    let opts = WorkerOptions {
        remote: RemoteOptions::new(url),
        name: name.into(),
        threads: Some(threads),
        ..WorkerOptions::default()
    };
    WorkerThread::spawn(
        opts,
        Box::new(|| Pipeline::load(&framepack_nano::bundle(), &candle_core::Device::Cpu, candle_core::DType::F32)),
    )
    .expect("worker")
}

/// Seconds from submission to each section's arrival, and to the end.
async fn remote_job(client: &Client, req: &Request) -> (Vec<f64>, f64) {
    let t = Instant::now();
    let job = client.submit(req).await.expect("submit");
    let mut events = client.events(&job).await.expect("events");
    let mut sections = Vec::new();
    while let Some(ev) = events.next().await {
        match ev.expect("event") {
            JobEvent::Section { .. } => sections.push(t.elapsed().as_secs_f64()),
            JobEvent::Finished => break,
            e if e.is_end() => panic!("job ended with {e:?}"),
            _ => {}
        }
    }
    (sections, t.elapsed().as_secs_f64())
}

fn local_job(p: &mut Pipeline, req: &Request) -> Vec<f64> {
    let t = Instant::now();
    let job = p.start(req).expect("start");
    job.map(|s| {
        s.expect("section");
        t.elapsed().as_secs_f64()
    })
    .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let jobs = arg("--jobs", 4);
    let reps = arg("--reps", 5);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = NatsServer::start().expect("nats-server (set NATS_SERVER_BIN)");
    let url = server.url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = rt.block_on(Client::connect(&RemoteOptions::new(&url))).expect("connect");
    let req = request();
    println!(
        "remote_bench: nano model, {}x{} → resolution 64, 10 steps, 2 sections/job; {cores} cores; load {}",
        96,
        72,
        load()
    );

    // Added latency: the same job locally and remotely (one warm worker, all cores each), alternating.
    let w = worker(&url, "solo", cores);
    rt.block_on(remote_job(&client, &req)); // loads the worker's model
    let mut local = pool(cores)
        .install(|| Pipeline::load(&framepack_nano::bundle(), &candle_core::Device::Cpu, candle_core::DType::F32))
        .expect("load");
    let local_pool = pool(cores);
    let (mut added, mut local_end, mut remote_end) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let l = local_pool.install(|| local_job(&mut local, &req));
        let (r, _) = rt.block_on(remote_job(&client, &req));
        for (a, b) in l.iter().zip(&r) {
            added.push((b - a) * 1000.0);
        }
        local_end.push(*l.last().expect("sections"));
        remote_end.push(*r.last().expect("sections"));
    }
    drop(local);
    println!("\n| path | job (median of {reps}) | added per section |");
    println!("|---|---|---|");
    println!("| local | {:.2} s | — |", median(local_end.clone()));
    let spread =
        |v: &[f64]| v.iter().copied().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = spread(&added);
    println!(
        "| remote (1 worker) | {:.2} s | {:+.0} ms (median of {} sections; {lo:+.0} … {hi:+.0}) |",
        median(remote_end.clone()),
        median(added.clone()),
        added.len()
    );
    let (llo, lhi) = spread(&local_end);
    println!("| (local job spread) | {llo:.2} … {lhi:.2} s | |");

    // Throughput: `jobs` jobs queued at once, 1 worker with all cores, then 2 workers with half each.
    println!("\n| workers | threads each | {jobs} jobs | jobs/minute |");
    println!("|---|---|---|---|");
    let row = |n: usize, threads: usize, rt: &tokio::runtime::Runtime| {
        let t = Instant::now();
        rt.block_on(async {
            let mut ids = Vec::new();
            for _ in 0..jobs {
                ids.push(client.submit(&req).await.expect("submit"));
            }
            for id in ids {
                let mut ev = client.events(&id).await.expect("events");
                while let Some(e) = ev.next().await {
                    if e.expect("event").is_end() {
                        break;
                    }
                }
            }
        });
        let s = t.elapsed().as_secs_f64();
        println!("| {n} | {threads} | {s:.1} s | {:.1} |", jobs as f64 * 60.0 / s);
    };
    row(1, cores, &rt);
    drop(w);
    let halves = (cores / 2).max(1);
    let a = worker(&url, "a", halves);
    let b = worker(&url, "b", halves);
    // Warm both (each loads its model on its first job).
    rt.block_on(async {
        let (x, y) = (client.submit(&req).await.expect("submit"), client.submit(&req).await.expect("submit"));
        for id in [x, y] {
            let mut ev = client.events(&id).await.expect("events");
            while let Some(e) = ev.next().await {
                if e.expect("event").is_end() {
                    break;
                }
            }
        }
    });
    row(2, halves, &rt);
    drop((a, b));
    std::thread::sleep(Duration::from_millis(10));
    println!("\nload after: {}", load());
}
