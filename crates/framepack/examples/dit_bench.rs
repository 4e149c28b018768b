//! The CPU performance anchor: one forward pass of the MEDIUM FramePack transformer in f32, the
//! exact workload of the reference's `bench_medium.py` (hidden 512 = 4 heads × 128, 2 dual + 4
//! single blocks, 2 refiner blocks; latents 16 × 9 × 32 × 32, 2 clean 1x, 2 2x and 16 4x history
//! frames, 64 text and 729 image tokens: 3,737 tokens in joint attention).
//!
//! ```text
//! cargo run --release -p framepack --example dit_bench -- [--runs 5] [--threads 2]
//!     [--python PATH] [--reference DIR] [--no-torch] [--breakdown] [--no-prune]
//! ```
//!
//! `--no-prune` makes the last single block compute every token (the ablation of
//! `Transformer::set_prune_last_block`); `FRAMEPACK_CPU_KERNELS_OFF` switches CPU kernels off.
//!
//! Prints the median of `--runs` forwards after one warm-up. When a Python with torch and
//! diffusers is found (`--python`, else `$FRAMEPACK_BENCH_PYTHON`, else `python3`), the PyTorch
//! model of `bench_medium.py` (from `--reference`, default `../shared/reference` beside the
//! checkout) runs in a long-lived child process, and the two alternate in ABBA order so that
//! machine load hits both alike; each pair's ratio candle/PyTorch and the median ratio are
//! printed with the load average. `--breakdown` adds the time between the model's traced stages.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use framepack::models::transformer::{Config, Transformer, TransformerInputs};

#[path = "support/bench.rs"]
mod bench;
use bench::median;

struct Args {
    runs: usize,
    threads: usize,
    python: Option<String>,
    reference: PathBuf,
    torch: bool,
    breakdown: bool,
    prune: bool,
}

