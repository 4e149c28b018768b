//! HunyuanVideo VAE: parity with diffusers on the tiny fixtures, the real checkpoint's key list,
//! other configs and frame counts, and FramePack's section decoding.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use framepack::models::vae::{AutoencoderKLHunyuanVideo, Config, PixelHistory, SectionDecoder, Tiling, soft_append};
use framepack::packing::SectionOrder;
use framepack::{Error, WeightsError, weights};

mod common;

use common::{assert_close, errors as diff, fixture_path, load_fixture as tensors};

fn fixture(name: &str) -> String {
    fixture_path(name).display().to_string()
}

fn tiny_config() -> Config {
    serde_json::from_str(&std::fs::read_to_string(fixture("vae_tiny_config.json")).expect("config"))
        .expect("config json")
}

fn tiny_vae() -> AutoencoderKLHunyuanVideo {
    AutoencoderKLHunyuanVideo::load(
        &[fixture("vae_tiny_weights.safetensors")],
        &tiny_config(),
        DType::F32,
        &Device::Cpu,
    )
    .expect("load tiny vae")
}

/// The project's f32 parity gates (rel-L2 ≤ 1e-5, max-abs ≤ 1e-4), with the numbers printed.
fn check(label: &str, got: &Tensor, want: &Tensor) {
    let (rel, max) = assert_close(label, got, want);
    println!("PARITY {label:<58} rel-L2 {rel:.3e}  max-abs {max:.3e}");
}

fn check_encode_decode(fx: &str, vae: &AutoencoderKLHunyuanVideo) {
    let t = tensors(fx);
    let dist = vae.encode(&t["in.sample"]).unwrap();
    check(&format!("{fx} out.moments"), dist.moments(), &t["out.moments"]);
    check(&format!("{fx} out.latent_mean"), &dist.mean().unwrap(), &t["out.latent_mean"]);
    check(&format!("{fx} out.latent_mean_f64"), &dist.mean().unwrap(), &t["out.latent_mean_f64"]);
    check(&format!("{fx} out.latent_logvar_clamped"), &dist.logvar().unwrap(), &t["out.latent_logvar_clamped"]);
    check(&format!("{fx} out.latent_std"), &dist.std().unwrap(), &t["out.latent_std"]);
    // Decode the fixture's mean so the decoder is checked on exactly diffusers' input.
    let dec = vae.decode(&t["out.latent_mean"]).unwrap();
    check(&format!("{fx} out.decoded_from_mean"), &dec, &t["out.decoded_from_mean"]);
    check(&format!("{fx} out.decoded_from_mean_f64"), &dec, &t["out.decoded_from_mean_f64"]);
}

#[test]
fn parity_tiny_img() {
    check_encode_decode("vae_tiny_img.safetensors", &tiny_vae());
}

#[test]
fn parity_tiny_vid5_with_intermediates() {
    let vae = tiny_vae();
    check_encode_decode("vae_tiny_vid5.safetensors", &vae);
    let t = tensors("vae_tiny_vid5.safetensors");
    let (moments, enc_trace) = vae.encode_traced(&t["in.sample"]).unwrap();
    check("vae_tiny_vid5 traced moments", &moments, &t["out.moments"]);
    let (dec, dec_trace) = vae.decode_traced(&t["out.latent_mean"]).unwrap();
    check("vae_tiny_vid5 traced decode", &dec, &t["out.decoded_from_mean"]);
    let mut seen = 0;
    for (name, got) in enc_trace.iter().chain(&dec_trace) {
        let key = format!("inter.{name}");
        let want = t.get(&key).unwrap_or_else(|| panic!("fixture has no {key}"));
        check(&format!("vae_tiny_vid5 {key}"), got, want);
        seen += 1;
    }
    let expected = t.keys().filter(|k| k.starts_with("inter.")).count();
    assert_eq!(seen, expected, "every intermediate of the fixture is compared");
}

