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
//!    threads (decoding on a thread of its own, and on the job's thread) and on a 1-thread pool,
//!    and the time from a job's start to its first frame.
//!
//! 1b. with `--sweep`: the next-section error and sampling time at other step counts;
//! 5. end frames: inverted jobs over whole held-out clips with the clip's last frame as the end
//!    image and without, the PSNR of their last frames and of the whole videos;
//! 4. with `--python PATH --taehv-src DIR` (a Python with torch and diffusers, and a folder
//!    holding upstream's `taehv.py`): the same section workload in PyTorch, alternating with
//!    candle in ABBA order. One run is the section's transformer forwards with Euler updates
//!    between them and the TAEHV decode of its latents, same weights, same inputs
//!    (`tools/nano_torch.py`).
//!
//! The last line is `SUMMARY key=value …` for scripts (`torch_ratio=na` without the PyTorch side;
//! `end_psnr` and `end_psnr_none` are the last-frame PSNRs of 5).
//!
//! `cargo run --release -p framepack-train --example nano_eval -- [--bundle DIR]
//! [--clips N] [--steps N] [--drift-clips N] [--size WxH] [--python PATH --taehv-src DIR]
//! [--torch-runs N] [--resolution R] [--sweep N,N,…]` (the clips' size is 64x64 by default; requests use
//! resolution R, by default the larger side; the size must be R's bucket for the clips' aspect,
//! e.g. 128x96 at R = 120).

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
    size: (usize, usize),
    python: Option<String>,
    taehv_src: Option<PathBuf>,
    torch_runs: usize,
    resolution: Option<usize>,
    sweep: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        bundle: PathBuf::from("assets/nano"),
        clips: 24,
        steps: 10,
        drift_clips: 4,
        size: (64, 64),
        python: None,
        taehv_src: None,
        torch_runs: 6,
        resolution: None,
        sweep: Vec::new(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--bundle" => a.bundle = PathBuf::from(&v[i + 1]),
            "--clips" => a.clips = v[i + 1].parse().expect("--clips N"),
            "--steps" => a.steps = v[i + 1].parse().expect("--steps N"),
            "--drift-clips" => a.drift_clips = v[i + 1].parse().expect("--drift-clips N"),
            "--python" => a.python = Some(v[i + 1].clone()),
            "--taehv-src" => a.taehv_src = Some(PathBuf::from(&v[i + 1])),
            "--torch-runs" => a.torch_runs = v[i + 1].parse().expect("--torch-runs N"),
            "--resolution" => a.resolution = Some(v[i + 1].parse().expect("--resolution R")),
            "--sweep" => a.sweep = v[i + 1].split(',').map(|n| n.parse().expect("--sweep N,N,…")).collect(),
            "--size" => {
                let (w, h) = v[i + 1].split_once('x').expect("--size WxH");
                a.size = (w.parse().expect("--size WxH"), h.parse().expect("--size WxH"));
            }
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

fn request(
    image: RgbImage,
    prompt: &str,
    resolution: usize,
    seconds: f64,
    schedule: ScheduleChoice,
    steps: usize,
    seed: u64,
) -> Request {
    let mut r = Request::new(image, prompt);
    r.resolution = resolution;
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
    let (width, height) = a.size;
    let resolution = a.resolution.unwrap_or(width.max(height));
    let bucket = framepack::preprocess::find_nearest_bucket(height, width, resolution)?;
    if bucket != (height, width) {
        return Err(framepack::Error::Invalid {
            what: "--size",
            reason: format!("{width}x{height} clips bucket to {}x{} at resolution {resolution}", bucket.1, bucket.0),
        });
    }
    let cfg = ClipConfig { width, height, frames: latent_to_frames(1 + sections * window), fps: FPS as f32 };
    let seeds: Vec<u64> = clips::held_out_seeds(a.clips).collect();
    println!(
        "nano evaluation: bundle {}, {} held-out clips of {} frames at {width} × {height}, {} UniPC steps, {} threads",
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
    // The window latents of section `section` of clip `i` sampled in `steps` steps from noise
    // drawn from `rng`.
    let sample = |i: usize, section: usize, steps: usize, rng: &mut framepack::generator::NoiseRng| -> Result<Tensor> {
        let b = data.section(i, &schedule, &plan, section, false)?;
        let (h, w) = (b.x0.dim(3)?, b.x0.dim(4)?);
        let noise = rng.normal_tensor(b.x0.dims(), &dev)?;
        let sigmas = section_sigmas(steps, window, h, w)?;
        let mut denoise = |x: &Tensor, sigma: f64| -> Result<Tensor> {
            let t = Tensor::new(&[framepack::sampling::model_timestep(sigma)], &dev)?;
            let inputs = b.inputs(x, &t);
            Ok((x - (tr.forward(&inputs)? * sigma)?)?)
        };
        Sampler::UniPc.sample(&mut denoise, &noise, &sigmas, &mut |_| Ok(()))
    };
    let mut rng = framepack::generator::NoiseRng::new(7);
    for (i, &seed) in seeds.iter().enumerate() {
        let clip = clips::clip(seed, &cfg)?.to_tensor(&dev)?;
        for section in 1..sections {
            let info = plan.section(section)?;
            let new = sample(i, section, a.steps, &mut rng)?;
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

    // The same sections at other step counts: error and sampling time.
    if !a.sweep.is_empty() {
        println!("\nnext section at other step counts (same sections and noise seeds; decode not timed)");
        println!(
            "| steps | PSNR of the mean MSE (dB) | sections below copy-last-frame MSE | sampling s/section (median) |"
        );
        println!("|---|---|---|---|");
        for &steps in &a.sweep {
            let mut rng = framepack::generator::NoiseRng::new(7);
            let (mut m, mut secs) = (Vec::new(), Vec::new());
            for (i, &seed) in seeds.iter().enumerate() {
                let clip = clips::clip(seed, &cfg)?.to_tensor(&dev)?;
                for section in 1..sections {
                    let info = plan.section(section)?;
                    let t0 = Instant::now();
                    let new = sample(i, section, steps, &mut rng)?;
                    secs.push(t0.elapsed().as_secs_f64());
                    let history = data.latents[i].narrow(2, 0, info.latents.start)?;
                    let px = vae.decode(&Tensor::cat(&[&history, &new], 2)?)?;
                    let (f0, f1) = (latent_to_frames(info.latents.start), latent_to_frames(info.latents.end));
                    let generated = px.narrow(2, f0, px.dim(2)? - f0)?.clamp(-1f32, 1f32)?;
                    m.push(mse(&generated, &clip.narrow(2, f0, f1 - f0)?)? as f64);
                }
            }
            let below = m.iter().zip(&m_copy).filter(|(a, b)| a < b).count();
            println!(
                "| {steps} | {:.2} | {below}/{} | {:.3} |",
                10.0 * (4.0 / mean(&m)).log10(),
                m.len(),
                bench::median(&secs)
            );
        }
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
            let req =
                request(first_frame(&clip)?, &clip.prompt, resolution, seconds, schedule.clone(), a.steps, i as u64);
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
                resolution,
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
    // Section times of 3-section forward jobs from the first 2 start frames.
    let mut forward_secs = |pipelined: bool| -> Result<Vec<f64>> {
        let mut secs = Vec::new();
        for (i, &seed) in seeds.iter().take(a.drift_clips.min(2)).enumerate() {
            let clip = clips::clip(seed, &cfg)?;
            let mut req = request(
                first_frame(&clip)?,
                &clip.prompt,
                resolution,
                3.0 * play,
                ScheduleChoice::Geometric,
                a.steps,
                i as u64,
            );
            req.settings.pipeline = pipelined;
            let mut t = Instant::now();
            for s in pipeline.start(&req)? {
                s?;
                secs.push(t.elapsed().as_secs_f64());
                t = Instant::now();
            }
        }
        Ok(secs)
    };
    let one_thread = pool.install(|| forward_secs(true))?;
    // The forward job with its decode on the job's thread (`JobSettings::pipeline` off).
    let serial = forward_secs(false)?;
    println!(
        "forward geometric, decoded on the job's thread (no decoder thread): {:.3} s/section (median of {}), real-time factor {:.2}",
        bench::median(&serial),
        serial.len(),
        bench::median(&serial) / play
    );
    let rtf_1t = bench::median(&one_thread) / play;
    let ttff = bench::median(&first_frame_s);
    println!(
        "forward geometric on a 1-thread pool: {:.3} s/section (median of {}), real-time factor {rtf_1t:.2}",
        bench::median(&one_thread),
        one_thread.len()
    );
    println!("time from a forward job's start to its first frame: {ttff:.3} s (median of {})", first_frame_s.len());

    // 5. End frames: inverted jobs over a whole clip, with its real last frame as the end image
    // and without, against the clip's frames.
    let end_clips = a.clips.min(8);
    let (mut last_with, mut last_without, mut all_with, mut all_without) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, &seed) in seeds.iter().take(end_clips).enumerate() {
        let clip = clips::clip(seed, &cfg)?;
        let last = clip.frames.len() - 1;
        for with_end in [true, false] {
            let mut req = request(
                first_frame(&clip)?,
                &clip.prompt,
                resolution,
                sections as f64 * play,
                ScheduleChoice::InvertedAntiDrifting,
                a.steps,
                i as u64,
            );
            if with_end {
                req.end_image = Some(RgbImage::new(clip.width, clip.height, clip.frames[last].clone())?);
            }
            let video = pipeline.start(&req)?.run_to_end()?;
            if video.len() != clip.frames.len() || (video[0].width, video[0].height) != (clip.width, clip.height) {
                return Err(framepack::Error::Invalid {
                    what: "end frames",
                    reason: "the video does not match the clip's frames".into(),
                });
            }
            let frame_mse = |k: usize| {
                let (a, b) = (&video[k].rgb, &clip.frames[k]);
                a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64
            };
            let whole = (0..video.len()).map(frame_mse).sum::<f64>() / video.len() as f64;
            let (l, w) = if with_end { (&mut last_with, &mut all_with) } else { (&mut last_without, &mut all_without) };
            l.push(frame_mse(last));
            w.push(whole);
        }
    }
    let psnr255 = |m: &[f64]| 10.0 * (255f64.powi(2) / mean(m)).log10();
    let closer = last_with.iter().zip(&last_without).filter(|(a, b)| a < b).count();
    println!(
        "\nend frames: {end_clips} held-out clips, inverted anti-drifting over {} frames, the clip's last frame as the end image or none",
        cfg.frames
    );
    println!("| end image | last frame PSNR | whole video PSNR |");
    println!("|---|---|---|");
    println!("| the clip's last frame | {:.2} | {:.2} |", psnr255(&last_with), psnr255(&all_with));
    println!("| none | {:.2} | {:.2} |", psnr255(&last_without), psnr255(&all_without));
    println!("the end image brought the last frame closer in {closer}/{end_clips} clips");

    // 4. The same section workload in PyTorch.
    let torch_ratio = match (&a.python, &a.taehv_src) {
        (Some(python), Some(src)) => torch_pairs(&a, python, src, &data, &models, window, sections)?,
        _ => {
            println!("\nPyTorch comparison skipped (needs --python PATH --taehv-src DIR)");
            None
        }
    };

    let psnr_of = |m: &[f64]| 10.0 * (4.0 / mean(m)).log10();
    let beats = m_model.iter().zip(&m_copy).filter(|(a, b)| a < b).count() as f64 / m_model.len().max(1) as f64;
    let sharp = |name: &str| {
        let d = &rows.iter().find(|r| r.0 == name).expect("every row").1;
        d.iter().map(|x| x.1.abs()).sum::<f64>() / d.len().max(1) as f64
    };
    let rtf = bench::median(&rows.iter().find(|r| r.0 == "forward geometric").expect("row").2) / play;
    println!(
        "SUMMARY recon_psnr={:.2} next_psnr={:.2} copy_psnr={:.2} beats_copy={beats:.3} rtf={rtf:.3} rtf_1t={rtf_1t:.3} \
         ttff_s={ttff:.3} drift_sharp_inv={:.4} drift_sharp_f1={:.4} drift_sharp_i2v={:.4} torch_ratio={} \
         end_psnr={:.2} end_psnr_none={:.2}",
        psnr_of(&m_recon),
        psnr_of(&m_model),
        psnr_of(&m_copy),
        sharp("inverted anti-drifting"),
        sharp("forward geometric"),
        sharp("naive repeated image-to-video"),
        torch_ratio.map_or("na".to_string(), |r| format!("{r:.3}")),
        psnr255(&last_with),
        psnr255(&last_without),
    );
    Ok(())
}

/// Candle against PyTorch on one forward-geometric section (section 1 of held-out clip 0): the
/// transformer's forwards with Euler updates, then the decode of the start latent and the
/// section's latents. Returns the median of the pairs' ratios candle / PyTorch.
fn torch_pairs(
    a: &Args,
    python: &str,
    taehv_src: &std::path::Path,
    data: &ClipLatents,
    models: &framepack::generator::Models,
    window: usize,
    sections: usize,
) -> Result<Option<f64>> {
    let dev = Device::Cpu;
    let schedule = ContextSchedule::geometric();
    let plan = SectionPlan::new(sections, window, schedule.order)?;
    let b = data.section(0, &schedule, &plan, 1, false)?;
    let (h, w) = (b.x0.dim(3)?, b.x0.dim(4)?);
    let noise = framepack::generator::NoiseRng::new(11).normal_tensor(b.x0.dims(), &dev)?;
    let sigmas = section_sigmas(a.steps, window, h, w)?;
    let timesteps: Vec<f32> = sigmas[..a.steps].iter().map(|&s| framepack::sampling::model_timestep(s)).collect();
    let history = data.latents[0].narrow(2, 0, 1)?;

    let mut inputs = std::collections::HashMap::new();
    inputs.insert("hidden_states".to_string(), noise.clone());
    inputs.insert("sigmas".to_string(), Tensor::new(sigmas.as_slice(), &dev)?);
    inputs.insert("timesteps".to_string(), Tensor::new(timesteps.as_slice(), &dev)?);
    inputs.insert("encoder_hidden_states".to_string(), b.llama.clone());
    inputs.insert("encoder_attention_mask".to_string(), b.mask.clone());
    inputs.insert("pooled_projections".to_string(), b.pooled.clone());
    inputs.insert("image_embeds".to_string(), b.image_embeds.clone());
    inputs.insert("indices_latents".to_string(), b.indices_latents.squeeze(0)?);
    inputs.insert("history".to_string(), history.clone());
    for (g, name) in b.groups.iter().zip(["latents_clean", "latents_history_2x", "latents_history_4x"]) {
        if let Some((lat, idx)) = g {
            inputs.insert(name.to_string(), lat.clone());
            inputs.insert(format!("indices_{name}"), idx.squeeze(0)?);
        }
    }
    let file = std::env::temp_dir().join(format!("nano_torch_inputs_{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&inputs, &file)?;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/nano_torch.py");
    let threads = rayon::current_num_threads().to_string();
    let (bundle, src, inputs_path) =
        (a.bundle.display().to_string(), taehv_src.display().to_string(), file.display().to_string());
    let args = ["--bundle", &bundle, "--taehv-src", &src, "--inputs", &inputs_path, "--threads", &threads];
    let mut torch = match bench::Torch::start(python, &script, &args) {
        Ok(t) => t,
        Err(e) => {
            println!("\nPyTorch comparison skipped: {e}");
            let _ = std::fs::remove_file(&file);
            return Ok(None);
        }
    };
    let (tr, vae) = (&models.transformer, &models.vae);
    let decode_s = std::cell::RefCell::new(Vec::new());
    let candle = || -> Result<f64> {
        let t0 = Instant::now();
        let mut x = noise.clone();
        for (i, &t) in timesteps.iter().enumerate() {
            let t = Tensor::new(&[t], &dev)?;
            let v = tr.forward(&b.inputs(&x, &t))?;
            x = (x + (v * (sigmas[i + 1] - sigmas[i]))?)?;
        }
        let t1 = Instant::now();
        vae.decode(&Tensor::cat(&[&history, &x], 2)?)?;
        decode_s.borrow_mut().push(t1.elapsed().as_secs_f64());
        Ok(t0.elapsed().as_secs_f64())
    };
    let torch_err = |e: String| framepack::Error::Candle(candle_core::Error::Msg(e));
    candle()?;
    println!(
        "\nsection workload ({} forwards + TAEHV decode of {} latents, {w} × {h} latents), candle vs PyTorch {} \
         ({threads} threads each), alternating ABBA",
        a.steps,
        window + 1,
        torch.version
    );
    println!("| run | load (1/5/15 min) | candle s | PyTorch s | candle/PyTorch |");
    println!("|---|---|---|---|---|");
    let (mut cs, mut ts, mut rs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.torch_runs {
        let load = bench::loadavg();
        let (c, t) = if i % 2 == 1 {
            let t = torch.run().map_err(torch_err)?;
            (candle()?, t)
        } else {
            let c = candle()?;
            (c, torch.run().map_err(torch_err)?)
        };
        println!("| {} | {load} | {c:.3} | {t:.3} | {:.3} |", i + 1, c / t);
        cs.push(c);
        ts.push(t);
        rs.push(c / t);
    }
    let ratio = bench::median(&rs);
    println!("| median | {} | {:.3} | {:.3} | {ratio:.3} |", bench::loadavg(), bench::median(&cs), bench::median(&ts));
    let decode = bench::median(&decode_s.borrow());
    println!(
        "candle's decode: {decode:.3} s of {:.3} s ({:.0} %); the rest is the transformer's {} forwards",
        bench::median(&cs),
        100.0 * decode / bench::median(&cs),
        a.steps
    );
    drop(torch);
    let _ = std::fs::remove_file(&file);
    Ok(Some(ratio))
}
