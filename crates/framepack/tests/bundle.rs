//! Model bundles on disk: the released layout, the report of present/missing/mismatched parts,
//! and loading a generator from a tiny random bundle.

use std::path::PathBuf;

use candle_core::{DType, Device};
use framepack::bundle::{BundlePart, BundlePaths, DeviceChoice, Status, parse_dtype};
use framepack::generator::{Conditioning, JobSettings, NoiseRng, TextConditioning};
use framepack::packing::ScheduleChoice;
use framepack::{BundleError, Error};
use framepack_train::testing;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tiny_bundle_is_reported_and_loads() {
    let dir = temp_dir("bundle-ok");
    let paths = testing::write_tiny_bundle(&dir, 11).unwrap();
    assert_eq!(paths, BundlePaths::from_dir(&dir));
    let report = paths.inspect();
    println!("{report}");
    for c in BundlePart::ALL {
        assert!(matches!(report.get(c).status, Status::Present { .. }), "{c}: {:?}", report.get(c).status);
    }
    assert!(report.is_complete());
    report.require(&[BundlePart::Transformer, BundlePart::Vae]).unwrap();

    let generator = paths.load_generator(&Device::Cpu, DType::F32).unwrap();
    let rng = |seed| NoiseRng::new(seed);
    let cond = Conditioning {
        start_image: testing::test_image(32, 32, 1).unwrap(),
        end_image: None,
        image_embeds: Some(rng(1).normal_tensor(&[1, 3, 8], &Device::Cpu).unwrap()),
        text: vec![TextConditioning {
            llama: rng(2).normal_tensor(&[1, 4, 16], &Device::Cpu).unwrap(),
            pooled: rng(3).normal_tensor(&[1, 8], &Device::Cpu).unwrap(),
        }],
    };
    let s = JobSettings { seconds: 1.2, steps: 2, schedule: ScheduleChoice::Geometric, ..JobSettings::default() };
    let video = generator.start(cond, s).unwrap().run_to_end().unwrap();
    assert_eq!(video.len(), 37);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_and_mismatched_parts_are_named() {
    let dir = temp_dir("bundle-bad");
    let paths = testing::write_tiny_bundle(&dir, 12).unwrap();

    assert!(paths.inspect().is_complete(), "{}", paths.inspect());
    // Without the text encoder and the image encoder's weights, each is reported with its path.
    std::fs::remove_dir_all(dir.join("text_encoder")).unwrap();
    std::fs::remove_file(dir.join("image_encoder/model.safetensors")).unwrap();
    let report = paths.inspect();
    match &report.get(BundlePart::TextEncoder).status {
        Status::Missing { what } => assert!(what.contains("text_encoder"), "{what}"),
        s => panic!("{s:?}"),
    }
    let err = report.require(&[BundlePart::Transformer, BundlePart::ImageEncoder]).unwrap_err().to_string();
    assert!(err.contains("image_encoder") && err.contains("missing") && err.contains("model.safetensors"), "{err}");
    assert!(!report.is_complete());

    // A shard named by the index is gone.
    let shard = dir.join("diffusion_pytorch_model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::remove_file(&shard).unwrap();
    match &paths.inspect().get(BundlePart::Transformer).status {
        Status::Missing { what } => {
            assert!(what.contains("diffusion_pytorch_model-00002-of-00002.safetensors"), "{what}")
        }
        s => panic!("{s:?}"),
    }
    let err = paths.load_generator(&Device::Cpu, DType::F32).err().expect("must fail");
    let line = err.to_string();
    assert!(matches!(err, Error::Bundle(BundleError::Missing { part: BundlePart::Transformer, .. })), "{line}");
    assert!(line.contains("transformer") && line.contains("00002-of-00002") && !line.contains('\n'), "{line}");
    std::fs::write(&shard, bytes).unwrap();

    // The config asks for a second dual block the weights do not have.
    let cfg_path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("\"num_layers\": 1", "\"num_layers\": 2")).unwrap();
    match &paths.inspect().get(BundlePart::Transformer).status {
        Status::Mismatched { reason } => assert!(reason.contains("transformer_blocks.1."), "{reason}"),
        s => panic!("{s:?}"),
    }
    std::fs::write(&cfg_path, "{ not json").unwrap();
    match &paths.inspect().get(BundlePart::Transformer).status {
        Status::Mismatched { reason } => assert!(reason.contains("invalid config"), "{reason}"),
        s => panic!("{s:?}"),
    }
    std::fs::write(&cfg_path, cfg).unwrap();

    // The VAE folder is gone.
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let err = paths.load_generator(&Device::Cpu, DType::F32).err().expect("must fail").to_string();
    assert!(err.contains("vae") && err.contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn devices_and_dtypes_parse() {
    assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
    assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
    assert_eq!("metal".parse::<DeviceChoice>().unwrap(), DeviceChoice::Metal(0));
    assert!("tpu".parse::<DeviceChoice>().is_err());
    assert!("cuda:x".parse::<DeviceChoice>().is_err());
    assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
    assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
    assert!(parse_dtype("f8").is_err());
}
