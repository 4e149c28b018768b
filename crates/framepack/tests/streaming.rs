//! Low-VRAM block streaming: memory plans for a budget, and streamed models that generate
//! exactly what the resident model generates.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use framepack::Error;
use framepack::generator::{Conditioning, Generator, JobSettings, Models, NoiseRng, TextConditioning};
use framepack::models::Autoencoder;
use framepack::models::transformer::{Config, MemoryPlan, Residency, Transformer};
use framepack::packing::ScheduleChoice;
use framepack_train::testing;

fn weights_file(name: &str, cfg: &Config) -> PathBuf {
    let path = std::env::temp_dir().join(format!("framepack-test-{}-{name}.safetensors", std::process::id()));
    let ws = testing::random_weights(3, 1.0, |vb| Transformer::new(vb, cfg)).unwrap();
    testing::save_safetensors(&ws, &path).unwrap();
    path
}

fn tiny_config() -> Config {
    Config { num_layers: 2, num_single_layers: 3, ..testing::tiny_transformer_config() }
}

fn streamed(budget_bytes: u64) -> Residency {
    Residency::Streamed { budget_bytes }
}

/// Latents of every section of a two-section job with TeaCache, which reads block 0 twice on
/// computed steps.
fn generate(transformer: Transformer) -> Vec<Tensor> {
    let dev = Device::Cpu;
    let generator = Generator::new(Models {
        transformer,
        vae: Autoencoder::hunyuan_video(testing::tiny_vae(2, DType::F32, &dev).unwrap(), DType::F32),
        tiny_decoder: None,
    });
    let randn = |seed, shape: &[usize]| NoiseRng::new(seed).normal_tensor(shape, &dev).unwrap();
    let cond = Conditioning {
        start_image: testing::test_image(32, 32, 3).unwrap(),
        end_image: None,
        image_embeds: Some(randn(4, &[1, 4, 8])),
        text: vec![TextConditioning { llama: randn(5, &[1, 5, 16]), pooled: randn(6, &[1, 8]) }],
    };
    let settings = JobSettings {
        seconds: 2.0,
        window: 3,
        steps: 5,
        teacache: Some(0.01),
        schedule: ScheduleChoice::Geometric,
        ..JobSettings::default()
    };
    generator.start(cond, settings).unwrap().map(|s| s.unwrap().latent_tensor).collect()
}

#[test]
fn streamed_models_generate_what_the_resident_model_generates() {
    let cfg = tiny_config();
    let path = weights_file("stream", &cfg);
    let resident = Transformer::load(&[&path], &cfg, DType::F32, &Device::Cpu, Residency::Resident).unwrap();
    let want = generate(resident);

    let all = MemoryPlan::new(&cfg, DType::F32, Residency::Resident).unwrap();
    assert_eq!(all.resident_blocks, 5);
    let slot = *all.block_bytes.iter().max().unwrap();
    let minimum = all.fixed_bytes + 2 * slot;
    for (budget, resident_blocks) in [(minimum, 0..1), (minimum + all.block_bytes[0], 1..5), (all.total_bytes(), 5..6)]
    {
        let plan = MemoryPlan::new(&cfg, DType::F32, streamed(budget)).unwrap();
        assert!(resident_blocks.contains(&plan.resident_blocks), "budget {budget}: {plan:?}");
        assert!(plan.peak_bytes() <= budget);
        let model = Transformer::load(&[&path], &cfg, DType::F32, &Device::Cpu, streamed(budget)).unwrap();
        let got = generate(model);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let diff =
                (g - w).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "budget {budget}: streamed latents differ");
        }
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_budget_below_the_streaming_minimum_is_refused() {
    let cfg = tiny_config();
    let all = MemoryPlan::new(&cfg, DType::F32, Residency::Resident).unwrap();
    let minimum = all.fixed_bytes + 2 * all.block_bytes.iter().max().unwrap();
    let err = MemoryPlan::new(&cfg, DType::F32, streamed(minimum - 1)).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert!(err.to_string().contains("memory budget"), "{err}");
    let path = weights_file("small-budget", &cfg);
    let err = Transformer::load(&[&path], &cfg, DType::F32, &Device::Cpu, streamed(minimum - 1)).err().unwrap();
    assert!(err.to_string().contains("memory budget"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn streamed_loading_checks_every_block_up_front() {
    let cfg = tiny_config();
    let path = weights_file("bad-block", &cfg);
    let mut ws = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let name = "single_transformer_blocks.2.proj_out.weight";
    ws.insert(name.into(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
    testing::save_safetensors(&ws, &path).unwrap();
    let err = Transformer::load(&[&path], &cfg, DType::F32, &Device::Cpu, streamed(0)).err().unwrap().to_string();
    // The budget is checked after the weights: the bad tensor is named first.
    let err = if err.contains("memory budget") {
        let plan = MemoryPlan::new(&cfg, DType::F32, Residency::Resident).unwrap();
        Transformer::load(&[&path], &cfg, DType::F32, &Device::Cpu, streamed(plan.peak_bytes()))
            .err()
            .unwrap()
            .to_string()
    } else {
        err
    };
    assert!(err.contains(name) && err.contains("[3, 3]"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_13b_model_streams_within_6_gib() {
    let cfg = Config::framepack_13b();
    let all = MemoryPlan::new(&cfg, DType::BF16, Residency::Resident).unwrap();
    assert_eq!(all.block_bytes.len(), 60);
    // 12,874,314,816 parameters, bf16 except the f32 q/k norm weights and output projection.
    assert!((25_748_000_000..25_760_000_000).contains(&all.total_bytes()), "{}", all.total_bytes());
    let budget = 6u64 << 30;
    let plan = MemoryPlan::new(&cfg, DType::BF16, streamed(budget)).unwrap();
    println!(
        "13B bf16 in 6 GiB: {} of 60 blocks resident, fixed {:.2} GiB, peak {:.2} GiB of {:.2} GiB total",
        plan.resident_blocks,
        plan.fixed_bytes as f64 / (1u64 << 30) as f64,
        plan.peak_bytes() as f64 / (1u64 << 30) as f64,
        plan.total_bytes() as f64 / (1u64 << 30) as f64
    );
    assert!(plan.resident_blocks > 0 && plan.resident_blocks < 60);
    assert!(plan.peak_bytes() <= budget);
}
