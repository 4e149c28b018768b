//! Evaluation of the embedded nano model on held-out procedural clips, printed as tables:
//!
//! 1. next-section error: one forward-geometric section generated from the clip's true history
//!    (start latent + every earlier latent, packed), decoded together with that history, against
//!    the clip's real frames; next to the copy-last-frame baseline and the VAE's own
//!    reconstruction (the ceiling);
//! 2. drift over 10 sections: mean intensity and sharpness (mean |Laplacian| of the luma) of the
//!    first 15 % against the last 15 % of the frames, for inverted anti-drifting, forward
//!    geometric and naive repeated image-to-video from the last frame;
//! 3. CPU wall time per section against the section's play time (36 frames at 30 fps), with all
//!    threads and on a 1-thread pool, and the time from a job's start to its first frame.
//!
//! The last line is `SUMMARY key=value …` for scripts (`torch_ratio=na`: the PyTorch side of
//! this workload is not written yet).
//!
//! `cargo run --release -p framepack-train --example nano_eval -- [--bundle DIR]
//! [--clips N] [--steps N] [--threads N]`

#[path = "../../framepack/examples/support/bench.rs"]
mod bench;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use framepack::bundle::BundlePaths;
use framepack::generator::Frame;
use framepack::packing::{ContextSchedule, FPS, ScheduleChoice, SectionPlan, latent_to_frames};
use framepack::preprocess::RgbImage;
use framepack::sampling::{Sampler, section_sigmas};
use framepack::{Pipeline, Request, Result};
use framepack_train::clips::{self, ClipConfig};
use framepack_train::dit::{ClipLatents, first_frame};
use framepack_train::train::psnr;

struct Args {
    bundle: PathBuf,
    clips: usize,
    steps: usize,
    drift_clips: usize,
}

