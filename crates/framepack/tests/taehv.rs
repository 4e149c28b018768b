//! TAEHV: parity with upstream's `taehv.py` on the tiny fixtures (encode, decode, every decoder
//! block, streamed and preview decoding), the released checkpoint's key list, strict loading
//! errors, and other widths, flags, sizes and frame counts against the generic candle path.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use framepack::models::taehv::{Config, StreamingDecoder, Taehv};
use framepack::{Error, WeightsError, weights};

mod common;

use common::{assert_close, errors, fixture_path, load_fixture};

fn fixture(name: &str) -> String {
    fixture_path(name).display().to_string()
}

/// The tiny model's config, widths and flags read from the fixture's JSON.
fn tiny_config() -> Config {
    serde_json::from_str(&std::fs::read_to_string(fixture("taehv_tiny_config.json")).expect("config"))
        .expect("config json")
}

fn tiny(cfg: &Config) -> Taehv {
    Taehv::load(&[fixture("taehv_tiny_weights.safetensors")], cfg, DType::F32, &Device::Cpu).expect("load tiny taehv")
}

fn check(label: &str, got: &Tensor, want: &Tensor) {
    let (rel, max) = assert_close(label, got, want);
    println!("PARITY {label:<40} rel-L2 {rel:.3e}  max-abs {max:.3e}");
}

fn cases() -> HashMap<String, Tensor> {
    load_fixture("taehv_tiny_cases.safetensors")
}

#[test]
fn taehv_config_reads_the_fixture_json() {
    let cfg = tiny_config();
    assert_eq!(cfg.decoder_widths, [24, 16, 8, 8]);
    assert_eq!(cfg.encoder_width, 8);
    assert_eq!((cfg.time_downscale(), cfg.time_upscale(), cfg.frames_to_trim()), (4, 4, 3));
    assert_eq!(cfg.decoded_frames(3), 9);
    assert_eq!(cfg.encoded_latents(9), 3);
}

#[test]
fn taehv_encode_matches_upstream() {
    let c = cases();
    let z = tiny(&tiny_config()).encode(&c["enc.in"]).unwrap();
    check("taehv enc.out", &z, &c["enc.out"]);
}

#[test]
fn taehv_decode_matches_upstream() {
    let c = cases();
    let x = tiny(&tiny_config()).decode(&c["dec.in"]).unwrap();
    check("taehv dec.out", &x, &c["dec.out"]);
}

#[test]
fn taehv_every_decoder_block_matches_upstream() {
    let c = cases();
    let (_, trace) = tiny(&tiny_config()).decode_traced(&c["dec.in"]).unwrap();
    // Every upstream index but the convolutions fused with the ReLU after them (1 and 20).
    let indices: Vec<usize> = trace.iter().map(|(i, _)| *i).collect();
    let expected: Vec<usize> = (0..23).filter(|i| ![1, 20].contains(i)).collect();
    assert_eq!(indices, expected);
    for (i, t) in &trace {
        check(&format!("taehv inter.dec.{i}"), t, &c[&format!("inter.dec.{i}")]);
    }
}

#[test]
fn taehv_streaming_decode_matches_upstream_in_any_split() {
    let c = cases();
    let model = tiny(&tiny_config());
    let lat = &c["dec.in"];
    // Latent by latent, pulling each frame as soon as it exists (upstream's usage).
    let mut stream = StreamingDecoder::new(&model);
    let mut frames = Vec::new();
    for t in 0..lat.dim(1).unwrap() {
        stream.push(&lat.narrow(1, t, 1).unwrap()).unwrap();
        while let Some(f) = stream.next_frame().unwrap() {
            assert_eq!(f.dims(), [1, 1, 3, 32, 48]);
            frames.push(f);
        }
    }
    assert!(!stream.has_pending());
    assert_eq!(stream.frames_decoded(), 9);
    check("taehv dec.stream", &Tensor::cat(&frames, 1).unwrap(), &c["dec.stream"]);
    // Two "sections" of 1 and 2 latents: the state carries over.
    let mut stream = StreamingDecoder::new(&model);
    let mut frames = stream.decode(&lat.narrow(1, 0, 1).unwrap()).unwrap();
    assert_eq!(frames.len(), 1, "the first latent gives one frame after the trim");
    frames.extend(stream.decode(&lat.narrow(1, 1, 2).unwrap()).unwrap());
    check("taehv dec.stream (1 + 2 latents)", &Tensor::cat(&frames, 1).unwrap(), &c["dec.out"]);
    stream.reset();
    let again = stream.decode(lat).unwrap();
    check("taehv dec.stream after reset", &Tensor::cat(&again, 1).unwrap(), &c["dec.out"]);
}

