//! Decode cost of one forward FramePack section (18 latents → 69 frames) with the full
//! HunyuanVideo VAE and with TAEHV, random f32 weights, CPU.
//!
//! ```text
//! cargo run --release -p framepack --example taehv_bench -- \
//!     [--sizes 128x96,320x240,640x608] [--latents 18] [--full-latents 2] [--full-max-pixels 80000]
//! ```
//!
//! TAEHV rows decode all latents with [`StreamingDecoder`] (frame by frame, constant memory: what
//! a generator does) at the released widths (decoder 256/128/64/64) and at a narrow width
//! (64/32/16/16). The full VAE (channels 128/256/512/512, untiled) is timed on `--full-latents`
//! latents (`4n − 3` frames) at sizes up to `--full-max-pixels` and its per-frame time scaled to
//! the section's frame count; larger sizes are estimated from the largest measured one by pixel
//! count (its convolutions cost the same per pixel), and marked so. Peak RSS is the process's
//! high-water mark during the row; it includes the weights of all three models (printed first).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use framepack::models::taehv::{self, StreamingDecoder, Taehv};
use framepack::models::vae::{AutoencoderKLHunyuanVideo, Config as VaeConfig, Tiling};
use framepack_train::testing::random_weights;

#[path = "support/bench.rs"]
mod bench;
use bench::{peak_gib, reset_peak};

struct Args {
    sizes: Vec<(usize, usize)>,
    latents: usize,
    full_latents: usize,
    full_max_pixels: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a =
        Args { sizes: vec![(128, 96), (320, 240), (640, 608)], latents: 18, full_latents: 2, full_max_pixels: 80_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = value()?
                    .split(',')
                    .map(|s| {
                        let (w, h) = s.split_once('x').ok_or(format!("size {s} is not WxH"))?;
                        Ok((num(w)?, num(h)?))
                    })
                    .collect::<Result<_, String>>()?
            }
            "--latents" => a.latents = num(&value()?)?,
            "--full-latents" => a.full_latents = num(&value()?)?,
            "--full-max-pixels" => a.full_max_pixels = num(&value()?)?,
            "-h" | "--help" => {
                println!(
                    "options: --sizes 128x96,320x240,640x608 --latents 18 --full-latents 2 --full-max-pixels 80000"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.sizes.iter().any(|&(w, h)| w % 8 != 0 || h % 8 != 0 || w == 0 || h == 0) {
        return Err("sizes must be positive multiples of 8".into());
    }
    if a.latents == 0 || a.full_latents == 0 {
        return Err("latent counts must be positive".into());
    }
    Ok(a)
}

fn latents(n: usize, h: usize, w: usize) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, 1.0, (1, n, 16, h, w), &Device::Cpu)
}

/// Decodes every latent frame by frame; returns (seconds, frames, seconds to the first frame).
fn time_taehv(model: &Taehv, z: &Tensor) -> framepack::Result<(f64, usize, f64)> {
    let t0 = Instant::now();
    let mut stream = StreamingDecoder::new(model);
    stream.push(z)?;
    let (mut frames, mut first) = (0, 0.0);
    while let Some(f) = stream.next_frame()? {
        if frames == 0 {
            first = t0.elapsed().as_secs_f64();
        }
        frames += 1;
        drop(f);
    }
    Ok((t0.elapsed().as_secs_f64(), frames, first))
}

