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
