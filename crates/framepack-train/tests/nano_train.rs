//! The nano VAE's training runs: checkpoints, the loss log, resuming, bad settings.

use framepack_train::train::{self, RunFiles, VaeTraining};

fn settings(steps: usize) -> VaeTraining {
    VaeTraining { steps, batch: 1, frames: 5, size: 32, checkpoint_every: 2, ..VaeTraining::default() }
}

#[test]
fn a_run_saves_logs_and_resumes_where_it_stopped() {
    let dir = std::env::temp_dir().join(format!("framepack-nano-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut seen = Vec::new();
    assert_eq!(train::train_vae(&dir, &settings(2), |s| seen.push(*s)).unwrap(), 2);
    assert_eq!(seen.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    assert!(seen.iter().all(|s| s.loss.is_finite() && s.recon > 0.0 && s.kl >= 0.0));
    let files = RunFiles::vae(&dir);
    assert!(files.weights.exists() && files.state.exists());
    let saved = std::fs::read(&files.weights).unwrap();

    // Resuming continues at step 3 from the saved weights.
    let mut resumed = Vec::new();
    assert_eq!(train::train_vae(&dir, &settings(3), |s| resumed.push(s.step)).unwrap(), 3);
    assert_eq!(resumed, [3]);
    assert_ne!(std::fs::read(&files.weights).unwrap(), saved, "step 3 was saved");
    let log = std::fs::read_to_string(&files.log).unwrap();
    let steps: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(log.lines().next().unwrap(), "step,loss,recon,kl,seconds");
    assert_eq!(steps, ["1", "2", "3"]);
    // A finished run does nothing more.
    assert_eq!(train::train_vae(&dir, &settings(3), |_| panic!("no step left")).unwrap(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_are_refused() {
    let dir = std::env::temp_dir().join(format!("framepack-nano-train-bad-{}", std::process::id()));
    for bad in [
        VaeTraining { frames: 6, ..settings(1) },
        VaeTraining { batch: 0, ..settings(1) },
        VaeTraining { size: 30, ..settings(1) },
    ] {
        let err = train::train_vae(&dir, &bad, |_| {}).unwrap_err();
        assert!(err.to_string().contains("training settings"), "{err}");
    }
}