#[test]
fn taehv_preview_decode_loads_the_same_file() {
    let c = cases();
    let cfg = tiny_config();
    let preview = tiny(&cfg.preview());
    assert_eq!(preview.config().time_upscale(), 1);
    check("taehv dec.noup.out (loaded)", &preview.decode(&c["dec.in"]).unwrap(), &c["dec.noup.out"]);
    let derived = tiny(&cfg).with_decoder_time_upscale([false; 3]).unwrap();
    check("taehv dec.noup.out (derived)", &derived.decode(&c["dec.in"]).unwrap(), &c["dec.noup.out"]);
    let mut stream = StreamingDecoder::new(&derived);
    let frames = stream.decode(&c["dec.in"]).unwrap();
    check("taehv dec.noup.out (streamed)", &Tensor::cat(&frames, 1).unwrap(), &c["dec.noup.out"]);
    // A preview model cannot be grown back.
    assert!(matches!(derived.with_decoder_time_upscale([false, true, true]), Err(Error::Invalid { .. })));
}

fn keys_json() -> BTreeMap<String, Vec<usize>> {
    serde_json::from_str(&std::fs::read_to_string(fixture("taehv_keys.json")).expect("keys")).expect("keys json")
}

#[test]
fn taehv_default_config_requests_exactly_the_released_keys() {
    let cfg = Config::default();
    let requested = weights::requested_shapes(|vb| Taehv::new(vb, &cfg)).unwrap();
    let released = keys_json();
    assert_eq!(requested, released);
    weights::check_shapes("taehv_keys.json", released, |vb| Taehv::new(vb, &cfg)).unwrap();
}

