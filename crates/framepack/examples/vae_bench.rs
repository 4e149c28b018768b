//! Decode cost of the real-size HunyuanVideo VAE (channels 128/256/512/512, random weights, f32,
//! CPU) for FramePack sections.
//!
//! ```text
//! cargo run --release -p framepack --example vae_bench -- [--frames 9,18] [--size 64]
//!     [--tile 256] [--no-spatial] [--no-framewise] [--full] [--unit-frames 5] [--unit-size 32]
//!     [--estimate-size 64] [--encode-size 512]
//! ```
//!
//! A FramePack section decodes `2W = 18` latents (9 on the first section) at 64×64 latents
//! (512×512 px). With the default tiling that is a grid of decodes of at most 5 latents × 32×32
//! latents (one "unit" tile, 17 frames × 256² px). The benchmark always times one unit tile, then
//! estimates each requested section from the tile grid the tiled decoder runs, scaling the unit's
//! time by the FLOPs of every tile (convolutions + mid-block attention, counted analytically).
//! `--full` also runs the whole section decodes and reports measured time and peak memory next
//! to the estimate. When `--size` differs from `--estimate-size`, estimate-only rows for FramePack's
//! 9 and 18 latents at `--estimate-size` are added. `--encode-size N` also times the encode of one
//! N×N image (FramePack's start frame), untiled.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use framepack::models::vae::{AutoencoderKLHunyuanVideo, Config, Tiling};
use framepack::weights;

#[path = "support/bench.rs"]
mod bench;
use bench::{peak_gib, reset_peak, rss_gib};

