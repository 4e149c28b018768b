//! The whole pipeline on a tiny random bundle written by the test: image preprocessing, SigLIP,
//! prompt encoding with the cache, both loops, determinism and a clear error for a missing file.

use std::path::PathBuf;

use candle_core::{DType, Device};
use framepack::bundle::{BundlePart, BundlePaths};
use framepack::generator::{Frame, JobSettings};
use framepack::packing::ScheduleChoice;
use framepack::pipeline::{Pipeline, Request};
use framepack::preprocess::RgbImage;
use framepack::{BundleError, Error};
use framepack_train::testing;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image(width: usize, height: usize, shift: usize) -> RgbImage {
    let data = (0..width * height * 3).map(|i| ((i * 7 + shift * 31) % 251) as u8).collect();
    RgbImage::new(width, height, data).unwrap()
}

fn request(schedule: ScheduleChoice, prompt: &str) -> Request {
    Request {
        image: image(48, 40, 0),
        end_image: None,
        prompt: prompt.into(),
        resolution: 32,
        settings: JobSettings { seconds: 2.4, steps: 3, schedule, ..JobSettings::default() },
    }
}

fn video(p: &mut Pipeline, r: &Request) -> Vec<Frame> {
    p.start(r).unwrap().run_to_end().unwrap()
}

#[test]
fn tiny_bundle_runs_end_to_end_for_both_loops() {
    let dir = temp_dir("pipeline");
    let paths = testing::write_tiny_bundle(&dir, 21).unwrap();
    let mut p = Pipeline::load(&paths, &Device::Cpu, DType::F32).unwrap();
    let prompt = "[0s: a cat sits on the grass] [1.2s: the cat jumps]";
    for (k, schedule) in [ScheduleChoice::InvertedAntiDrifting, ScheduleChoice::Geometric].into_iter().enumerate() {
        let r = request(schedule.clone(), prompt);
        let images = p.prepare_images(&r, &r.plan().unwrap()).unwrap();
        // 48×40 → the 640-class bucket nearest in aspect, scaled to 32: 32×32 here.
        assert_eq!((images.start.width(), images.start.height()), (32, 32));
        let a = video(&mut p, &r);
        assert_eq!(a.len(), 36 * 2 + 1, "{schedule:?}");
        assert!(a.iter().all(|f| (f.width, f.height) == (32, 32)));
        // Two prompts for two sections, encoded once and cached by text (the second loop reuses
        // them and the third prompt of the first loop).
        assert!(p.prompt_cache().get("a cat sits on the grass").is_some());
        assert!(p.prompt_cache().get("the cat jumps").is_some());
        assert_eq!(p.prompt_cache().len(), if k == 0 { 2 } else { 3 });
        let b = video(&mut p, &r);
        assert!(a == b, "{schedule:?}: same request, different frames");
        let mut other = r.clone();
        other.prompt = "a dog runs".into();
        assert!(video(&mut p, &other) != a);
        assert_eq!(p.prompt_cache().len(), 3);
        assert!(p.prompt_cache().get("a dog runs").is_some());
        let mut ended = r.clone();
        ended.end_image = Some(image(60, 50, 5));
        if schedule == ScheduleChoice::Geometric {
            // F1's context never looks past the window: an end frame is refused, not ignored.
            assert!(matches!(p.start(&ended), Err(Error::Invalid { what: "end image", .. })));
        } else {
            let e = video(&mut p, &ended);
            assert_eq!(e.len(), a.len());
            assert!(e != a);
        }
    }
    // A fresh pipeline (fresh cache, reloaded weights) reproduces the video bit for bit.
    let r = request(ScheduleChoice::Geometric, prompt);
    let first = video(&mut p, &r);
    let mut fresh = Pipeline::load(&BundlePaths::from_dir(&dir), &Device::Cpu, DType::F32).unwrap();
    assert!(video(&mut fresh, &r) == first);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_tokenizer_is_one_clear_error() {
    let dir = temp_dir("pipeline-missing");
    let paths = testing::write_tiny_bundle(&dir, 22).unwrap();
    std::fs::remove_file(dir.join("tokenizer_2/tokenizer.json")).unwrap();
    let err = Pipeline::load(&paths, &Device::Cpu, DType::F32).err().expect("must fail");
    let line = err.to_string();
    assert!(matches!(err, Error::Bundle(BundleError::Missing { part: BundlePart::Tokenizer2, .. })), "{line}");
    assert!(line.contains("tokenizer_2") && line.contains("tokenizer.json") && !line.contains('\n'), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let dir = temp_dir("pipeline-bad");
    let paths = testing::write_tiny_bundle(&dir, 23).unwrap();
    let mut p = Pipeline::load(&paths, &Device::Cpu, DType::F32).unwrap();
    let mut r = request(ScheduleChoice::Geometric, "[2s a cat");
    assert!(matches!(p.start(&r), Err(Error::Invalid { what: "prompt", .. })));
    r.prompt = "a cat".into();
    r.resolution = 3;
    assert!(p.start(&r).is_err());
    r.resolution = 32;
    r.settings.seconds = 0.0;
    assert!(matches!(p.start(&r), Err(Error::Invalid { what: "seconds", .. })));
    std::fs::remove_dir_all(&dir).ok();
}

/// Every file under `root`, as `(relative path, bytes)` with the bytes leaked to `'static`.
fn files_in_memory(root: &std::path::Path) -> Vec<(String, &'static [u8])> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, &*Box::leak(std::fs::read(&p).unwrap().into_boxed_slice())));
            }
        }
    }
    out
}