/// Writes `tensors` as a safetensors file in a fresh temporary folder.
fn write_file(tag: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-taehv-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("taehv.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

#[test]
fn taehv_wrong_checkpoints_name_file_tensor_and_shapes() {
    let cfg = tiny_config();
    let mut w = load_fixture("taehv_tiny_weights.safetensors");
    w.insert("decoder.22.weight".into(), Tensor::zeros((3, 8, 1, 1), DType::F32, &Device::Cpu).unwrap());
    let path = write_file("shape", &w);
    let err = Taehv::load(&[&path], &cfg, DType::F32, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    match err {
        Error::Weights(WeightsError::ShapeMismatch { name, file, expected, actual }) => {
            assert_eq!(name, "decoder.22.weight");
            assert_eq!(file, path.display().to_string());
            assert_eq!((expected, actual), (vec![3, 8, 3, 3], vec![3, 8, 1, 1]));
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(msg.contains("decoder.22.weight") && msg.contains(&path.display().to_string()), "{msg}");

    w.remove("decoder.22.weight");
    let path = write_file("missing", &w);
    let err = Taehv::load(&[&path], &cfg, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::Missing { ref name, .. }) if name == "decoder.22.weight"),
        "{err}"
    );

    // The released default config does not fit the tiny file.
    let err = Taehv::load(&[fixture("taehv_tiny_weights.safetensors")], &Config::default(), DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(matches!(err, Error::Weights(WeightsError::ShapeMismatch { .. })), "{err}");

    let err = Taehv::load(&["/nonexistent/taehv.safetensors"], &cfg, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/taehv.safetensors"), "{err}");
}

fn random_weights(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
    framepack_train::testing::random_weights(seed, 1.0, |vb| Taehv::new(vb, cfg)).unwrap()
}

fn model(cfg: &Config, w: &HashMap<String, Tensor>, dtype: DType) -> Taehv {
    Taehv::new(VarBuilder::from_tensors(w.clone(), dtype, &Device::Cpu), cfg).unwrap()
}

fn uniform(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn close_to_f64(label: &str, got: &Tensor, want: &Tensor) {
    let (rel, max) = errors(got, want);
    assert!(rel <= 1e-5 && max <= 1e-4, "{label}: rel-L2 {rel:.3e}, max-abs {max:.3e}");
}

#[test]
fn taehv_other_configs_match_the_f64_generic_path() {
    // The CPU fast path runs f32 only; f64 runs candle's conv2d.
    // Widths, encoder time downscale, decoder time and space upscale, patch size.
    let config = |latent, enc, dec, down, t_up, s_up, patch| Config {
        latent_channels: latent,
        encoder_width: enc,
        decoder_widths: dec,
        encoder_time_downscale: down,
        decoder_time_upscale: t_up,
        decoder_space_upscale: s_up,
        patch_size: patch,
        scaling_factor: 1.0,
    };
    let (t, f) = (true, false);
    let configs = [
        config(6, 5, [12, 7, 6, 4], [f, t, t], [t, f, t], [t, f, t], 1),
        config(4, 6, [8, 8, 6, 6], [t, f, f], [f, f, t], [t, t, t], 2),
    ];
    for (k, cfg) in configs.iter().enumerate() {
        let w = random_weights(cfg, 7 + k as u64);
        let (fast, exact) = (model(cfg, &w, DType::F32), model(cfg, &w, DType::F64));
        // Odd sizes and a batch of two.
        let (h, w_) = (2 * 8 * cfg.patch_size + 8, 3 * 8 * cfg.patch_size - 8);
        let video = uniform(&[2, 7, 3, h, w_], 11);
        let z = fast.encode(&video).unwrap();
        let z64 = exact.encode(&video.to_dtype(DType::F64).unwrap()).unwrap();
        // Each stride-2 stage rounds up, as PyTorch's padded convolution does.
        let down = |x: usize| (x / cfg.patch_size).div_ceil(2).div_ceil(2).div_ceil(2);
        assert_eq!(z.dims(), [2, cfg.encoded_latents(7), cfg.latent_channels, down(h), down(w_)]);
        close_to_f64(&format!("config {k} encode"), &z, &z64);

        let lat = uniform(&[2, 5, cfg.latent_channels, 5, 7], 13).affine(4.0, -2.0).unwrap();
        let x = fast.decode(&lat).unwrap();
        let x64 = exact.decode(&lat.to_dtype(DType::F64).unwrap()).unwrap();
        let up = cfg.space_upscale();
        assert_eq!(x.dims(), [2, cfg.decoded_frames(5), 3, 5 * up, 7 * up]);
        close_to_f64(&format!("config {k} decode"), &x, &x64);

        let mut stream = StreamingDecoder::new(&fast);
        let mut frames = stream.decode(&lat.narrow(1, 0, 2).unwrap()).unwrap();
        frames.extend(stream.decode(&lat.narrow(1, 2, 3).unwrap()).unwrap());
        close_to_f64(&format!("config {k} streamed"), &Tensor::cat(&frames, 1).unwrap(), &x64);
    }
}

#[test]
fn taehv_scaling_factor_scales_latents_and_unscales_decoder_input() {
    let cfg = tiny_config();
    let scaled_cfg = Config { scaling_factor: 2.5, ..cfg.clone() };
    let (plain, scaled) = (tiny(&cfg), tiny(&scaled_cfg));
    let video = &cases()["enc.in"];
    let z = plain.encode(video).unwrap();
    let zs = scaled.encode(video).unwrap();
    check("scaled encode = 2.5 · encode", &zs, &z.affine(2.5, 0.0).unwrap());
    let x = plain.decode(&z).unwrap();
    check("scaled decode of scaled latents", &scaled.decode(&zs).unwrap(), &x);
    let frames = StreamingDecoder::new(&scaled).decode(&zs).unwrap();
    check("scaled stream of scaled latents", &Tensor::cat(&frames, 1).unwrap(), &x);
    let bad = Config { scaling_factor: 0.0, ..cfg };
    assert!(matches!(bad.validate(), Err(Error::Invalid { .. })));
}

#[test]
fn taehv_trains_through_autograd() {
    let cfg = tiny_config();
    let w = load_fixture("taehv_tiny_weights.safetensors");
    let vars: HashMap<String, Var> = w.iter().map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap())).collect();
    let tensors: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let m = Taehv::new(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), &cfg).unwrap();
    let c = cases();
    let video = &c["enc.in"];
    // The tracked path computes the same values as the fast path.
    let z = m.encode(video).unwrap();
    check("taehv enc.out (autograd path)", &z, &c["enc.out"]);
    let recon = m.decode(&z).unwrap();
    let loss = (recon - video).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    for name in ["encoder.0.weight", "encoder.4.conv.0.weight", "decoder.13.conv.weight", "decoder.22.bias"] {
        let g = grads.get(vars[name].as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm.is_finite() && norm > 0.0, "{name}: gradient norm {norm}");
    }
}

#[test]
fn taehv_bad_inputs_are_errors() {
    let m = tiny(&tiny_config());
    let four = Tensor::zeros((1, 3, 32, 48), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.encode(&four), Err(Error::Invalid { .. })));
    let gray = Tensor::zeros((1, 2, 1, 32, 48), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.encode(&gray), Err(Error::Invalid { .. })));
    let lat = Tensor::zeros((1, 2, 8, 4, 6), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.decode(&lat), Err(Error::Invalid { .. })));
    assert!(matches!(StreamingDecoder::new(&m).push(&lat), Err(Error::Invalid { .. })));
}
