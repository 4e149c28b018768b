//! The nano TAEHV's training runs: checkpoints, the loss log, resuming, loading the result as a
//! TAEHV checkpoint, bad settings.

use framepack_train::clips::ClipConfig;
use framepack_train::taehv::{self, TaehvTraining};
use framepack_train::train::RunFiles;

fn cpu() -> candle_core::Device {
    candle_core::Device::Cpu
}

fn settings(steps: usize) -> TaehvTraining {
    TaehvTraining {
        steps,
        batch: 1,
        frames: 5,
        width: 32,
        height: 24,
        crop: Some((16, 16)),
        checkpoint_every: 2,
        ..TaehvTraining::default()
    }
}

#[test]
fn a_run_saves_logs_resumes_and_loads_as_a_taehv_checkpoint() {
    let dir = std::env::temp_dir().join(format!("framepack-nano-taehv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut seen = Vec::new();
    assert_eq!(taehv::train_taehv(&dir, &settings(2), &cpu(), |s| seen.push(*s)).unwrap(), 2);
    assert_eq!(seen.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    assert!(seen.iter().all(|s| s.loss.is_finite() && s.recon > 0.0 && s.latent_rms > 0.0 && s.psnr.is_finite()));
    let files = RunFiles::taehv(&dir);
    let saved = std::fs::read(&files.weights).unwrap();

    // A step logged after the last checkpoint (a run stopped between checkpoints) is dropped
    // from the log when the run resumes, so it is not there twice.
    let mut text = std::fs::read_to_string(&files.log).unwrap();
    text.push_str("3,0.5,0.5,3.0,0.1,1.0\n");
    std::fs::write(&files.log, text).unwrap();
    let mut resumed = Vec::new();
    assert_eq!(taehv::train_taehv(&dir, &settings(3), &cpu(), |s| resumed.push(s.step)).unwrap(), 3);
    assert_eq!(resumed, [3]);
    assert_ne!(std::fs::read(&files.weights).unwrap(), saved, "step 3 was saved");
    let log = std::fs::read_to_string(&files.log).unwrap();
    assert_eq!(log.lines().next().unwrap(), "step,loss,recon,psnr,latent_rms,seconds");
    let steps: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["1", "2", "3"]);
    assert_eq!(taehv::train_taehv(&dir, &settings(3), &cpu(), |_| panic!("no step left")).unwrap(), 3);

    // With the encoder frozen only decoder tensors change.
    let before = candle_core::safetensors::load(&files.weights, &cpu()).unwrap();
    let frozen = TaehvTraining { freeze_encoder: true, ..settings(4) };
    assert_eq!(taehv::train_taehv(&dir, &frozen, &cpu(), |_| {}).unwrap(), 4);
    let after = candle_core::safetensors::load(&files.weights, &cpu()).unwrap();
    let changed = |name: &str| {
        let d = (&before[name] - &after[name]).unwrap().abs().unwrap().sum_all().unwrap();
        d.to_scalar::<f32>().unwrap() > 0.0
    };
    assert!(before.keys().filter(|k| k.starts_with("encoder.")).all(|k| !changed(k)), "an encoder tensor changed");
    assert!(before.keys().filter(|k| k.starts_with("decoder.")).any(|k| changed(k)), "no decoder tensor changed");

    // The weights carry upstream's names: they load strictly as the nano TAEHV config.
    let psnr =
        taehv::held_out_psnr(&files.weights, 2, &ClipConfig { width: 32, height: 24, frames: 5, fps: 30.0 }).unwrap();
    assert!(psnr.is_finite() && psnr > 0.0, "{psnr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_are_refused() {
    let dir = std::env::temp_dir().join(format!("framepack-nano-taehv-bad-{}", std::process::id()));
    for bad in [
        TaehvTraining { frames: 6, ..settings(1) },
        TaehvTraining { batch: 0, ..settings(1) },
        TaehvTraining { width: 30, ..settings(1) },
        TaehvTraining { crop: Some((40, 16)), ..settings(1) },
        TaehvTraining { crop: Some((12, 16)), ..settings(1) },
    ] {
        let err = taehv::train_taehv(&dir, &bad, &cpu(), |_| {}).unwrap_err();
        assert!(err.to_string().contains("training settings"), "{err}");
    }
}
