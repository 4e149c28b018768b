//! The nano transformer's training: examples laid out like the generator's sections, the
//! flow-matching step, checkpoints and resume.

use candle_core::{DType, Device, Tensor};
use framepack::Pipeline;
use framepack::bundle::BundlePaths;
use framepack::packing::{ContextSchedule, SectionPlan};
use framepack_train::clips::ClipConfig;
use framepack_train::dit::{self, ClipLatents, DitTraining};
use framepack_train::testing;
use framepack_train::train::RunFiles;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-nano-dit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny_pipeline(dir: &std::path::Path) -> Pipeline {
    testing::write_tiny_bundle(&dir.join("bundle"), 3).unwrap();
    Pipeline::load(&BundlePaths::from_dir(dir.join("bundle")), &Device::Cpu, DType::F32).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn sections_take_their_history_from_the_clip_as_the_generator_lays_it_out() {
    let dir = temp("layout");
    let mut pipeline = tiny_pipeline(&dir);
    let window = 2;
    let cfg = ClipConfig { width: 32, height: 32, frames: 4 * (1 + 3 * window) - 3, fps: 30.0 };
    let data = ClipLatents::encode(&mut pipeline, &[1, 2], &cfg, &[4 * 2 * window, 4 * 3 * window], |_| {}).unwrap();
    let z = &data.latents[0];
    assert_eq!(z.dims(), &[1, 16, 1 + 3 * window, 4, 4]);

    // Forward geometric, section 2 of 3: 1x = [start, latent 4], the window is latents 5..7.
    let schedule = ContextSchedule::geometric();
    let plan = SectionPlan::new(3, window, schedule.order).unwrap();
    let b = data.section(0, &schedule, &plan, 2, false).unwrap();
    assert_eq!(max_diff(&b.x0, &z.narrow(2, 5, window).unwrap()), 0.0);
    let (clean, idx) = b.groups[0].as_ref().unwrap();
    assert_eq!(max_diff(&clean.narrow(2, 0, 1).unwrap(), &z.narrow(2, 0, 1).unwrap()), 0.0);
    assert_eq!(max_diff(&clean.narrow(2, 1, 1).unwrap(), &z.narrow(2, 4, 1).unwrap()), 0.0);
    let layout = schedule.layout(&plan, 2).unwrap();
    assert_eq!(idx.flatten_all().unwrap().to_vec1::<i64>().unwrap(), layout.groups[0].indices);

    // Inverted, first generated section (the last of the video): its history is the start
    // latent and zeros (nothing after the window is generated yet).
    let schedule = ContextSchedule::inverted_anti_drifting();
    let plan = SectionPlan::new(3, window, schedule.order).unwrap();
    let b = data.section(1, &schedule, &plan, 0, false).unwrap();
    assert_eq!(max_diff(&b.x0, &data.latents[1].narrow(2, 5, window).unwrap()), 0.0);
    let (clean, _) = b.groups[0].as_ref().unwrap();
    assert_eq!(max_diff(&clean.narrow(2, 0, 1).unwrap(), &data.latents[1].narrow(2, 0, 1).unwrap()), 0.0);
    assert_eq!(clean.narrow(2, 1, 1).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);

    // With an end frame, the end slot (after the video's last latent, nearest the window of the
    // first generated section) holds the still latent of the plan's last frame, as an end image
    // would; the rest of the layout is unchanged.
    let e = data.section(1, &schedule, &plan, 0, true).unwrap();
    let layout = schedule.layout(&plan, 0).unwrap();
    let (g, k) = layout
        .groups
        .iter()
        .enumerate()
        .find_map(|(g, grp)| grp.slots.iter().position(|s| *s == framepack::packing::Slot::End).map(|k| (g, k)))
        .expect("the inverted schedule has an end slot");
    let (with_end, _) = e.groups[g].as_ref().unwrap();
    let end = &data.end_latents[1][1];
    assert_eq!(max_diff(&with_end.narrow(2, k, 1).unwrap(), end), 0.0);
    assert!(end.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    let (without, _) = b.groups[g].as_ref().unwrap();
    assert_eq!(without.narrow(2, k, 1).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(max_diff(&e.x0, &b.x0), 0.0);
    // The still latent is the last frame encoded alone, not the clip's last latent.
    let clip = framepack_train::clips::clip(2, &cfg).unwrap().to_tensor(&Device::Cpu).unwrap();
    let still = pipeline.generator().models().vae.encode(&clip.narrow(2, 4 * 3 * window, 1).unwrap(), None).unwrap();
    assert_eq!(max_diff(end, &still), 0.0);
    // A plan whose last frame was not encoded as an end image is an error, not a zero slot.
    let one = SectionPlan::new(1, window, schedule.order).unwrap();
    assert!(data.section(0, &schedule, &one, 0, true).unwrap_err().to_string().contains("end image"));

    // A plan longer than the clip is refused.
    let long = SectionPlan::new(4, window, schedule.order).unwrap();
    assert!(data.section(0, &schedule, &long, 0, false).unwrap_err().to_string().contains("latents"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn settings(steps: usize) -> DitTraining {
    DitTraining {
        steps,
        batch: 2,
        clips: 2,
        max_sections: 2,
        window: 2,
        sizes: vec![[32, 32], [32, 16]],
        checkpoint_every: 2,
        ..DitTraining::default()
    }
}

#[test]
fn a_transformer_run_saves_logs_and_resumes() {
    let dir = temp("run");
    let mut pipeline = tiny_pipeline(&dir);
    let mut seen = Vec::new();
    let step = dit::train_dit(&dir, &mut pipeline, &settings(2), &Device::Cpu, |_, _| {}, |s| seen.push(*s)).unwrap();
    assert_eq!(step, 2);
    assert_eq!(seen.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    // The output projection starts at zero: the first loss is the target's mean square.
    assert!(seen.iter().all(|s| s.loss.is_finite() && s.loss > 0.1), "{seen:?}");
    let files = RunFiles::dit(&dir);
    let saved = std::fs::read(&files.weights).unwrap();
    // The encoded clips are cached beside the run: the resumed run does not encode again.
    assert!(dir.join("dit_clips.safetensors").exists());
    let mut resumed = Vec::new();
    let mut encoded = Vec::new();
    dit::train_dit(
        &dir,
        &mut pipeline,
        &settings(3),
        &Device::Cpu,
        |i, n| encoded.push((i, n)),
        |s| resumed.push(s.step),
    )
    .unwrap();
    assert_eq!(resumed, [3]);
    assert_eq!(encoded, [(2, 2)]);
    assert_ne!(std::fs::read(&files.weights).unwrap(), saved);
    let log = std::fs::read_to_string(&files.log).unwrap();
    assert_eq!(log.lines().next().unwrap(), "step,loss,seconds");
    assert_eq!(log.lines().count(), 4);
    // The checkpoint loads as a transformer of the nano config.
    let t = framepack::models::transformer::Transformer::load(
        &[&files.weights],
        &dit::nano_transformer_config(),
        DType::F32,
        &Device::Cpu,
        Default::default(),
    );
    assert!(t.is_ok(), "{:?}", t.err());

    // A run with end frames trains too.
    let ended = temp("run-end");
    let with_end = DitTraining { end_share: 0.5, ..settings(2) };
    assert_eq!(dit::end_frames(&with_end), [8, 16]);
    assert_eq!(dit::train_dit(&ended, &mut pipeline, &with_end, &Device::Cpu, |_, _| {}, |_| {}).unwrap(), 2);
    std::fs::remove_dir_all(&ended).unwrap();

    // A fresh run can start from given weights: with lr 0 its checkpoint is those weights.
    let warm = temp("run-init");
    let init = DitTraining { init: Some(files.weights.clone()), lr: 0.0, ..settings(1) };
    assert_eq!(dit::train_dit(&warm, &mut pipeline, &init, &Device::Cpu, |_, _| {}, |_| {}).unwrap(), 1);
    let a = candle_core::safetensors::load(&files.weights, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(RunFiles::dit(&warm).weights, &Device::Cpu).unwrap();
    assert!(a.iter().all(|(k, t)| max_diff(t, &b[k]) == 0.0), "the run did not start from the init weights");
    // Weights of another shape are refused with the tensor's name.
    std::fs::remove_dir_all(&warm).unwrap();
    let other = temp("other-init");
    let mut w = a.clone();
    let key = "proj_out.weight".to_string();
    w.insert(key.clone(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
    std::fs::create_dir_all(&other).unwrap();
    candle_core::safetensors::save(&w, other.join("w.safetensors")).unwrap();
    let init = DitTraining { init: Some(other.join("w.safetensors")), ..settings(1) };
    let e = dit::train_dit(&other.join("run"), &mut pipeline, &init, &Device::Cpu, |_, _| {}, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("proj_out.weight"), "{e}");
    std::fs::remove_dir_all(&other).unwrap();

    let bad = DitTraining { sizes: vec![[30, 32]], ..settings(1) };
    assert!(
        dit::train_dit(&dir, &mut pipeline, &bad, &Device::Cpu, |_, _| {}, |_| {})
            .unwrap_err()
            .to_string()
            .contains("settings")
    );
    let bad = DitTraining { end_share: 1.5, ..settings(1) };
    assert!(
        dit::train_dit(&dir, &mut pipeline, &bad, &Device::Cpu, |_, _| {}, |_| {})
            .unwrap_err()
            .to_string()
            .contains("settings")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flow_matching_steps_lower_the_loss_on_a_fixed_batch() {
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
    let dir = temp("fit");
    let mut pipeline = tiny_pipeline(&dir);
    let cfg = ClipConfig { width: 32, height: 32, frames: 4 * 3 - 3, fps: 30.0 };
    let data = ClipLatents::encode(&mut pipeline, &[5], &cfg, &[], |_| {}).unwrap();
    let mut rng = framepack::generator::NoiseRng::new(1);
    let batch =
        data.batch(&mut rng, &DitTraining { batch: 2, max_sections: 1, window: 2, ..DitTraining::default() }).unwrap();
    let sigmas = [0.3, 0.8];
    let eps = rng.normal_tensor(batch.x0.dims(), &Device::Cpu).unwrap();
    let map = VarMap::new();
    let cfg = framepack_train::testing::tiny_transformer_config();
    let model = framepack::models::transformer::Transformer::new(
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        &framepack::models::transformer::Config { guidance_embeds: false, ..cfg },
    )
    .unwrap();
    // VarMap starts every tensor at zero; give matrices a small random start.
    for v in map.all_vars() {
        if v.rank() > 1 {
            v.set(&Tensor::randn(0f32, 0.1, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let mut opt =
        AdamW::new(map.all_vars(), ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() }).unwrap();
    let first = dit::flow_loss(&model, &batch, &sigmas, &eps).unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..15 {
        let loss = dit::flow_loss(&model, &batch, &sigmas, &eps).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let last = dit::flow_loss(&model, &batch, &sigmas, &eps).unwrap().to_scalar::<f32>().unwrap();
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    std::fs::remove_dir_all(&dir).unwrap();
}
