//! Helpers shared by the parity tests: fixture loading and the project's numeric gates.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// Relative L2 gate for f32 parity with the reference.
pub const REL_L2: f64 = 1e-5;
/// Absolute gate for f32 parity with the reference.
pub const ATOL: f64 = 1e-4;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = fixture_path(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

pub fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key).unwrap_or_else(|| panic!("fixture has no tensor `{key}`"))
}

pub fn to_vec_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// (rel-L2, max-abs) of `got` against `want`.
pub fn errors(got: &Tensor, want: &Tensor) -> (f64, f64) {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let (g, w) = (to_vec_f64(got), to_vec_f64(want));
    let (mut num, mut den, mut max) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in g.iter().zip(&w) {
        num += (a - b) * (a - b);
        den += b * b;
        max = max.max((a - b).abs());
    }
    ((num / den.max(1e-300)).sqrt(), max)
}

/// Asserts the f32 parity gates and returns (rel-L2, max-abs).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> (f64, f64) {
    let (rel, max) = errors(got, want);
    assert!(
        rel <= REL_L2 && max <= ATOL,
        "{what}: rel-L2 {rel:.3e} (gate {REL_L2:e}), max-abs {max:.3e} (gate {ATOL:e})"
    );
    (rel, max)
}