#[test]
fn a_bundle_in_memory_generates_the_frames_of_the_same_bundle_on_disk() {
    let dir = temp_dir("memory");
    testing::write_tiny_bundle(&dir, 24).unwrap();
    let owned = files_in_memory(&dir);
    let files: Vec<(&str, &'static [u8])> = owned.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    // Nothing on disk while the memory bundle loads.
    std::fs::remove_dir_all(&dir).unwrap();
    let memory = BundlePaths::from_memory("<memory>", &files);
    let report = memory.inspect();
    assert!(report.is_complete(), "{report}");
    assert!(matches!(memory.inspect_tiny_decoder(), Some(framepack::bundle::Status::Present { .. })));
    let mut from_memory = Pipeline::load(&memory, &Device::Cpu, DType::F32).unwrap();
    let r = request(ScheduleChoice::Geometric, "a cat");
    let a = video(&mut from_memory, &r);

    let disk = testing::write_tiny_bundle(&dir, 24).unwrap();
    let mut from_disk = Pipeline::load(&disk, &Device::Cpu, DType::F32).unwrap();
    let b = video(&mut from_disk, &r);
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.rgb == y.rgb), "memory and disk loads differ");

    // A missing file names its path under the virtual root.
    let without_vae: Vec<(&str, &'static [u8])> =
        files.iter().copied().filter(|(p, _)| !p.starts_with("vae/diffusion_pytorch_model")).collect();
    let e = Pipeline::load(&BundlePaths::from_memory("<memory>", &without_vae), &Device::Cpu, DType::F32)
        .err()
        .expect("the VAE weights are missing");
    assert!(e.to_string().contains("<memory>/vae"), "{e}");
}