struct Args {
    frames: Vec<usize>,
    size: usize,
    tile: usize,
    spatial: bool,
    framewise: bool,
    full: bool,
    unit_frames: usize,
    unit_size: usize,
    estimate_size: usize,
    encode_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        frames: vec![9, 18],
        size: 64,
        tile: 256,
        spatial: true,
        framewise: true,
        full: false,
        unit_frames: 5,
        unit_size: 32,
        estimate_size: 64,
        encode_size: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--frames" => a.frames = value()?.split(',').map(|s| num(s.to_string())).collect::<Result<_, _>>()?,
            "--size" => a.size = num(value()?)?,
            "--tile" => a.tile = num(value()?)?,
            "--unit-frames" => a.unit_frames = num(value()?)?,
            "--unit-size" => a.unit_size = num(value()?)?,
            "--estimate-size" => a.estimate_size = num(value()?)?,
            "--encode-size" => a.encode_size = num(value()?)?,
            "--no-spatial" => a.spatial = false,
            "--no-framewise" => a.framewise = false,
            "--full" => a.full = true,
            "-h" | "--help" => {
                println!(
                    "options: --frames 9,18 --size 64 --tile 256 --no-spatial --no-framewise --full --unit-frames 5 --unit-size 32"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// Random real-size weights: N(0, 1/fan_in) matrices, norm scales ≈ 1, small biases.
fn random_vae(cfg: &Config, dev: &Device) -> candle_core::Result<AutoencoderKLHunyuanVideo> {
    let shapes = weights::requested_shapes(|vb| AutoencoderKLHunyuanVideo::new(vb, cfg))
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut ws = HashMap::new();
    for (name, shape) in shapes {
        let t = if shape.len() > 1 {
            let fan_in = shape[1..].iter().product::<usize>() as f64;
            Tensor::randn(0f32, (1.0 / fan_in).sqrt() as f32, shape.as_slice(), dev)?
        } else if name.ends_with("weight") {
            (Tensor::randn(0f32, 0.1, shape.as_slice(), dev)? + 1.0)?
        } else {
            Tensor::randn(0f32, 0.1, shape.as_slice(), dev)?
        };
        ws.insert(name, t);
    }
    AutoencoderKLHunyuanVideo::new(VarBuilder::from_tensors(ws, DType::F32, dev), cfg)
}

/// Decodes the tiled decoder runs for `t` latents of `s×s`: (latents, latent h, latent w) each.
fn tile_grid(t: usize, s: usize, tiling: &Tiling) -> Vec<(usize, usize, usize)> {
    let (lat_min, lat_stride) = (tiling.sample_min_num_frames / 4, tiling.sample_stride_num_frames / 4);
    let temporal: Vec<usize> = if tiling.framewise_decoding && t > lat_min {
        (0..t).step_by(lat_stride).map(|i| (lat_min + 1).min(t - i)).filter(|&n| n > 1).collect()
    } else {
        vec![t]
    };
    let (tile, stride) = (tiling.sample_min_height / 8, tiling.sample_stride_height / 8);
    let spatial: Vec<usize> =
        if tiling.spatial && s > tile { (0..s).step_by(stride).map(|i| tile.min(s - i)).collect() } else { vec![s] };
    let mut out = Vec::new();
    for &n in &temporal {
        for &h in &spatial {
            for &w in &spatial {
                out.push((n, h, w));
            }
        }
    }
    out
}

/// Multiply-add FLOPs (×2) of the real decoder on `t` latents of `h×w`: convolutions, the
/// mid-block attention (block-causal, so frame `f` attends to `f + 1` frames) and its linears.
fn decoder_flops(t: usize, h: usize, w: usize) -> f64 {
    let conv = |cin: usize, cout: usize, k: usize, (t, h, w): (usize, usize, usize)| {
        2.0 * (k * k * k * cin * cout * t * h * w) as f64
    };
    let mut dims = (t, h, w);
    let mut f = conv(16, 16, 1, dims) + conv(16, 512, 3, dims);
    let hw = (h * w) as f64;
    let attn = 4.0 * 512.0 * hw * hw * (t * (t + 1) / 2) as f64 + 4.0 * 2.0 * (t as f64 * hw) * 512.0 * 512.0;
    f += 4.0 * conv(512, 512, 3, dims) + attn;
    let chans = [512, 512, 256, 128];
    let factors = [(2, 2), (2, 2), (1, 2), (1, 1)];
    let mut prev = 512;
    for (i, &c) in chans.iter().enumerate() {
        for r in 0..3 {
            let cin = if r == 0 { prev } else { c };
            f += conv(cin, c, 3, dims) + conv(c, c, 3, dims);
            if cin != c {
                f += conv(cin, c, 1, dims);
            }
        }
        let (ft, fs) = factors[i];
        if (ft, fs) != (1, 1) {
            dims = (1 + (dims.0 - 1) * ft, dims.1 * fs, dims.2 * fs);
            f += conv(c, c, 3, dims);
        }
        prev = c;
    }
    f + conv(128, 3, 3, dims)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dev = Device::Cpu;
    println!(
        "HunyuanVideo VAE decode benchmark: real channels (128,256,512,512), random f32 weights, CPU, {} rayon threads",
        candle_core::utils::get_num_threads()
    );
    let t0 = Instant::now();
    let mut vae = random_vae(&Config::hunyuan_video(), &dev)?;
    println!("built random weights in {:.1}s, RSS {:.2} GiB", t0.elapsed().as_secs_f64(), rss_gib());

    let tiling = Tiling {
        spatial: args.spatial,
        framewise_decoding: args.framewise,
        sample_min_height: args.tile,
        sample_min_width: args.tile,
        sample_stride_height: args.tile * 3 / 4,
        sample_stride_width: args.tile * 3 / 4,
        ..Tiling::default()
    };

    if args.encode_size > 0 {
        vae.set_tiling(Tiling::direct())?;
        let x = Tensor::randn(0f32, 0.5, (1, 3, 1, args.encode_size, args.encode_size), &dev)?.tanh()?;
        reset_peak();
        let base = rss_gib();
        let t = Instant::now();
        let z = vae.encode(&x)?.mean()?;
        println!(
            "encode 1 frame {0}×{0} px → {1:?} in {2:.1}s, peak +{3:.2} GiB over the weights",
            args.encode_size,
            z.dims(),
            t.elapsed().as_secs_f64(),
            peak_gib() - base
        );
    }

    // One unit tile, decoded without tiling.
    vae.set_tiling(Tiling::direct())?;
    let z = Tensor::randn(0f32, 1.0, (1, 16, args.unit_frames, args.unit_size, args.unit_size), &dev)?;
    reset_peak();
    let base = rss_gib();
    let t = Instant::now();
    let out = vae.decode(&z)?;
    let unit_s = t.elapsed().as_secs_f64();
    let unit_peak = peak_gib() - base;
    println!(
        "unit tile: {} latents × {}² → {:?} in {unit_s:.1}s, peak +{unit_peak:.2} GiB over the weights",
        args.unit_frames,
        args.unit_size,
        out.dims()
    );
    drop(out);
    let unit_flops = decoder_flops(args.unit_frames, args.unit_size, args.unit_size);
    println!("unit tile: {:.1} TFLOP, {:.1} GFLOP/s", unit_flops / 1e12, unit_flops / unit_s / 1e9);

    vae.set_tiling(tiling)?;
    let mut rows = Vec::new();
    let mut jobs: Vec<(usize, usize, bool)> = args.frames.iter().map(|&f| (f, args.size, args.full)).collect();
    if args.estimate_size != args.size {
        jobs.extend([(9, args.estimate_size, false), (18, args.estimate_size, false)]);
    }
    for (frames, size, run) in jobs {
        let grid = tile_grid(frames, size, &tiling);
        let flops = grid.iter().map(|&(n, h, w)| decoder_flops(n, h, w)).sum::<f64>();
        let est = flops / unit_flops * unit_s;
        let (measured, peak) = if run {
            let z = Tensor::randn(0f32, 1.0, (1, 16, frames, size, size), &dev)?;
            reset_peak();
            let base = rss_gib();
            let t = Instant::now();
            let out = vae.decode(&z)?;
            let s = t.elapsed().as_secs_f64();
            println!("section {frames} latents → {:?} in {s:.1}s", out.dims());
            (Some(s), Some(peak_gib() - base))
        } else {
            (None, None)
        };
        rows.push((frames, size, grid.len(), flops, est, measured, peak));
    }

    println!();
    println!(
        "| latents | frames out | size px | tiling | tile decodes | TFLOP | est. time (FLOP-scaled from unit) | measured time | peak mem over weights |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} (unit) | {} | {} | none | 1 | {:.1} | – | {unit_s:.1} s | {unit_peak:.2} GiB |",
        args.unit_frames,
        4 * args.unit_frames - 3,
        args.unit_size * 8,
        unit_flops / 1e12
    );
    let mode = format!(
        "{}{}",
        if args.framewise { "framewise" } else { "" },
        if args.spatial { format!(" + spatial {}px", args.tile) } else { String::new() }
    );
    for (frames, size, tiles, flops, est, measured, peak) in rows {
        let fmt = |v: Option<f64>, unit: &str| v.map_or("not run".to_string(), |v| format!("{v:.1} {unit}"));
        println!(
            "| {frames} | {} | {} | {mode} | {tiles} | {:.1} | {:.0} s ({:.1} min) | {} | {} |",
            4 * frames - 3,
            size * 8,
            flops / 1e12,
            est,
            est / 60.0,
            fmt(measured, "s"),
            fmt(peak, "GiB")
        );
    }
    println!("\nweights: {:.2} GiB f32 (246,478,803 parameters)", 246_478_803.0 * 4.0 / (1u64 << 30) as f64);
    Ok(())
}