fn parse_args() -> Result<Args, String> {
    let default_ref = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference");
    let mut a = Args {
        runs: 5,
        threads: 2,
        python: std::env::var("FRAMEPACK_BENCH_PYTHON").ok(),
        reference: default_ref,
        torch: true,
        breakdown: false,
        prune: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--runs" => a.runs = num(value()?)?.max(1),
            "--threads" => a.threads = num(value()?)?.max(1),
            "--python" => a.python = Some(value()?),
            "--reference" => a.reference = PathBuf::from(value()?),
            "--no-torch" => a.torch = false,
            "--breakdown" => a.breakdown = true,
            "--no-prune" => a.prune = false,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// `MEDIUM_CONFIG` of `bench_medium.py`: the released architecture with 4 heads (hidden 512),
/// 2 dual and 4 single blocks.
fn medium_config() -> Config {
    Config { num_attention_heads: 4, num_layers: 2, num_single_layers: 4, ..Config::framepack_13b() }
}

/// `WORKLOAD` / `make_inputs()` of `bench_medium.py` (random values; only shapes matter).
struct Workload {
    hidden: Tensor,
    timestep: Tensor,
    text: Tensor,
    text_mask: Tensor,
    pooled: Tensor,
    image: Tensor,
    guidance: Tensor,
    idx_latents: Tensor,
    clean: Tensor,
    idx_clean: Tensor,
    h2x: Tensor,
    idx_2x: Tensor,
    h4x: Tensor,
    idx_4x: Tensor,
}

impl Workload {
    fn new(dev: &Device) -> candle_core::Result<Self> {
        let rn = |shape: &[usize]| Tensor::randn(0f32, 1., shape, dev);
        let range = |a: u32, b: u32| Tensor::arange(a, b, dev);
        // arange(38) split [1, 9 (blank), 9, 1, 2, 16].
        Ok(Self {
            hidden: rn(&[1, 16, 9, 32, 32])?,
            timestep: Tensor::new(&[800f32], dev)?,
            text: rn(&[1, 64, 4096])?,
            text_mask: Tensor::ones((1, 64), DType::F32, dev)?,
            pooled: rn(&[1, 768])?,
            image: rn(&[1, 729, 1152])?,
            guidance: Tensor::new(&[10000f32], dev)?,
            idx_latents: range(10, 19)?,
            clean: rn(&[1, 16, 2, 32, 32])?,
            idx_clean: Tensor::new(&[0u32, 19], dev)?,
            h2x: rn(&[1, 16, 2, 32, 32])?,
            idx_2x: range(20, 22)?,
            h4x: rn(&[1, 16, 16, 32, 32])?,
            idx_4x: range(22, 38)?,
        })
    }

    fn inputs(&self) -> TransformerInputs<'_> {
        TransformerInputs {
            hidden_states: &self.hidden,
            timestep: &self.timestep,
            encoder_hidden_states: &self.text,
            encoder_attention_mask: &self.text_mask,
            pooled_projections: &self.pooled,
            image_embeds: Some(&self.image),
            guidance: Some(&self.guidance),
            indices_latents: &self.idx_latents,
            latents_clean: Some(&self.clean),
            indices_latents_clean: Some(&self.idx_clean),
            latents_history_2x: Some(&self.h2x),
            indices_latents_history_2x: Some(&self.idx_2x),
            latents_history_4x: Some(&self.h4x),
            indices_latents_history_4x: Some(&self.idx_4x),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;
    let dev = Device::Cpu;
    let cfg = medium_config();
    let ws = framepack_train::testing::random_weights(2024, 1.0, |vb| Transformer::new(vb, &cfg))?;
    let params: usize = ws.values().map(|t| t.elem_count()).sum();
    let mut model = Transformer::new(VarBuilder::from_tensors(ws, DType::F32, &dev), &cfg)?;
    model.set_prune_last_block(args.prune);
    let work = Workload::new(&dev)?;
    let inputs = work.inputs();

    let mut torch = None;
    if args.torch {
        let python = args.python.clone().unwrap_or_else(|| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bench_medium_torch.py");
        let reference = args.reference.display().to_string();
        let threads = args.threads.to_string();
        match bench::Torch::start(&python, &script, &["--reference", &reference, "--threads", &threads]) {
            Ok(t) => torch = Some(t),
            Err(e) => println!("PyTorch side skipped: {e}"),
        }
    }

    println!(
        "medium DiT forward, f32, {} threads, {params} params, 3737 tokens (2944 image-stream incl. 2304 noisy + 729 SigLIP + 64 text)",
        args.threads
    );
    if let Some(t) = &torch {
        println!("PyTorch {} from {}", t.version, args.reference.display());
    }
    let t0 = Instant::now();
    let out = model.forward(&inputs)?;
    println!("candle warm-up {:.3} s, output {:?}", t0.elapsed().as_secs_f64(), out.dims());
    if let Some(t) = torch.as_mut() {
        println!("PyTorch warm-up {:.3} s", t.run()?);
    }

    let time_candle = || -> framepack::Result<f64> {
        let t0 = Instant::now();
        model.forward(&inputs)?;
        Ok(t0.elapsed().as_secs_f64())
    };
    println!("\n| run | load (1/5/15 min) | candle s | PyTorch s | candle/PyTorch |");
    println!("|---|---|---|---|---|");
    let (mut cs, mut ts, mut rs) = (vec![], vec![], vec![]);
    for i in 0..args.runs {
        let load = bench::loadavg();
        let (c, t) = match torch.as_mut() {
            Some(torch) if i % 2 == 1 => {
                let t = torch.run()?;
                (time_candle()?, Some(t))
            }
            Some(torch) => {
                let c = time_candle()?;
                (c, Some(torch.run()?))
            }
            None => (time_candle()?, None),
        };
        cs.push(c);
        match t {
            Some(t) => {
                ts.push(t);
                rs.push(c / t);
                println!("| {} | {load} | {c:.3} | {t:.3} | {:.3} |", i + 1, c / t);
            }
            None => println!("| {} | {load} | {c:.3} | – | – |", i + 1),
        }
    }
    if ts.is_empty() {
        println!("| median | {} | {:.3} | – | – |", bench::loadavg(), median(&cs));
    } else {
        println!("| median | {} | {:.3} | {:.3} | {:.3} |", bench::loadavg(), median(&cs), median(&ts), median(&rs));
    }

    if args.breakdown {
        let mut marks: Vec<(String, Instant)> = Vec::new();
        let start = Instant::now();
        let mut record = |name: &str, _: &Tensor| {
            if !name.ends_with(".encoder") && !name.starts_with("rope_") {
                marks.push((name.to_string(), Instant::now()));
            }
        };
        model.forward_traced(&inputs, &mut record)?;
        let end = Instant::now();
        println!("\n| stage (time since the previous one) | ms |");
        println!("|---|---|");
        let mut prev = start;
        for (name, at) in &marks {
            println!("| {name} | {:.1} |", (*at - prev).as_secs_f64() * 1e3);
            prev = *at;
        }
        println!("| unpatchify | {:.1} |", (end - prev).as_secs_f64() * 1e3);
        println!("| total | {:.1} |", (end - start).as_secs_f64() * 1e3);
    }
    Ok(())
}
