//! Parity of the sigma schedules and samplers with `schedules.safetensors` (diffusers) and
//! `unipc_toy.safetensors` (FramePack's own UniPC), plus the sampler's contracts.

mod common;

use std::cell::Cell;

use candle_core::{Device, Tensor};
use common::{assert_close, get, load_fixture, to_vec_f64};
use framepack::Error;
use framepack::sampling::{
    Sampler, Step, flux_mu, framepack_sigmas, model_guidance, model_timestep, round_bf16, sample_euler, sample_unipc,
    section_sigmas, shifted_sigmas,
};

fn vec_tensor(v: &[f64]) -> Tensor {
    Tensor::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap()
}

/// The toy denoiser the fixtures were made with: x0 = tanh(0.5·x)·(1 − 0.3·σ).
fn toy_x0(x: &Tensor, sigma: f64) -> framepack::Result<Tensor> {
    Ok(((x * 0.5)?.tanh()? * (1.0 - 0.3 * sigma))?)
}

/// Timesteps are σ·1000 in f32, where one ulp is 6e-5: compare them in σ units so the absolute
/// gate means the same as for every other O(1) tensor.
fn assert_timesteps(key: &str, sigmas: &[f64], want: &Tensor) -> (f64, f64) {
    assert_close(key, &vec_tensor(sigmas), &(want / 1000.0).unwrap())
}

fn no_callback(_: &Step<'_>) -> framepack::Result<()> {
    Ok(())
}

#[test]
fn framepack_and_diffusers_schedules_match_fixture() {
    let f = load_fixture("schedules.safetensors");
    let mut worst: f64 = 0.0;
    for l in [324usize, 2304, 9216, 14400] {
        for n in [1usize, 2, 3, 5, 10, 25, 30] {
            let ours = framepack_sigmas(n, flux_mu(l)).unwrap();
            for key in [format!("framepack.L{l}.n{n}.sigmas"), format!("diffusers_dynamic.L{l}.n{n}.sigmas")] {
                let (rel, _) = assert_close(&key, &vec_tensor(&ours), get(&f, &key));
                worst = worst.max(rel);
            }
            let key = format!("diffusers_dynamic.L{l}.n{n}.timesteps");
            let (rel, _) = assert_timesteps(&key, &ours[..n], get(&f, &key));
            worst = worst.max(rel);
        }
    }
    for n in [1usize, 2, 3, 5, 10, 25, 30] {
        let ours = shifted_sigmas(n, 7.0).unwrap();
        let key = format!("diffusers_pipeline.n{n}.sigmas");
        let (rel, _) = assert_close(&key, &vec_tensor(&ours), get(&f, &key));
        worst = worst.max(rel);
        let key = format!("diffusers_pipeline.n{n}.timesteps");
        let (rel, _) = assert_timesteps(&key, &ours[..n], get(&f, &key));
        worst = worst.max(rel);
    }
    println!("schedules: worst rel-L2 {worst:.3e} over 4 seq lens x 7 step counts (+ static shift 7)");
}

#[test]
fn mu_is_capped_at_ln7_for_official_buckets() {
    assert_eq!(flux_mu(13_680), 7f64.ln());
    assert!((flux_mu(256) - 0.5).abs() < 1e-12);
    assert!(flux_mu(2304) < 7f64.ln());
    let a = framepack_sigmas(25, 7f64.ln()).unwrap();
    let b = shifted_sigmas(25, 7.0).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-12);
    }
    assert_eq!(section_sigmas(25, 9, 80, 76).unwrap(), a);
}

#[test]
fn spec_25_step_schedule_and_bf16_timesteps() {
    let sig = framepack_sigmas(25, 7f64.ln()).unwrap();
    let spec = [
        1.0000, 0.9941, 0.9877, 0.9809, 0.9735, 0.9655, 0.9568, 0.9474, 0.9370, 0.9256, 0.9130, 0.8991, 0.8835, 0.8660,
        0.8462, 0.8235, 0.7975, 0.7671, 0.7313, 0.6885, 0.6364, 0.5714, 0.4884, 0.3784, 0.2258,
    ];
    for (s, want) in sig.iter().zip(spec) {
        assert!((s - want).abs() < 6e-5, "{s} vs {want}");
    }
    assert_eq!(sig[25], 0.0);
    let ts: Vec<f32> = sig[..25].iter().map(|&s| model_timestep(s)).collect();
    let want: Vec<f32> = vec![
        1000., 996., 988., 980., 972., 964., 956., 948., 936., 924., 912., 900., 884., 864., 848., 824., 796., 768.,
        732., 688., 636., 572., 488., 378., 226.,
    ];
    assert_eq!(ts, want);
    assert_eq!(model_guidance(10.0), 9984.0);
    assert_eq!(round_bf16(1.0), 1.0);
    assert_eq!(round_bf16(-10000.0), -9984.0);
}

