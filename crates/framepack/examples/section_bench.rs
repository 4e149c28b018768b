//! Constant cost per section: generates a long video through the real [`Generator`] (sampler,
//! packed transformer, soft-append VAE decode) with a small random model and prints, per
//! section, its wall time split into sampling (every transformer call of the section) and
//! decoding, the context tokens the transformer sees, how many of its history slots hold
//! generated latents, and the process's resident memory. The first section decodes fewer latents
//! than the others (there is no earlier section to overlap with), so its total is smaller by
//! design; its sampling cost is the same.
//!
//! ```text
//! cargo run --release -p framepack --example section_bench -- [--sections 20]
//!     [--size 256] [--steps 4] [--schedule geometric,inverted] [--threads 2]
//! ```
//!
//! A one-section job runs first as a warm-up. The summary compares the last section with the
//! first and reports the resident-memory spread over the job.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use framepack::generator::{Conditioning, Generator, JobSettings, Models, NoiseRng, TextConditioning};
use framepack::models::Autoencoder;
use framepack::models::transformer::{Config, Transformer};
use framepack::packing::{ScheduleChoice, Slot};
use framepack_train::testing;

#[path = "support/bench.rs"]
mod bench;
use bench::median;

struct Args {
    sections: usize,
    size: usize,
    steps: usize,
    schedules: Vec<ScheduleChoice>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sections: 20,
        size: 256,
        steps: 4,
        schedules: vec![ScheduleChoice::Geometric, ScheduleChoice::InvertedAntiDrifting],
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--sections" => a.sections = num(value()?)?.max(1),
            "--size" => a.size = num(value()?)?,
            "--steps" => a.steps = num(value()?)?.max(1),
            "--threads" => a.threads = num(value()?)?.max(1),
            "--schedule" => {
                a.schedules = value()?
                    .split(',')
                    .map(|s| s.parse::<ScheduleChoice>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.size == 0 || !a.size.is_multiple_of(16) {
        return Err(format!("--size {} must be a positive multiple of 16", a.size));
    }
    Ok(a)
}

/// Width 128 (2 heads × 64), 2 dual + 2 single blocks, every history embedder.
fn small_config() -> Config {
    Config {
        num_attention_heads: 2,
        attention_head_dim: 64,
        num_layers: 2,
        num_single_layers: 2,
        num_refiner_layers: 1,
        mlp_ratio: 4.0,
        text_embed_dim: 32,
        pooled_projection_dim: 16,
        rope_axes_dim: [16, 24, 24],
        has_image_proj: true,
        image_proj_dim: 32,
        has_clean_x_embedder: true,
        ..Config::default()
    }
}

/// Least-squares slope of `v` against its index.
fn slope(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    if v.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = v.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &y) in v.iter().enumerate() {
        sxy += (i as f64 - mx) * (y - my);
        sxx += (i as f64 - mx).powi(2);
    }
    sxy / sxx
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;
    let dev = Device::Cpu;
    let cfg = small_config();
    let ws = testing::random_weights(11, 1.0, |vb| Transformer::new(vb, &cfg))?;
    let generator = Generator::new(Models {
        transformer: Transformer::new(VarBuilder::from_tensors(ws, DType::F32, &dev), &cfg)?,
        vae: Autoencoder::hunyuan_video(testing::tiny_vae(2, DType::F32, &dev)?, DType::F32),
        tiny_decoder: None,
    });
    let randn = |seed: u64, shape: &[usize]| NoiseRng::new(seed).normal_tensor(shape, &dev);
    let conditioning = || -> framepack::Result<Conditioning> {
        Ok(Conditioning {
            start_image: testing::test_image(args.size, args.size, 3)?,
            end_image: None,
            image_embeds: Some(randn(4, &[1, 16, cfg.image_proj_dim])?),
            text: vec![TextConditioning {
                llama: randn(5, &[1, 8, cfg.text_embed_dim])?,
                pooled: randn(6, &[1, cfg.pooled_projection_dim])?,
            }],
        })
    };
    let window = JobSettings::default().window;
    let seconds_for = |sections: usize| (sections * 4 * window) as f64 / 30.0;
    println!(
        "small random model (width 128, 2 dual + 2 single blocks, tiny VAE), {}x{} px, {} steps, {} threads",
        args.size, args.size, args.steps, args.threads
    );

    for schedule in &args.schedules {
        let settings = |sections| JobSettings {
            seconds: seconds_for(sections),
            steps: args.steps,
            schedule: schedule.clone(),
            teacache: None,
            ..JobSettings::default()
        };
        generator.start(conditioning()?, settings(1))?.run_to_end()?;

        let last_step: Arc<Mutex<Option<Instant>>> = Arc::default();
        let marker = last_step.clone();
        let job = generator.start(conditioning()?, settings(args.sections))?.on_progress(move |p| {
            if p.step == p.total_steps {
                *marker.lock().expect("not poisoned") = Some(Instant::now());
            }
        });
        let (plan, ctx) = (job.plan().clone(), job.schedule().clone());
        let (w, h) = job.frame_size();
        let (lh, lw) = (h / 8, w / 8);
        println!("\n{schedule:?}: {} sections of {} latents, {:?} order", plan.sections, plan.window, plan.order);
        println!(
            "| section | latents | total s | sampling s | decode s | context tokens | total tokens | generated latents in context | RSS GiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        bench::reset_peak();
        let (mut times, mut sampling, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        let mut t0 = Instant::now();
        for section in job {
            let section = section?;
            let end = Instant::now();
            let dt = (end - t0).as_secs_f64();
            let sampled = last_step.lock().expect("not poisoned").map_or(dt, |at| (at - t0).as_secs_f64());
            let layout = ctx.layout(&plan, section.index)?;
            let context: usize = layout.groups.iter().map(|g| g.kernel.tokens(g.slots.len(), lh, lw)).sum();
            let noisy = plan.window * lh.div_ceil(2) * lw.div_ceil(2);
            let generated =
                layout.groups.iter().flat_map(|g| &g.slots).filter(|s| matches!(s, Slot::Latent(_))).count();
            let r = bench::rss_gib();
            println!(
                "| {} | {}..{} | {dt:.3} | {sampled:.3} | {:.3} | {context} | {} | {generated} | {r:.3} |",
                section.index + 1,
                section.latents.start,
                section.latents.end,
                dt - sampled,
                context + noisy
            );
            times.push(dt);
            sampling.push(sampled);
            rss.push(r);
            t0 = end;
        }
        let n = times.len();
        let (lo, hi) = rss.iter().fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let k = (n / 4).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // Sections after the first decode the same number of latents; compare those.
        let later = &times[1.min(n - 1)..];
        let kl = (later.len() / 4).max(1);
        println!(
            "sampling: last {k} / first {k} sections {:.3}, least-squares trend {:+.2} % per section, median {:.3} s",
            mean(&sampling[n - k..]) / mean(&sampling[..k]),
            100.0 * slope(&sampling) / mean(&sampling),
            median(&sampling),
        );
        println!(
            "total (sections 2..): last {kl} / first {kl} {:.3}, trend {:+.2} % per section, median {:.3} s; \
             first section {:.3} s (decodes fewer latents)",
            mean(&later[later.len() - kl..]) / mean(&later[..kl]),
            100.0 * slope(later) / mean(later),
            median(later),
            times[0],
        );
        println!(
            "RSS {lo:.3}..{hi:.3} GiB (first section {:.3}, last {:.3}, trend {:+.2} MiB per section), peak {:.3} GiB",
            rss[0],
            rss[n - 1],
            slope(&rss) * 1024.0,
            bench::peak_gib()
        );
    }
    Ok(())
}