#[test]
fn a_taehv_vae_bundle_encodes_with_it_and_streams_forward_jobs_through_it() {
    use framepack::generator::{DecoderChoice, to_frames};
    use framepack::models::AutoencoderConfig;
    let dir = temp_dir("taehv-vae");
    let paths = testing::write_tiny_taehv_bundle(&dir, 25).unwrap();
    let report = paths.inspect();
    assert!(report.is_complete(), "{report}");
    assert!(report.to_string().contains("TAEHV"), "{report}");
    assert!(paths.inspect_tiny_decoder().is_none());
    assert!(matches!(paths.vae_config().unwrap(), AutoencoderConfig::Taehv(c) if c.scaling_factor == 2.0));

    let mut p = Pipeline::load(&paths, &Device::Cpu, DType::F32).unwrap();
    let models = p.generator().models().clone();
    let taehv = models.vae.taehv().expect("the VAE is the TAEHV").clone();
    assert!(models.tiny().is_some(), "the TAEHV VAE also serves as the tiny decoder");

    let r = request(ScheduleChoice::Geometric, "a cat");
    let images = p.prepare_images(&r, &r.plan().unwrap()).unwrap();
    let pixels = framepack::preprocess::image_to_tensor(&images.start, &Device::Cpu).unwrap();
    let start = models.vae.encode(&pixels, None).unwrap();
    // The TAEHV's latents of the video in [0, 1] (its encoder output times the scaling factor).
    let scaled = taehv.encode(&pixels.permute((0, 2, 1, 3, 4)).unwrap().affine(0.5, 0.5).unwrap()).unwrap();
    let (rel, _) = common_rel(&start, &scaled.permute((0, 2, 1, 3, 4)).unwrap());
    assert!(rel < 1e-6, "start latent rel-L2 {rel}");
    let unscaled_cfg = framepack::models::taehv::Config { scaling_factor: 1.0, ..taehv.config().clone() };
    let unscaled = framepack::bundle::load_taehv(&dir.join("vae"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(unscaled.config(), taehv.config(), "load_taehv reads vae/config.json");
    let plain = framepack::models::taehv::Taehv::load(
        &[dir.join("vae/diffusion_pytorch_model.safetensors")],
        &unscaled_cfg,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let raw = plain.encode(&pixels.permute((0, 2, 1, 3, 4)).unwrap().affine(0.5, 0.5).unwrap()).unwrap();
    let (rel, _) = common_rel(&scaled, &raw.affine(2.0, 0.0).unwrap());
    assert!(rel < 1e-6, "scaled latents rel-L2 {rel}");

    // The full decoder of a forward job is one stream over [start, section 1, section 2]: the
    // frames equal one decode of all latents, with no cross-fade.
    let mut latents = vec![start];
    let mut frames = Vec::new();
    for s in p.start(&r).unwrap() {
        let s = s.unwrap();
        latents.push(s.latent_tensor.clone());
        frames.extend(s.frames);
    }
    assert_eq!(frames.len(), 36 * 2 + 1);
    let all = candle_core::Tensor::cat(&latents, 2).unwrap();
    let want = to_frames(&models.vae.decode(&all).unwrap()).unwrap();
    assert!(frames == want, "streamed frames differ from one decode of every latent");
    let tiny = JobSettings { decoder: DecoderChoice::Tiny, ..r.settings.clone() };
    assert!(video(&mut p, &Request { settings: tiny, ..r.clone() }) == frames);

    // The inverted loop decodes each section with the TAEHV and cross-fades.
    let inv = video(&mut p, &request(ScheduleChoice::InvertedAntiDrifting, "a cat"));
    assert_eq!(inv.len(), 36 * 2 + 1);

    // A TAEHV config with HunyuanVideo VAE weights names the file and a tensor.
    std::fs::remove_file(dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let other = temp_dir("taehv-vae-kl");
    testing::write_tiny_bundle(&other, 25).unwrap();
    std::fs::copy(
        other.join("vae/diffusion_pytorch_model.safetensors"),
        dir.join("vae/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let e = Pipeline::load(&paths, &Device::Cpu, DType::F32).err().expect("wrong weights for the config");
    let text = e.to_string();
    assert!(text.contains("vae/diffusion_pytorch_model.safetensors") && text.contains("encoder."), "{text}");
}

fn common_rel(a: &candle_core::Tensor, b: &candle_core::Tensor) -> (f64, f64) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    ((d / n).sqrt(), max)
}
