//! Strict loading: exact names and shapes, and errors that name the file, tensor and shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, linear};
use framepack::weights::{self, WeightFiles};
use framepack::{Error, WeightsError};

struct Tiny {
    a: Linear,
    b: Linear,
}

fn tiny(vb: VarBuilder<'_>) -> candle_core::Result<Tiny> {
    Ok(Tiny { a: linear(4, 3, vb.pp("blocks.0.proj"))?, b: linear(3, 2, vb.pp("out"))? })
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("framepack-weights-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tensors() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let t = |shape: &[usize]| {
        Tensor::arange(0f32, shape.iter().product::<usize>() as f32, &dev).unwrap().reshape(shape).unwrap()
    };
    HashMap::from([
        ("blocks.0.proj.weight".to_string(), t(&[3, 4])),
        ("blocks.0.proj.bias".to_string(), t(&[3])),
        ("out.weight".to_string(), t(&[2, 3])),
        ("out.bias".to_string(), t(&[2])),
    ])
}

fn write(dir: &PathBuf, file: &str, t: &HashMap<String, Tensor>) -> PathBuf {
    let p = dir.join(file);
    candle_core::safetensors::save(t, &p).unwrap();
    p
}

fn weights_err(r: framepack::Result<Tiny>) -> WeightsError {
    match r {
        Err(Error::Weights(e)) => e,
        Err(e) => panic!("expected a weights error, got {e}"),
        Ok(_) => panic!("expected a weights error, got a model"),
    }
}

#[test]
fn loads_sharded_files_in_the_requested_dtype() {
    let dir = tmp_dir("ok");
    let mut all = tensors();
    let second: HashMap<_, _> =
        ["out.weight", "out.bias"].iter().map(|k| (k.to_string(), all.remove(*k).unwrap())).collect();
    let files = [write(&dir, "a.safetensors", &all), write(&dir, "b.safetensors", &second)];
    let m = weights::load(WeightFiles::open(&files).unwrap(), DType::BF16, &Device::Cpu, tiny).unwrap();
    let x = Tensor::ones((1, 4), DType::BF16, &Device::Cpu).unwrap();
    let y = m.b.forward(&m.a.forward(&x).unwrap()).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(y.dims(), &[1, 2]);
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let dir = tmp_dir("bad");
    let mut t = tensors();
    t.remove("out.bias");
    let f = write(&dir, "missing.safetensors", &t);
    let e = weights_err(weights::load(WeightFiles::open(&[&f]).unwrap(), DType::F32, &Device::Cpu, tiny));
    assert!(matches!(&e, WeightsError::Missing { name, expected, .. } if name == "out.bias" && expected == &[2]));
    assert!(e.to_string().contains("missing.safetensors"), "{e}");

    let mut t = tensors();
    t.insert("out.weight".into(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
    let f = write(&dir, "shape.safetensors", &t);
    let e = weights_err(weights::load(WeightFiles::open(&[&f]).unwrap(), DType::F32, &Device::Cpu, tiny));
    assert!(matches!(&e, WeightsError::ShapeMismatch { name, expected, actual, .. }
        if name == "out.weight" && expected == &[2, 3] && actual == &[3, 3]));
    let msg = e.to_string();
    assert!(msg.contains("shape.safetensors") && msg.contains("[2, 3]") && msg.contains("[3, 3]"), "{msg}");

    let mut t = tensors();
    t.insert("blocks.1.proj.weight".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
    let f = write(&dir, "extra.safetensors", &t);
    let e = weights_err(weights::load(WeightFiles::open(&[&f]).unwrap(), DType::F32, &Device::Cpu, tiny));
    assert!(matches!(&e, WeightsError::Unexpected { names, .. } if names == &["blocks.1.proj.weight"]));
    assert!(e.to_string().contains("blocks.1.proj.weight"));
}

#[test]
fn unreadable_files_are_reported_with_their_path() {
    let dir = tmp_dir("files");
    let missing = dir.join("nope.safetensors");
    assert!(matches!(WeightFiles::open(&[&missing]), Err(WeightsError::Io { path, .. }) if path == missing));
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......").unwrap();
    let e = WeightFiles::open(&[&corrupt]).err().expect("corrupt file must fail");
    assert!(matches!(&e, WeightsError::Corrupt { path, .. } if *path == corrupt), "{e}");
    let t = tensors();
    let a = write(&dir, "a.safetensors", &t);
    let b = write(&dir, "b.safetensors", &t);
    assert!(matches!(WeightFiles::open(&[&a, &b]), Err(WeightsError::Duplicate { .. })));
}

#[test]
fn shape_only_walks_allocate_nothing_and_check_names() {
    let shapes = weights::requested_shapes(tiny).unwrap();
    let want: BTreeMap<String, Vec<usize>> = tensors().iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    assert_eq!(shapes, want);
    weights::check_shapes("keys.json", want.clone(), tiny).unwrap();
    let mut wrong = want.clone();
    wrong.insert("blocks.0.proj.bias".into(), vec![4]);
    let e = weights::check_shapes("keys.json", wrong, tiny).unwrap_err();
    assert!(e.to_string().contains("blocks.0.proj.bias") && e.to_string().contains("keys.json"), "{e}");
    let mut extra = want;
    extra.insert("norm.weight".into(), vec![3]);
    assert!(matches!(
        weights::check_shapes("keys.json", extra, tiny),
        Err(Error::Weights(WeightsError::Unexpected { .. }))
    ));
}