#[test]
fn euler_matches_diffusers_flow_match_euler() {
    let f = load_fixture("schedules.safetensors");
    let sigmas = shifted_sigmas(5, 7.0).unwrap();
    assert_close("euler.sigmas", &vec_tensor(&sigmas), get(&f, "euler.sigmas"));
    let mut xs = Vec::new();
    let out = sample_euler(&mut toy_x0, get(&f, "euler.in.noise"), &sigmas, &mut |s: &Step<'_>| {
        xs.push(s.x.clone());
        Ok(())
    })
    .unwrap();
    let mut worst: f64 = 0.0;
    for (i, x) in xs.iter().enumerate() {
        worst = worst.max(assert_close(&format!("euler.step{i}.x"), x, get(&f, &format!("euler.step{i}.x"))).0);
    }
    let (rel, max) = assert_close("euler.out", &out, get(&f, "euler.out"));
    println!("euler: out rel-L2 {rel:.3e} max-abs {max:.3e}; worst step rel-L2 {worst:.3e}");
}

#[test]
fn unipc_matches_framepack_every_step() {
    let f = load_fixture("unipc_toy.safetensors");
    for n in [1usize, 2, 3, 6, 25] {
        let sigmas = to_vec_f64(get(&f, &format!("n{n}.sigmas")));
        let ours = framepack_sigmas(n, 7f64.ln()).unwrap();
        assert_close(&format!("n{n}.sigmas"), &vec_tensor(&ours), get(&f, &format!("n{n}.sigmas")));

        let calls = Cell::new(0usize);
        let mut model = |x: &Tensor, s: f64| {
            calls.set(calls.get() + 1);
            toy_x0(x, s)
        };
        let mut steps = Vec::new();
        let out = sample_unipc(&mut model, get(&f, &format!("n{n}.in.noise")), &sigmas, &mut |s: &Step<'_>| {
            assert_eq!(s.total, n);
            steps.push((s.x.clone(), s.denoised.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(calls.get(), n, "UniPC must evaluate the model exactly once per step");
        assert_eq!(steps.len(), n);
        let mut worst: f64 = 0.0;
        for (i, (x, d)) in steps.iter().enumerate() {
            let (r1, _) = assert_close(&format!("n{n}.step{i}.x"), x, get(&f, &format!("n{n}.step{i}.x")));
            let (r2, _) =
                assert_close(&format!("n{n}.step{i}.denoised"), d, get(&f, &format!("n{n}.step{i}.denoised")));
            worst = worst.max(r1).max(r2);
        }
        let (rel, max) = assert_close(&format!("n{n}.out"), &out, get(&f, &format!("n{n}.out")));
        println!("unipc n={n}: out rel-L2 {rel:.3e} max-abs {max:.3e}; worst step x/denoised rel-L2 {worst:.3e}");
    }
}

#[test]
fn unipc_is_exact_for_a_constant_denoiser() {
    // If the model always predicts the same x0, every flow-matching step lands on the line
    // between x and x0, and the result is that x0.
    let dev = Device::Cpu;
    let x0 = Tensor::new(&[0.25f32, -0.5, 1.0], &dev).unwrap();
    let noise = Tensor::new(&[1.0f32, 2.0, -3.0], &dev).unwrap();
    let sigmas = framepack_sigmas(10, 1.2).unwrap();
    let mut model = |_: &Tensor, _: f64| Ok(x0.clone());
    let out = sample_unipc(&mut model, &noise, &sigmas, &mut no_callback).unwrap();
    assert_eq!(to_vec_f64(&out), to_vec_f64(&x0));
}

#[test]
fn callback_error_stops_sampling() {
    let dev = Device::Cpu;
    let noise = Tensor::ones(4, candle_core::DType::F32, &dev).unwrap();
    let sigmas = framepack_sigmas(25, 7f64.ln()).unwrap();
    for sampler in [Sampler::UniPc, Sampler::Euler] {
        let calls = Cell::new(0);
        let mut model = |x: &Tensor, s: f64| {
            calls.set(calls.get() + 1);
            toy_x0(x, s)
        };
        let r = sampler.sample(&mut model, &noise, &sigmas, &mut |s: &Step<'_>| {
            if s.index == 2 { Err(Error::Cancelled) } else { Ok(()) }
        });
        assert!(matches!(r, Err(Error::Cancelled)));
        assert_eq!(calls.get(), 3, "{sampler:?} must stop right after the cancelled step");
    }
}

#[test]
fn invalid_sampler_arguments_are_errors() {
    assert!(matches!(framepack_sigmas(0, 1.0), Err(Error::Invalid { what: "steps", .. })));
    assert!(matches!(shifted_sigmas(5, 0.0), Err(Error::Invalid { what: "shift", .. })));
    assert!(matches!(shifted_sigmas(5, f64::NAN), Err(Error::Invalid { .. })));
    let noise = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu).unwrap();
    for sigmas in [vec![1.0], vec![], vec![1.0, 1.0, 0.0], vec![0.5, 0.8, 0.0], vec![1.0, -0.5, -1.0]] {
        for sampler in [Sampler::UniPc, Sampler::Euler] {
            let r = sampler.sample(&mut toy_x0, &noise, &sigmas, &mut no_callback);
            assert!(matches!(r, Err(Error::Invalid { what: "sigmas", .. })), "{sigmas:?} {sampler:?}");
        }
    }
}