struct Row {
    size: (usize, usize),
    model: &'static str,
    total_s: f64,
    frames: usize,
    first_s: Option<f64>,
    peak: Option<f64>,
    note: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("taehv_bench: {e}"))?;
    let dev = Device::Cpu;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "TAEHV vs full VAE decode, {} latents per section, random f32 weights, CPU, {} rayon threads, load {}",
        args.latents,
        candle_core::utils::get_num_threads(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let default_cfg = taehv::Config::default();
    let narrow_cfg = taehv::Config { encoder_width: 32, decoder_widths: [64, 32, 16, 16], ..taehv::Config::default() };
    let build = |cfg: &taehv::Config, seed| -> Result<Taehv, Box<dyn std::error::Error>> {
        let w = random_weights(seed, 1.0, |vb| Taehv::new(vb, cfg))?;
        Ok(Taehv::new(VarBuilder::from_tensors(w, DType::F32, &dev), cfg)?)
    };
    let tiny_default = build(&default_cfg, 1)?;
    let tiny_narrow = build(&narrow_cfg, 2)?;
    let vcfg = VaeConfig::hunyuan_video();
    let vw = random_weights(3, 1.0, |vb| AutoencoderKLHunyuanVideo::new(vb, &vcfg))?;
    let vae = AutoencoderKLHunyuanVideo::new(VarBuilder::from_tensors(vw, DType::F32, &dev), &vcfg)?
        .with_tiling(Tiling::direct())?;
    let section_frames = default_cfg.decoded_frames(args.latents);
    println!("resident with all three models' weights: {:.2} GiB", bench::rss_gib());

    // Warm-up (thread pool, allocator).
    time_taehv(&tiny_narrow, &latents(2, 4, 4)?)?;

    let mut rows = Vec::new();
    let mut full_per_pixel_frame: Option<(f64, (usize, usize))> = None;
    for &(w, h) in &args.sizes {
        let (lh, lw) = (h / 8, w / 8);
        let z = latents(args.latents, lh, lw)?;
        for (name, model) in [("TAEHV 256/128/64/64", &tiny_default), ("TAEHV 64/32/16/16", &tiny_narrow)] {
            reset_peak();
            let (s, frames, first) = time_taehv(model, &z)?;
            println!("  {w}x{h} {name}: {s:.3} s, {frames} frames");
            rows.push(Row {
                size: (w, h),
                model: name,
                total_s: s,
                frames,
                first_s: Some(first),
                peak: Some(peak_gib()),
                note: "measured".into(),
            });
        }
        if w * h <= args.full_max_pixels {
            let n = args.full_latents;
            let zf = latents(n, lh, lw)?.permute((0, 2, 1, 3, 4))?.contiguous()?;
            reset_peak();
            let t0 = Instant::now();
            let out = vae.decode(&zf)?;
            let s = t0.elapsed().as_secs_f64();
            let frames = out.dim(2)?;
            let per_frame = s / frames as f64;
            println!("  {w}x{h} full VAE: {s:.3} s for {frames} frames");
            full_per_pixel_frame = Some((per_frame / (w * h) as f64, (w, h)));
            rows.push(Row {
                size: (w, h),
                model: "full VAE 128/256/512/512",
                total_s: per_frame * section_frames as f64,
                frames: section_frames,
                first_s: None,
                peak: Some(peak_gib()),
                note: format!("{frames} frames measured, scaled"),
            });
        } else if let Some((pp, (mw, mh))) = full_per_pixel_frame {
            rows.push(Row {
                size: (w, h),
                model: "full VAE 128/256/512/512",
                total_s: pp * (w * h) as f64 * section_frames as f64,
                frames: section_frames,
                first_s: None,
                peak: None,
                note: format!("est. from {mw}x{mh} by pixels"),
            });
        }
    }

    println!();
    println!("| size | decoder | total ms | ms/frame | first frame ms | peak RSS GiB | full VAE / this | how |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let full = rows.iter().find(|f| f.size == r.size && f.model.starts_with("full"));
        let ratio = full.map(|f| f.total_s / r.total_s).map_or("—".into(), |x| format!("{x:.1}×"));
        println!(
            "| {}×{} | {} | {:.0} | {:.2} | {} | {} | {} | {} |",
            r.size.0,
            r.size.1,
            r.model,
            r.total_s * 1e3,
            r.total_s * 1e3 / r.frames as f64,
            r.first_s.map_or("—".into(), |s| format!("{:.1}", s * 1e3)),
            r.peak.map_or("—".into(), |p| format!("{p:.2}")),
            ratio,
            r.note
        );
    }
    Ok(())
}