#[test]
fn parity_tiny_vid21_framewise_and_direct() {
    let vae = tiny_vae();
    assert_eq!(vae.tiling(), Tiling::default());
    let t = tensors("vae_tiny_vid21.safetensors");
    let x = &t["in.sample"];
    let z = &t["in.z"];

    let mean_fw = vae.encode(x).unwrap().mean().unwrap();
    check("vae_tiny_vid21 out.latent_mean_framewise", &mean_fw, &t["out.latent_mean_framewise"]);
    let dec_fw = vae.decode(z).unwrap();
    check("vae_tiny_vid21 out.decoded_z_framewise", &dec_fw, &t["out.decoded_z_framewise"]);
    check("vae_tiny_vid21 out.decoded_z_framewise_f64", &dec_fw, &t["out.decoded_z_framewise_f64"]);

    let direct = vae.clone().with_tiling(Tiling::direct()).unwrap();
    let mean_d = direct.encode(x).unwrap().mean().unwrap();
    check("vae_tiny_vid21 out.latent_mean_direct", &mean_d, &t["out.latent_mean_direct"]);
    let dec_d = direct.decode(z).unwrap();
    check("vae_tiny_vid21 out.decoded_z_direct", &dec_d, &t["out.decoded_z_direct"]);

    // The two paths really differ (so the framewise checks above test the tiling).
    assert!(diff(&dec_fw, &dec_d).1 > 0.1);
    assert!(diff(&mean_fw, &mean_d).1 > 0.1);
}

fn real_keys() -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture("real_keys.json")).expect("real_keys.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let vae = &json["hunyuan_video_vae"];
    let keys: BTreeMap<String, Vec<usize>> = serde_json::from_value(vae["keys"].clone()).expect("keys");
    assert_eq!(keys.len() as u64, vae["num_tensors"].as_u64().unwrap());
    keys
}

#[test]
fn real_config_requests_exactly_the_checkpoint_keys() {
    let cfg = Config::hunyuan_video();
    let requested = weights::requested_shapes(|vb| AutoencoderKLHunyuanVideo::new(vb, &cfg)).unwrap();
    let real = real_keys();
    assert_eq!(real.len(), 248);
    let missing: Vec<_> = real.keys().filter(|k| !requested.contains_key(*k)).collect();
    let extra: Vec<_> = requested.keys().filter(|k| !real.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    assert_eq!(requested, real);
    let params: usize = requested.values().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(params, 246_478_803);
    weights::check_shapes("real_keys.json", real, |vb| AutoencoderKLHunyuanVideo::new(vb, &cfg)).unwrap();
    println!("REALKEYS {} tensors, {params} parameters: exact match", requested.len());
}

#[test]
fn real_config_key_errors_name_the_tensor() {
    let cfg = Config::hunyuan_video();
    let build = |vb: VarBuilder| AutoencoderKLHunyuanVideo::new(vb, &cfg);

    let mut missing = real_keys();
    missing.remove("decoder.up_blocks.2.upsamplers.0.conv.conv.weight");
    match weights::check_shapes("keys", missing, build) {
        Err(Error::Weights(WeightsError::Missing { name, .. })) => {
            assert_eq!(name, "decoder.up_blocks.2.upsamplers.0.conv.conv.weight")
        }
        other => panic!("expected a missing-tensor error, got {other:?}"),
    }

    let mut shaped = real_keys();
    shaped.insert("encoder.mid_block.attentions.0.to_k.weight".into(), vec![512, 256]);
    let err = weights::check_shapes("keys", shaped, build).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weights(WeightsError::ShapeMismatch { .. })), "{msg}");
    assert!(msg.contains("encoder.mid_block.attentions.0.to_k.weight") && msg.contains("[512, 256]"), "{msg}");

    let mut extra = real_keys();
    extra.insert("encoder.mid_block.attentions.1.to_q.weight".into(), vec![512, 512]);
    match weights::check_shapes("keys", extra, build) {
        Err(Error::Weights(WeightsError::Unexpected { names, .. })) => {
            assert_eq!(names, vec!["encoder.mid_block.attentions.1.to_q.weight".to_string()])
        }
        other => panic!("expected an unexpected-tensor error, got {other:?}"),
    }
}