fn args() -> Args {
    let mut a = Args { bundle: PathBuf::from("assets/nano"), clips: 24, steps: 10, drift_clips: 4 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--bundle" => a.bundle = PathBuf::from(&v[i + 1]),
            "--clips" => a.clips = v[i + 1].parse().expect("--clips N"),
            "--steps" => a.steps = v[i + 1].parse().expect("--steps N"),
            "--drift-clips" => a.drift_clips = v[i + 1].parse().expect("--drift-clips N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn mse(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.sqr()?.mean_all()?.to_scalar()?)
}

/// Luma of an RGB frame, 0–255.
fn luma(f: &Frame) -> Vec<f32> {
    f.rgb.chunks(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

/// Mean luma and mean |4-neighbour Laplacian| of the luma.
fn intensity_sharpness(f: &Frame) -> (f64, f64) {
    let y = luma(f);
    let (w, h) = (f.width, f.height);
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
    let mut lap = 0f64;
    let mut n = 0f64;
    for r in 1..h - 1 {
        for c in 1..w - 1 {
            let i = r * w + c;
            lap += (4.0 * y[i] - y[i - 1] - y[i + 1] - y[i - w] - y[i + w]).abs() as f64;
            n += 1.0;
        }
    }
    (mean, lap / n.max(1.0))
}

/// (Δ mean intensity, Δ sharpness) of the last 15 % of frames against the first 15 %.
fn drift(frames: &[Frame]) -> (f64, f64) {
    let k = ((frames.len() as f64 * 0.15).round() as usize).max(1);
    let avg = |fs: &[Frame]| {
        let v: Vec<(f64, f64)> = fs.iter().map(intensity_sharpness).collect();
        let n = v.len() as f64;
        (v.iter().map(|x| x.0).sum::<f64>() / n, v.iter().map(|x| x.1).sum::<f64>() / n)
    };
    let (a, b) = (avg(&frames[..k]), avg(&frames[frames.len() - k..]));
    (b.0 - a.0, b.1 - a.1)
}

fn to_image(f: &Frame) -> Result<RgbImage> {
    RgbImage::new(f.width, f.height, f.rgb.clone())
}

fn request(image: RgbImage, prompt: &str, seconds: f64, schedule: ScheduleChoice, steps: usize, seed: u64) -> Request {
    let mut r = Request::new(image, prompt);
    r.resolution = 64;
    r.settings.seconds = seconds;
    r.settings.schedule = schedule;
    r.settings.steps = steps;
    r.settings.seed = seed;
    r
}

fn main() -> Result<()> {
    let a = args();
    let dev = Device::Cpu;
    let mut pipeline = Pipeline::load(&BundlePaths::from_dir(&a.bundle), &dev, DType::F32)?;
    let window = 9;
    let sections = 3;
    let cfg = ClipConfig { width: 64, height: 64, frames: latent_to_frames(1 + sections * window), fps: FPS as f32 };
    let seeds: Vec<u64> = clips::held_out_seeds(a.clips).collect();
    println!(
        "nano evaluation: bundle {}, {} held-out clips of {} frames, {} UniPC steps, {} threads",
        a.bundle.display(),
        seeds.len(),
        cfg.frames,
        a.steps,
        rayon::current_num_threads()
    );
    let data = ClipLatents::encode(&mut pipeline, &seeds, &cfg, &[], |_| {})?;

    // 1. Next section from the true history (forward geometric), sections 1 and 2 of 3.
    let models = pipeline.generator().models().clone();
    let (tr, vae) = (&models.transformer, &models.vae);
    let schedule = ContextSchedule::geometric();
    let plan = SectionPlan::new(sections, window, schedule.order)?;
    let (mut m_model, mut m_copy, mut m_recon) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p_model, mut p_copy, mut p_recon) = (Vec::new(), Vec::new(), Vec::new());
    let mut rng = framepack::generator::NoiseRng::new(7);
    for (i, &seed) in seeds.iter().enumerate() {
        let clip = clips::clip(seed, &cfg)?.to_tensor(&dev)?;
        for section in 1..sections {
            let b = data.section(i, &schedule, &plan, section, false)?;
            let info = plan.section(section)?;
            let (h, w) = (b.x0.dim(3)?, b.x0.dim(4)?);
            let noise = rng.normal_tensor(b.x0.dims(), &dev)?;
            let sigmas = section_sigmas(a.steps, window, h, w)?;
            let mut denoise = |x: &Tensor, sigma: f64| -> Result<Tensor> {
                let t = Tensor::new(&[framepack::sampling::model_timestep(sigma)], &dev)?;
                let inputs = b.inputs(x, &t);
                Ok((x - (tr.forward(&inputs)? * sigma)?)?)
            };
            let new = Sampler::UniPc.sample(&mut denoise, &noise, &sigmas, &mut |_| Ok(()))?;
            let z = &data.latents[i];
            let history = z.narrow(2, 0, info.latents.start)?;
            let decode = |window: &Tensor| -> Result<Tensor> {
                let all = Tensor::cat(&[&history, window], 2)?;
                let px = vae.decode(&all)?;
                let f0 = latent_to_frames(info.latents.start);
                Ok(px.narrow(2, f0, px.dim(2)? - f0)?.clamp(-1f32, 1f32)?)
            };
            let (f0, f1) = (latent_to_frames(info.latents.start), latent_to_frames(info.latents.end));
            let truth = clip.narrow(2, f0, f1 - f0)?;
            let generated = decode(&new)?;
            let recon = decode(&z.narrow(2, info.latents.start, window)?)?;
            let last = clip.narrow(2, f0 - 1, 1)?.repeat((1, 1, f1 - f0, 1, 1))?;
            for (m, p, x) in [
                (&mut m_model, &mut p_model, &generated),
                (&mut m_copy, &mut p_copy, &last),
                (&mut m_recon, &mut p_recon, &recon),
            ] {
                m.push(mse(x, &truth)? as f64);
                p.push(psnr(x, &truth)?[0] as f64);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!("\nnext-section error on {} held-out sections (pixels in [-1, 1])", m_model.len());
    println!(
        "| predictor | MSE mean | MSE median | PSNR of the mean MSE (dB) | PSNR median (dB) | sections below copy-last-frame MSE |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, m, p) in [
        ("nano model (geometric, true history)", &m_model, &p_model),
        ("copy last frame", &m_copy, &p_copy),
        ("VAE reconstruction (ceiling)", &m_recon, &p_recon),
    ] {
        let below = m.iter().zip(&m_copy).filter(|(a, b)| a < b).count();
        println!(
            "| {name} | {:.5} | {:.5} | {:.2} | {:.2} | {below}/{} |",
            mean(m),
            bench::median(m),
            10.0 * (4.0 / mean(m)).log10(),
            bench::median(p),
            m.len()
        );
    }

    // 2. Drift over 10 sections, and 3. wall time per section.
    let seconds = 10.0 * (4 * window) as f64 / FPS;
    let mut first_frame_s = Vec::new();
    let mut rows: Vec<(&str, Vec<(f64, f64)>, Vec<f64>)> = Vec::new();
    for (name, schedule) in [
        ("inverted anti-drifting", ScheduleChoice::InvertedAntiDrifting),
        ("forward geometric", ScheduleChoice::Geometric),
    ] {
        let mut d = Vec::new();
        let mut times = Vec::new();
        for (i, &seed) in seeds.iter().take(a.drift_clips).enumerate() {
            let clip = clips::clip(seed, &cfg)?;
            let req = request(first_frame(&clip)?, &clip.prompt, seconds, schedule.clone(), a.steps, i as u64);
            let started = Instant::now();
            let first = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
            let sink = first.clone();
            let mut job = pipeline.start(&req)?.on_frame(move |_, _| {
                sink.lock().expect("not poisoned").get_or_insert(started.elapsed().as_secs_f64());
            });
            let total = job.total_frames();
            let mut video: Vec<Option<Frame>> = vec![None; total];
            let mut t = Instant::now();
            for s in job.by_ref() {
                let s = s?;
                times.push(t.elapsed().as_secs_f64());
                t = Instant::now();
                for (k, f) in s.frame_range.zip(s.frames) {
                    video[k] = Some(f);
                }
            }
            let video: Vec<Frame> = video.into_iter().map(|f| f.expect("every frame")).collect();
            d.push(drift(&video));
            if schedule == ScheduleChoice::Geometric
                && let Some(t) = *first.lock().expect("not poisoned")
            {
                first_frame_s.push(t);
            }
        }
        rows.push((name, d, times));
    }
    let mut d = Vec::new();
    let mut times = Vec::new();
    for (i, &seed) in seeds.iter().take(a.drift_clips).enumerate() {
        let clip = clips::clip(seed, &cfg)?;
        let mut image = first_frame(&clip)?;
        let mut video: Vec<Frame> = Vec::new();
        for k in 0..10 {
            let t = Instant::now();
            let req = request(
                image,
                &clip.prompt,
                (4 * window) as f64 / FPS,
                ScheduleChoice::Geometric,
                a.steps,
                (i * 10 + k) as u64,
            );
            let frames = pipeline.start(&req)?.run_to_end()?;
            times.push(t.elapsed().as_secs_f64());
            let skip = usize::from(!video.is_empty());
            image = to_image(frames.last().expect("frames"))?;
            video.extend(frames.into_iter().skip(skip));
        }
        d.push(drift(&video));
    }
    rows.push(("naive repeated image-to-video", d, times));

    let play = (4 * window) as f64 / FPS;
    println!(
        "\ndrift over 10 sections ({:.0} s, 361 frames), {} start frames: last 15 % minus first 15 %",
        seconds, a.drift_clips
    );
    println!(
        "| sampling | Δ mean intensity (0–255) | |Δ intensity| | Δ sharpness | |Δ sharpness| | s/section (median) | real-time factor |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, d, times) in &rows {
        let n = d.len().max(1) as f64;
        let di = d.iter().map(|x| x.0).sum::<f64>() / n;
        let da = d.iter().map(|x| x.0.abs()).sum::<f64>() / n;
        let ds = d.iter().map(|x| x.1).sum::<f64>() / n;
        let dsa = d.iter().map(|x| x.1.abs()).sum::<f64>() / n;
        let med = bench::median(times);
        println!("| {name} | {di:+.2} | {da:.2} | {ds:+.3} | {dsa:.3} | {med:.3} | {:.2} |", med / play);
    }
    println!(
        "\nreal-time factor = wall time per section / its play time ({play:.1} s); below 1 plays without waiting."
    );

    // The forward job again on a 1-thread pool (what `FramePackSettings::threads: Some(1)` runs).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| framepack::Error::Candle(candle_core::Error::Msg(e.to_string())))?;
    let mut one_thread = Vec::new();
    for (i, &seed) in seeds.iter().take(a.drift_clips.min(2)).enumerate() {
        let clip = clips::clip(seed, &cfg)?;
        let req = request(first_frame(&clip)?, &clip.prompt, 3.0 * play, ScheduleChoice::Geometric, a.steps, i as u64);
        pool.install(|| -> Result<()> {
            let mut t = Instant::now();
            for s in pipeline.start(&req)? {
                s?;
                one_thread.push(t.elapsed().as_secs_f64());
                t = Instant::now();
            }
            Ok(())
        })?;
    }
    let rtf_1t = bench::median(&one_thread) / play;
    let ttff = bench::median(&first_frame_s);
    println!(
        "forward geometric on a 1-thread pool: {:.3} s/section (median of {}), real-time factor {rtf_1t:.2}",
        bench::median(&one_thread),
        one_thread.len()
    );
    println!("time from a forward job's start to its first frame: {ttff:.3} s (median of {})", first_frame_s.len());

    let psnr_of = |m: &[f64]| 10.0 * (4.0 / mean(m)).log10();
    let beats = m_model.iter().zip(&m_copy).filter(|(a, b)| a < b).count() as f64 / m_model.len().max(1) as f64;
    let sharp = |name: &str| {
        let d = &rows.iter().find(|r| r.0 == name).expect("every row").1;
        d.iter().map(|x| x.1.abs()).sum::<f64>() / d.len().max(1) as f64
    };
    let rtf = bench::median(&rows.iter().find(|r| r.0 == "forward geometric").expect("row").2) / play;
    println!(
        "SUMMARY recon_psnr={:.2} next_psnr={:.2} copy_psnr={:.2} beats_copy={beats:.3} rtf={rtf:.3} rtf_1t={rtf_1t:.3} \
         ttff_s={ttff:.3} drift_sharp_inv={:.4} drift_sharp_f1={:.4} drift_sharp_i2v={:.4} torch_ratio=na",
        psnr_of(&m_recon),
        psnr_of(&m_model),
        psnr_of(&m_copy),
        sharp("inverted anti-drifting"),
        sharp("forward geometric"),
        sharp("naive repeated image-to-video"),
    );
    Ok(())
}
