//! Low-VRAM block streaming on the CPU: resident memory of a transformer streamed from its
//! memory-mapped checkpoint under several budgets, against the same model fully resident.
//!
//! ```text
//! cargo run --release -p framepack --example stream_bench -- [--dual 2] [--single 4]
//!     [--budgets 0,3,5] [--dir /var/tmp]
//! ```
//!
//! The model has the real 13B width (24 heads × 128, MLP 12288, 4096-d text, SigLIP projection)
//! with `--dual`/`--single` blocks, random f32 weights written once to `--dir`. Each placement
//! (fully resident, then every `--budgets` value in GiB; 0 = the smallest budget that streams
//! every block) runs in its own process: load, then one forward at 64×64 px (9 latents of 8×8,
//! 16 text and 16 image tokens). Reported: the memory plan; anonymous resident memory (the
//! process's own copies of weights and activations, what a GPU's memory would hold) after
//! loading and at its peak during the forward, sampled every 2 ms; the kernel's peak of all
//! resident memory, which also counts the pages of the mapped checkpoint (clean page cache the
//! kernel can drop); the forward's wall time and a checksum of its output (the same for every
//! placement).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use framepack::generator::NoiseRng;
use framepack::models::transformer::{Config, MemoryPlan, Residency, Transformer, TransformerInputs};

#[path = "support/bench.rs"]
mod bench;

const GIB: f64 = (1u64 << 30) as f64;

fn config(dual: usize, single: usize) -> Config {
    Config { num_layers: dual, num_single_layers: single, ..Config::framepack_13b() }
}

fn residency(budget_gib: Option<f64>) -> Residency {
    match budget_gib {
        None => Residency::Resident,
        Some(g) => Residency::Streamed { budget_bytes: (g * GIB) as u64 },
    }
}

/// One placement: load, forward, print a table row.
fn child(path: &Path, cfg: &Config, budget_gib: Option<f64>) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let r = residency(budget_gib);
    let plan = MemoryPlan::new(cfg, DType::F32, r)?;
    let t0 = Instant::now();
    let model = Transformer::load(&[path], cfg, DType::F32, &dev, r)?;
    let load_s = t0.elapsed().as_secs_f64();
    let anon_loaded = bench::anon_gib();
    let rn = |shape: &[usize]| NoiseRng::new(shape.iter().product::<usize>() as u64).normal_tensor(shape, &dev);
    let (hidden, text, pooled, image) =
        (rn(&[1, 16, 9, 8, 8])?, rn(&[1, 16, 4096])?, rn(&[1, 768])?, rn(&[1, 16, 1152])?);
    let (t, g) = (Tensor::new(&[900f32], &dev)?, Tensor::new(&[10000f32], &dev)?);
    let mask = Tensor::ones((1, 16), DType::F32, &dev)?;
    let idx = Tensor::arange(0u32, 9, &dev)?;
    let inputs = TransformerInputs {
        image_embeds: Some(&image),
        guidance: Some(&g),
        ..TransformerInputs::new(&hidden, &t, &text, &mask, &pooled, &idx)
    };
    bench::reset_peak();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(bench::anon_gib());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        })
    };
    let t0 = Instant::now();
    let out = model.forward(&inputs)?;
    let fwd_s = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let anon_peak = sampler.join().unwrap_or(f64::NAN);
    let checksum = out.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let label = match budget_gib {
        None => "resident".to_string(),
        Some(g) => format!("streamed, budget {g:.2} GiB"),
    };
    println!(
        "| {label} | {}/{} | {:.2} | {:.2} | {anon_loaded:.2} | {anon_peak:.2} | {:.2} | {:.2} | {load_s:.1} | {fwd_s:.2} | {checksum:.6e} |",
        plan.resident_blocks,
        plan.block_bytes.len(),
        plan.resident_bytes() as f64 / GIB,
        plan.peak_bytes() as f64 / GIB,
        bench::peak_gib(),
        bench::file_gib(),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dual, mut single, mut dir) = (2usize, 4usize, PathBuf::from("/var/tmp"));
    let mut budgets: Vec<f64> = vec![0.0, 4.0];
    let mut child_budget: Option<Option<f64>> = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dual" => dual = value()?.parse()?,
            "--single" => single = value()?.parse()?,
            "--dir" => dir = PathBuf::from(value()?),
            "--budgets" => budgets = value()?.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?,
            "--child" => {
                let v = value()?;
                child_budget = Some(if v == "resident" { None } else { Some(v.parse()?) });
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cfg = config(dual, single);
    let path = dir.join(format!("framepack-stream-bench-{dual}d{single}s.safetensors"));
    if let Some(budget) = child_budget {
        return child(&path, &cfg, budget);
    }

    let all = MemoryPlan::new(&cfg, DType::F32, Residency::Resident)?;
    if !path.exists() {
        let t0 = Instant::now();
        let ws = framepack_train::testing::random_weights(5, 1.0, |vb| Transformer::new(vb, &cfg))?;
        framepack_train::testing::save_safetensors(&ws, &path)?;
        println!(
            "wrote {} ({:.2} GiB) in {:.0} s",
            path.display(),
            all.total_bytes() as f64 / GIB,
            t0.elapsed().as_secs_f64()
        );
    }
    let minimum = (all.fixed_bytes + 2 * all.block_bytes.iter().max().copied().unwrap_or(0)) as f64 / GIB;
    println!(
        "13B-width model, {dual} dual + {single} single blocks, f32: {:.2} GiB of weights ({:.2} GiB outside the blocks, \
         blocks {:.2}–{:.2} GiB); smallest streaming budget {minimum:.2} GiB",
        all.total_bytes() as f64 / GIB,
        all.fixed_bytes as f64 / GIB,
        all.block_bytes.iter().copied().min().unwrap_or(0) as f64 / GIB,
        all.block_bytes.iter().copied().max().unwrap_or(0) as f64 / GIB,
    );
    println!(
        "\n| placement | resident blocks | planned resident GiB | planned peak GiB | RssAnon after load GiB | peak RssAnon in forward GiB | peak RSS (anon + mapped file) GiB | RssFile GiB | load s | forward s | Σout² |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe()?;
    let mut runs = vec!["resident".to_string()];
    runs.extend(budgets.iter().map(|&b| format!("{}", if b == 0.0 { minimum + 1e-3 } else { b })));
    for r in runs {
        let status = Command::new(&exe)
            .args(["--dual", &dual.to_string(), "--single", &single.to_string(), "--child", &r])
            .arg("--dir")
            .arg(&dir)
            .status()?;
        if !status.success() {
            println!("| {r} | failed ({status}) |");
        }
    }
    Ok(())
}
