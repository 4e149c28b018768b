//! Section time of a streamed forward job on the nano model with the decode stage on the job's
//! thread against its own thread (`JobSettings::pipeline`), alternating, on the current rayon
//! pool and on a 1-thread pool.
//!
//! `cargo run --release -p framepack-train --example pipeline_bench -- [--bundle DIR]
//! [--resolution R] [--steps N] [--sections N] [--runs N]`
//!
//! Each run is one forward-geometric job of `--sections` sections from the first frame of a
//! held-out 128 × 96 clip; the first section (which also decodes the start frame and fills the
//! pipeline) is left out of the medians.

#[path = "../../framepack/examples/support/bench.rs"]
mod bench;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use framepack::bundle::BundlePaths;
use framepack::packing::{FPS, ScheduleChoice, latent_to_frames};
use framepack::{Pipeline, Request, Result};
use framepack_train::clips::{self, ClipConfig};
use framepack_train::dit::first_frame;

fn main() -> Result<()> {
    let mut bundle = PathBuf::from("assets/nano");
    let (mut resolution, mut steps, mut sections, mut runs) = (120usize, 6usize, 5usize, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        let n = || v.parse::<usize>().unwrap_or_else(|_| panic!("{k} takes a number, got {v:?}"));
        match k.as_str() {
            "--bundle" => bundle = PathBuf::from(&v),
            "--resolution" => resolution = n(),
            "--steps" => steps = n(),
            "--sections" => sections = n().max(2),
            "--runs" => runs = n().max(1),
            _ => panic!("unknown option {k}"),
        }
    }
    let mut pipeline = Pipeline::load(&BundlePaths::from_dir(&bundle), &Device::Cpu, DType::F32)?;
    let cfg = ClipConfig { width: 128, height: 96, frames: latent_to_frames(1), fps: FPS as f32 };
    let seed = clips::held_out_seeds(1).next().expect("one seed");
    let clip = clips::clip(seed, &cfg)?;
    let window = 9;
    let play = (4 * window) as f64 / FPS;
    let mut job_secs = |pipelined: bool| -> Result<(Vec<f64>, f64)> {
        let mut r = Request::new(first_frame(&clip)?, &clip.prompt);
        r.resolution = resolution;
        r.settings.seconds = sections as f64 * play;
        r.settings.schedule = ScheduleChoice::Geometric;
        r.settings.steps = steps;
        r.settings.pipeline = pipelined;
        let started = Instant::now();
        let first = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
        let sink = first.clone();
        let job = pipeline.start(&r)?.on_frame(move |_, _| {
            sink.lock().expect("not poisoned").get_or_insert(started.elapsed().as_secs_f64());
        });
        let mut t = Instant::now();
        let mut secs = Vec::new();
        for s in job {
            let s = s?;
            if s.index > 0 {
                secs.push(t.elapsed().as_secs_f64());
            }
            t = Instant::now();
        }
        let first = first.lock().expect("not poisoned").unwrap_or(f64::NAN);
        Ok((secs, first))
    };
    println!(
        "pipeline bench: {} at resolution {resolution}, {steps} steps, {sections} sections per job, {runs} ABBA pairs, load {}",
        bundle.display(),
        bench::loadavg()
    );
    println!("| pool | decode stage | s/section (median) | real-time factor | first frame (s) |");
    println!("|---|---|---|---|---|");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a pool");
    for (pool_name, pool) in
        [(format!("{} threads", rayon::current_num_threads()), None), ("1 thread".into(), Some(&one))]
    {
        let mut serial = (Vec::new(), Vec::new());
        let mut piped = (Vec::new(), Vec::new());
        for pair in 0..runs {
            for k in 0..2 {
                let pipelined = (pair + k) % 2 == 1;
                let (secs, first) = match pool {
                    Some(p) => p.install(|| job_secs(pipelined))?,
                    None => job_secs(pipelined)?,
                };
                let into = if pipelined { &mut piped } else { &mut serial };
                into.0.extend(secs);
                into.1.push(first);
            }
        }
        for (name, (secs, first)) in [("job's thread", serial), ("own thread", piped)] {
            let med = bench::median(&secs);
            println!("| {pool_name} | {name} | {med:.3} | {:.3} | {:.3} |", med / play, bench::median(&first));
        }
    }
    println!("load after: {}", bench::loadavg());
    Ok(())
}