#[test]
fn loading_from_files_reports_file_and_tensor() {
    let dir = std::env::temp_dir().join(format!("framepack-vae-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ws = tensors("vae_tiny_weights.safetensors");
    ws.insert("decoder.conv_out.conv.bias".into(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap());
    let path = dir.join("bad.safetensors");
    candle_core::safetensors::save(&ws, &path).unwrap();
    let err = AutoencoderKLHunyuanVideo::load(&[&path], &tiny_config(), DType::F32, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("decoder.conv_out.conv.bias") && msg.contains("bad.safetensors"), "{msg}");
    assert!(msg.contains("[3]") && msg.contains("[4]"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A random tiny model of another shape: different channels, groups, depth and no attention.
fn random_vae(cfg: &Config, seed: u64) -> AutoencoderKLHunyuanVideo {
    let shapes = weights::requested_shapes(|vb| AutoencoderKLHunyuanVideo::new(vb, cfg)).unwrap();
    let mut ws = HashMap::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let fan_in = (n / shape[0]).max(1) as f64;
        let vals: Vec<f32> = (0..n)
            .map(|k| {
                let h = (seed ^ (i as u64) << 32 ^ k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let u = ((h >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
                if shape.len() > 1 {
                    (u * (3.0 / fan_in).sqrt()) as f32
                } else if name.ends_with("weight") {
                    1.0 + 0.1 * u as f32
                } else {
                    0.1 * u as f32
                }
            })
            .collect();
        ws.insert(name.clone(), Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu).unwrap());
    }
    let vb = VarBuilder::from_tensors(ws, DType::F32, &Device::Cpu);
    AutoencoderKLHunyuanVideo::new(vb, cfg).unwrap()
}

fn other_config() -> Config {
    Config {
        in_channels: 2,
        out_channels: 4,
        latent_channels: 6,
        down_block_types: vec!["HunyuanVideoDownBlock3D".into(); 3],
        up_block_types: vec!["HunyuanVideoUpBlock3D".into(); 3],
        block_out_channels: vec![6, 12, 12],
        layers_per_block: 1,
        norm_num_groups: 3,
        spatial_compression_ratio: 4,
        mid_block_add_attention: false,
        ..Config::hunyuan_video()
    }
}

#[test]
fn other_configs_and_frame_counts_have_the_right_shapes() {
    let cfg = other_config();
    cfg.validate().unwrap();
    let vae = random_vae(&cfg, 7);
    for frames in [1usize, 2, 5, 9, 13, 17, 21] {
        let x = Tensor::randn(0f32, 0.5, (1, 2, frames, 16, 12), &Device::Cpu).unwrap();
        let z = vae.encode(&x).unwrap().mean().unwrap();
        assert_eq!(z.dims(), &[1, 6, (frames - 1) / 4 + 1, 4, 3], "{frames} frames");
        assert_eq!(cfg.latent_frames(frames), (frames - 1) / 4 + 1);
    }
    for latents in [1usize, 2, 3, 5, 6, 8] {
        let z = Tensor::randn(0f32, 1.0, (2, 6, latents, 3, 2), &Device::Cpu).unwrap();
        let x = vae.decode(&z).unwrap();
        assert_eq!(x.dims(), &[2, 4, 4 * latents - 3, 12, 8], "{latents} latents");
        assert!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn tiny_vae_frame_counts_framewise_and_direct() {
    let vae = tiny_vae();
    let direct = vae.clone().with_tiling(Tiling::direct()).unwrap();
    for latents in [1usize, 4, 5, 7, 9] {
        let z = Tensor::randn(0f32, 1.0, (1, 16, latents, 2, 2), &Device::Cpu).unwrap();
        for v in [&vae, &direct] {
            assert_eq!(v.decode(&z).unwrap().dims(), &[1, 3, 4 * latents - 3, 16, 16]);
        }
    }
    for frames in [1usize, 13, 17, 25, 29, 33] {
        let x = Tensor::randn(0f32, 0.5, (1, 3, frames, 8, 8), &Device::Cpu).unwrap();
        for v in [&vae, &direct] {
            assert_eq!(v.encode(&x).unwrap().mean().unwrap().dims(), &[1, 16, (frames - 1) / 4 + 1, 1, 1]);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let vae = tiny_vae();
    let dev = Device::Cpu;
    let cases = [
        vae.encode(&Tensor::zeros((1, 4, 1, 8, 8), DType::F32, &dev).unwrap()).err(),
        vae.encode(&Tensor::zeros((3, 1, 8, 8), DType::F32, &dev).unwrap()).err(),
        vae.decode(&Tensor::zeros((1, 15, 2, 2, 2), DType::F32, &dev).unwrap()).err(),
        vae.decode(&Tensor::zeros((1, 16, 2, 2), DType::F32, &dev).unwrap()).err(),
    ];
    for c in cases {
        assert!(matches!(c, Some(Error::Invalid { .. })), "{c:?}");
    }
    let mut bad = tiny_config();
    bad.norm_num_groups = 3;
    assert!(bad.validate().is_err());
    let mut bad = tiny_config();
    bad.block_out_channels = vec![8, 16];
    assert!(bad.validate().is_err());
    assert!(vae.clone().with_tiling(Tiling { sample_stride_num_frames: 2, ..Tiling::default() }).is_err());
    let dist = vae.encode(&Tensor::zeros((1, 3, 1, 8, 8), DType::F32, &dev).unwrap()).unwrap();
    assert!(dist.sample_with_noise(&Tensor::zeros((1, 16, 1, 2, 1), DType::F32, &dev).unwrap()).is_err());
}

#[test]
fn posterior_sampling_is_seeded() {
    let vae = tiny_vae();
    let t = tensors("vae_tiny_vid5.safetensors");
    let dist = vae.encode(&t["in.sample"]).unwrap();
    let a = dist.sample_seeded(31337).unwrap();
    let b = dist.sample_seeded(31337).unwrap();
    let c = dist.sample_seeded(1).unwrap();
    assert_eq!(diff(&a, &b).1, 0.0);
    assert!(diff(&a, &c).1 > 1e-3);
    // noise = (sample − mean) / std must look standard normal.
    let noise = ((a - dist.mean().unwrap()).unwrap() / dist.std().unwrap()).unwrap();
    let v = noise.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.2, "mean {mean} var {var}");
    let zero = Tensor::zeros(dist.mean().unwrap().dims(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(diff(&dist.sample_with_noise(&zero).unwrap(), &dist.mean().unwrap()).1, 0.0);
}

#[test]
fn scaling_helpers() {
    let vae = tiny_vae();
    let z = Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap();
    let s = vae.scale_latents(&z).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(s, vec![0.476986f32, -0.953972]);
    let back = vae.unscale_latents(&vae.scale_latents(&z).unwrap()).unwrap();
    assert!(diff(&back, &z).1 < 1e-6);
    assert_eq!(Config::hunyuan_video().scaling_factor, 0.476986);
}

#[test]
fn spatial_tiled_decode_places_and_blends_tiles() {
    // Tiles of 32 px every 24 px (latent 4 every 3, blend 8 px) on a 48×40 px output: the
    // first tile's unblended corner is that tile decoded alone, and the seam between the first
    // two tiles is the linear blend of the two tiles decoded alone.
    let vae = tiny_vae();
    let small = Tiling {
        spatial: true,
        sample_min_height: 32,
        sample_min_width: 32,
        sample_stride_height: 24,
        sample_stride_width: 24,
        ..Tiling::default()
    };
    let tiled = vae.clone().with_tiling(small).unwrap();
    let direct = vae.clone().with_tiling(Tiling::direct()).unwrap();
    let z = Tensor::randn(0f32, 1.0, (1, 16, 2, 6, 5), &Device::Cpu).unwrap();
    let out = tiled.decode(&z).unwrap();
    let full = direct.decode(&z).unwrap();
    assert_eq!(out.dims(), full.dims());
    let (rel, max) = diff(&out, &full);
    println!("spatial tiled decode vs untiled (tiny random weights): rel-L2 {rel:.3e} max-abs {max:.3e}");

    let t00 = direct.decode(&z.narrow(3, 0, 4).unwrap().narrow(4, 0, 4).unwrap()).unwrap();
    let t01 = direct.decode(&z.narrow(3, 0, 4).unwrap().narrow(4, 3, 2).unwrap()).unwrap();
    let crop = |x: &Tensor, y0, h, x0, w| x.narrow(3, y0, h).unwrap().narrow(4, x0, w).unwrap();
    assert!(diff(&crop(&out, 0, 24, 0, 24), &crop(&t00, 0, 24, 0, 24)).1 < 1e-6);
    let wts: Vec<f32> = (0..8).map(|x| x as f32 / 8.0).collect();
    let w = Tensor::from_vec(wts, (1, 1, 1, 1, 8), &Device::Cpu).unwrap();
    let seam = (crop(&t00, 0, 24, 24, 8).broadcast_mul(&w.affine(-1.0, 1.0).unwrap()).unwrap()
        + crop(&t01, 0, 24, 0, 8).broadcast_mul(&w).unwrap())
    .unwrap();
    assert!(diff(&crop(&out, 0, 24, 24, 8), &seam).1 < 1e-5);
    assert!(diff(&crop(&out, 0, 24, 32, 8), &crop(&t01, 0, 24, 8, 8)).1 < 1e-6);

    // Encode: 48×40 px input, same tiles; the untiled-region check on the first latent tile.
    let x = full.clamp(-1f32, 1f32).unwrap();
    let e_tiled = tiled.encode(&x).unwrap().mean().unwrap();
    let e_full = direct.encode(&x).unwrap().mean().unwrap();
    assert_eq!(e_tiled.dims(), e_full.dims());
    let e00 = direct.encode(&crop(&x, 0, 32, 0, 32)).unwrap().mean().unwrap();
    assert!(diff(&crop(&e_tiled, 0, 3, 0, 3), &crop(&e00, 0, 3, 0, 3)).1 < 1e-6);
}

#[test]
fn spatial_tiling_inside_framewise_decode_matches_per_tile_semantics() {
    // With tiles larger than the frame, spatial tiling must be a no-op.
    let vae = tiny_vae();
    let t = tensors("vae_tiny_vid21.safetensors");
    let tiled = vae.clone().with_tiling(Tiling::spatial()).unwrap();
    check(
        "vid21 framewise decode with (inactive) spatial tiling",
        &tiled.decode(&t["in.z"]).unwrap(),
        &t["out.decoded_z_framewise"],
    );
}

// ---------------------------------------------------------------------------------------------
// Section decoding
// ---------------------------------------------------------------------------------------------

/// A stand-in decoder with the causal frame count: latent t → frames (1 for t = 0, else 4),
/// pixel value = latent value + 0.01·position inside the decoded chunk (so overlaps differ).
fn fake_decode(z: &Tensor) -> framepack::Result<Tensor> {
    let (b, c, t, h, w) = z.dims5()?;
    let mut frames = Vec::new();
    for i in 0..t {
        let reps = if i == 0 { 1 } else { 4 };
        for _ in 0..reps {
            frames.push(z.narrow(2, i, 1)?);
        }
    }
    let x = Tensor::cat(&frames, 2)?;
    let n = x.dim(2)?;
    let pos = Tensor::arange(0f32, n as f32, z.device())?.reshape((1, 1, n, 1, 1))?;
    Ok(x.broadcast_add(&(pos * 0.01)?)?.reshape((b, c, n, h, w))?)
}

fn latents(t: usize, offset: f32) -> Tensor {
    Tensor::arange(offset, offset + t as f32, &Device::Cpu).unwrap().reshape((1, 1, t, 1, 1)).unwrap()
}

#[test]
fn soft_append_weights_and_shapes() {
    let a = Tensor::ones((1, 2, 5, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros((1, 2, 6, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let r = soft_append(&a, &b, 4).unwrap();
    assert_eq!(r.dims(), &[1, 2, 7, 1, 1]);
    let v: Vec<f32> = r.narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    // a[:1] ++ w = linspace(1, 0, 4) ++ b[4:]
    let expect = [1.0, 1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0, 0.0];
    for (g, e) in v.iter().zip(expect) {
        assert!((g - e).abs() < 1e-6, "{v:?}");
    }
    assert_eq!(soft_append(&a, &b, 0).unwrap().dims(), &[1, 2, 11, 1, 1]);
    assert!(soft_append(&a, &b, 6).is_err());
    assert!(soft_append(&a, &Tensor::zeros((1, 3, 6, 1, 1), DType::F32, &Device::Cpu).unwrap(), 2).is_err());
    let one = soft_append(&a, &b, 1).unwrap();
    assert_eq!(one.dims(), &[1, 2, 10, 1, 1]);
}

/// What FramePack's demos compute with whole tensors, for `sections` of W latents each.
fn framepack_reference(order: SectionOrder, w: usize, sections: &[Tensor]) -> Tensor {
    let ov = 4 * w - 3;
    let mut history: Option<Tensor> = None;
    let mut pixels: Option<Tensor> = None;
    for s in sections {
        history = Some(match (&history, order) {
            (None, _) => s.clone(),
            (Some(h), SectionOrder::Inverted) => Tensor::cat(&[s, h], 2).unwrap(),
            (Some(h), SectionOrder::Forward) => Tensor::cat(&[h, s], 2).unwrap(),
        });
        let h = history.as_ref().unwrap();
        pixels = Some(match &pixels {
            None => fake_decode(h).unwrap(),
            Some(p) => {
                let n = s.dim(2).unwrap() + w;
                let total = h.dim(2).unwrap();
                match order {
                    SectionOrder::Inverted => {
                        soft_append(&fake_decode(&h.narrow(2, 0, n).unwrap()).unwrap(), p, ov).unwrap()
                    }
                    SectionOrder::Forward => {
                        soft_append(p, &fake_decode(&h.narrow(2, total - n, n).unwrap()).unwrap(), ov).unwrap()
                    }
                }
            }
        });
    }
    pixels.unwrap()
}

fn run_sections(order: SectionOrder, w: usize, sections: &[Tensor]) -> (Vec<usize>, Tensor) {
    let mut dec = SectionDecoder::new(order, w).unwrap();
    assert_eq!(dec.overlap(), 4 * w - 3);
    let mut counts = Vec::new();
    let mut out: Vec<Tensor> = Vec::new();
    for s in sections {
        let done = dec.push(s, fake_decode).unwrap();
        counts.push(done.as_ref().map_or(0, |d| d.dim(2).unwrap()));
        if let Some(d) = done {
            match order {
                SectionOrder::Inverted => out.insert(0, d),
                SectionOrder::Forward => out.push(d),
            }
        }
    }
    let rest = dec.finish().unwrap();
    counts.push(rest.dim(2).unwrap());
    match order {
        SectionOrder::Inverted => out.insert(0, rest),
        SectionOrder::Forward => out.push(rest),
    }
    (counts, Tensor::cat(&out, 2).unwrap())
}

#[test]
fn original_order_sections_w9() {
    // 5 s at W = 9: n = 4 sections; the last one carries the start latent in front (10 latents).
    let w = 9;
    let sections = vec![latents(9, 100.0), latents(9, 200.0), latents(9, 300.0), latents(10, 400.0)];
    let (counts, video) = run_sections(SectionOrder::Inverted, w, &sections);
    assert_eq!(counts, vec![0, 36, 36, 40, 33]);
    assert_eq!(video.dim(2).unwrap(), 145); // 36n + 1
    let reference = framepack_reference(SectionOrder::Inverted, w, &sections);
    assert_eq!(diff(&video, &reference).1, 0.0);
}

#[test]
fn f1_order_sections_w9() {
    // F1: the first push is [start latent, 9 new] = 10 latents → 37 frames.
    let w = 9;
    let sections = vec![latents(10, 0.0), latents(9, 100.0), latents(9, 200.0), latents(9, 300.0)];
    let (counts, video) = run_sections(SectionOrder::Forward, w, &sections);
    assert_eq!(counts, vec![4, 36, 36, 36, 33]);
    assert_eq!(video.dim(2).unwrap(), 145);
    let reference = framepack_reference(SectionOrder::Forward, w, &sections);
    assert_eq!(diff(&video, &reference).1, 0.0);
}

#[test]
fn sections_general_window() {
    for w in [1usize, 2, 3, 5] {
        for order in [SectionOrder::Inverted, SectionOrder::Forward] {
            let sections: Vec<Tensor> = (0..5).map(|i| latents(w + (i % 2), 10.0 * i as f32)).collect();
            let (counts, video) = run_sections(order, w, &sections);
            let reference = framepack_reference(order, w, &sections);
            assert_eq!(video.dims(), reference.dims(), "W={w} {order:?}");
            assert_eq!(diff(&video, &reference).1, 0.0, "W={w} {order:?}");
            let total_latents: usize = sections.iter().map(|s| s.dim(2).unwrap()).sum();
            assert_eq!(counts.iter().sum::<usize>(), 4 * total_latents - 3, "W={w} {order:?}");
        }
    }
}

#[test]
fn section_errors() {
    assert!(SectionDecoder::new(SectionOrder::Inverted, 0).is_err());
    let mut dec = SectionDecoder::new(SectionOrder::Forward, 4).unwrap();
    dec.push(&latents(2, 0.0), fake_decode).unwrap();
    assert!(dec.push(&latents(4, 0.0), fake_decode).is_err(), "first section shorter than W");
    let mut dec = SectionDecoder::new(SectionOrder::Forward, 2).unwrap();
    let wrong = |z: &Tensor| Ok(z.clone());
    assert!(dec.push(&latents(3, 0.0), wrong).is_err(), "decoder with the wrong frame count");
    let mut px = PixelHistory::new(SectionOrder::Inverted, 5);
    assert!(px.push(&Tensor::zeros((1, 1, 3, 1), DType::F32, &Device::Cpu).unwrap()).is_err());
}

#[test]
fn section_decoding_with_the_tiny_vae() {
    let vae = tiny_vae();
    let w = 2;
    let z = Tensor::randn(0f32, 1.0, (1, 16, 6, 2, 2), &Device::Cpu).unwrap();
    let mut dec = SectionDecoder::new(SectionOrder::Forward, w).unwrap();
    let mut total = 0;
    for (start, len) in [(0, 2), (2, 2), (4, 2)] {
        let done = dec.push(&z.narrow(2, start, len).unwrap(), |l| vae.decode(l)).unwrap();
        total += done.map_or(0, |d| d.dim(2).unwrap());
    }
    total += dec.finish().unwrap().dim(2).unwrap();
    assert_eq!(total, 4 * 6 - 3);
}

// ---------------------------------------------------------------------------------------------
// Fixtures made by tools/fixtures_vae.py (not in the shared harness)
// ---------------------------------------------------------------------------------------------

#[test]
fn parity_tiny_spatial_tiling() {
    let small = Tiling {
        spatial: true,
        sample_min_height: 32,
        sample_min_width: 32,
        sample_stride_height: 24,
        sample_stride_width: 24,
        ..Tiling::default()
    };
    let vae = tiny_vae().with_tiling(small).unwrap();
    let t = tensors("vae_tiny_tiled.safetensors");
    check("vae_tiny_tiled out.decoded_tiled", &vae.decode(&t["in.z"]).unwrap(), &t["out.decoded_tiled"]);
    check(
        "vae_tiny_tiled out.decoded_tiled_framewise",
        &vae.decode(&t["in.z_long"]).unwrap(),
        &t["out.decoded_tiled_framewise"],
    );
    check("vae_tiny_tiled out.moments_tiled", &vae.encode_moments(&t["in.sample"]).unwrap(), &t["out.moments_tiled"]);
    check(
        "vae_tiny_tiled out.moments_tiled_framewise",
        &vae.encode_moments(&t["in.sample_long"]).unwrap(),
        &t["out.moments_tiled_framewise"],
    );
}

#[test]
fn parity_tiny_b_other_config() {
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(fixture("vae_tiny_b_config.json")).unwrap()).unwrap();
    assert_eq!((cfg.block_out_channels.len(), cfg.norm_num_groups, cfg.spatial_compression_ratio), (3, 3, 4));
    let vae =
        AutoencoderKLHunyuanVideo::load(&[fixture("vae_tiny_b_weights.safetensors")], &cfg, DType::F32, &Device::Cpu)
            .unwrap();
    let t = tensors("vae_tiny_b.safetensors");
    let dist = vae.encode(&t["in.sample"]).unwrap();
    check("vae_tiny_b out.moments", dist.moments(), &t["out.moments"]);
    check("vae_tiny_b out.latent_mean_f64", &dist.mean().unwrap(), &t["out.latent_mean_f64"]);
    let mean = t["out.moments"].narrow(1, 0, 4).unwrap();
    let dec = vae.decode(&mean).unwrap();
    check("vae_tiny_b out.decoded_from_mean", &dec, &t["out.decoded_from_mean"]);
    check("vae_tiny_b out.decoded_from_mean_f64", &dec, &t["out.decoded_from_mean_f64"]);
    check("vae_tiny_b out.decoded_z_framewise", &vae.decode(&t["in.z"]).unwrap(), &t["out.decoded_z_framewise"]);
    let direct = vae.with_tiling(Tiling::direct()).unwrap();
    check("vae_tiny_b out.decoded_z_direct", &direct.decode(&t["in.z"]).unwrap(), &t["out.decoded_z_direct"]);
}

#[test]
fn f64_model_matches_the_f64_fixtures() {
    // f64 runs the generic conv2d path (the CPU GEMM fast path is f32 only).
    let vae = AutoencoderKLHunyuanVideo::load(
        &[fixture("vae_tiny_weights.safetensors")],
        &tiny_config(),
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let t = tensors("vae_tiny_vid5.safetensors");
    let x = t["in.sample"].to_dtype(DType::F64).unwrap();
    let mean = vae.encode(&x).unwrap().mean().unwrap();
    let (rel, max) = diff(&mean, &t["out.latent_mean_f64"]);
    println!("PARITY-F64 vae_tiny_vid5 out.latent_mean_f64 rel-L2 {rel:.3e} max-abs {max:.3e}");
    assert!(rel < 1e-6 && max < 1e-6);
    let dec = vae.decode(&t["out.latent_mean_f64"].to_dtype(DType::F64).unwrap()).unwrap();
    let (rel, max) = diff(&dec, &t["out.decoded_from_mean_f64"]);
    println!("PARITY-F64 vae_tiny_vid5 out.decoded_from_mean_f64 rel-L2 {rel:.3e} max-abs {max:.3e}");
    assert!(rel < 1e-6 && max < 1e-6);
    let t = tensors("vae_tiny_vid21.safetensors");
    let dec = vae.decode(&t["in.z"].to_dtype(DType::F64).unwrap()).unwrap();
    let (rel, max) = diff(&dec, &t["out.decoded_z_framewise_f64"]);
    println!("PARITY-F64 vae_tiny_vid21 out.decoded_z_framewise_f64 rel-L2 {rel:.3e} max-abs {max:.3e}");
    assert!(rel < 1e-6 && max < 1e-6);
}

#[test]
fn half_precision_runs_on_the_generic_path() {
    let t = tensors("vae_tiny_vid5.safetensors");
    let weights = [fixture("vae_tiny_weights.safetensors")];
    let vae = AutoencoderKLHunyuanVideo::load(&weights, &tiny_config(), DType::F16, &Device::Cpu).unwrap();
    let mean = vae.encode(&t["in.sample"].to_dtype(DType::F16).unwrap()).unwrap().mean().unwrap();
    let dec = vae.decode(&t["out.latent_mean"].to_dtype(DType::F16).unwrap()).unwrap();
    assert_eq!(dec.dtype(), DType::F16);
    let (rel_e, _) = diff(&mean, &t["out.latent_mean"]);
    let (rel_d, _) = diff(&dec, &t["out.decoded_from_mean"]);
    println!("F16: latent rel-L2 {rel_e:.3e}, decoded rel-L2 {rel_d:.3e}");
    assert!(rel_e < 1e-2 && rel_d < 1e-2, "{rel_e} {rel_d}");

    let err = AutoencoderKLHunyuanVideo::load(&weights, &tiny_config(), DType::BF16, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }) && err.to_string().contains("bf16"), "{err}");
}

#[test]
fn hub_config_json_deserializes_to_the_real_config() {
    let json = r#"{
        "_class_name": "AutoencoderKLHunyuanVideo",
        "_diffusers_version": "0.32.0.dev0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["HunyuanVideoDownBlock3D", "HunyuanVideoDownBlock3D", "HunyuanVideoDownBlock3D", "HunyuanVideoDownBlock3D"],
        "in_channels": 3,
        "latent_channels": 16,
        "layers_per_block": 2,
        "mid_block_add_attention": true,
        "norm_num_groups": 32,
        "out_channels": 3,
        "scaling_factor": 0.476986,
        "spatial_compression_ratio": 8,
        "temporal_compression_ratio": 4,
        "up_block_types": ["HunyuanVideoUpBlock3D", "HunyuanVideoUpBlock3D", "HunyuanVideoUpBlock3D", "HunyuanVideoUpBlock3D"]
    }"#;
    let cfg: Config = serde_json::from_str(json).unwrap();
    assert_eq!(cfg, Config::hunyuan_video());
    assert_eq!(serde_json::from_str::<Config>("{}").unwrap(), Config::hunyuan_video());
    cfg.validate().unwrap();
}
