//! The generation loop end to end with a tiny random transformer and VAE: frame counts of both
//! loops, determinism, cancellation, TeaCache, end frames, progress and input errors.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use framepack::Error;
use framepack::generator::{
    CancelToken, Conditioning, DecoderChoice, Frame, Generator, JobSettings, Models, TextConditioning,
};
use framepack::models::Autoencoder;
use framepack::packing::{ScheduleChoice, SectionOrder};
use framepack::sampling::Sampler;
use framepack_train::testing;

fn generator() -> Generator {
    let dev = Device::Cpu;
    Generator::new(Models {
        transformer: testing::tiny_transformer(1, DType::F32, &dev).unwrap(),
        vae: Autoencoder::hunyuan_video(testing::tiny_vae(2, DType::F32, &dev).unwrap(), DType::F32),
        tiny_decoder: Some(testing::tiny_taehv(3, DType::F32, &dev).unwrap()),
    })
}

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    framepack::generator::NoiseRng::new(seed).normal_tensor(shape, &Device::Cpu).unwrap()
}

fn conditioning(width: usize, height: usize) -> Conditioning {
    Conditioning {
        start_image: testing::test_image(width, height, 3).unwrap(),
        end_image: None,
        image_embeds: Some(randn(4, &[1, 4, 8])),
        text: vec![TextConditioning { llama: randn(5, &[1, 5, 16]), pooled: randn(6, &[1, 8]) }],
    }
}

fn settings(schedule: ScheduleChoice, seconds: f64, window: usize) -> JobSettings {
    JobSettings { seconds, window, schedule, steps: 4, seed: 7, ..JobSettings::default() }
}

/// Runs a job, checks that the section frame ranges tile the video in the loop's order, and
/// returns the frames in play order.
fn run(g: &Generator, cond: Conditioning, s: JobSettings) -> Vec<Frame> {
    let job = g.start(cond, s).unwrap();
    let (total, order, n) = (job.total_frames(), job.plan().order, job.plan().sections);
    let job_window = job.plan().window;
    let mut video: Vec<Option<Frame>> = vec![None; total];
    let mut ranges = Vec::new();
    for (i, section) in job.enumerate() {
        let section = section.unwrap();
        assert_eq!(section.index, i);
        assert_eq!(section.is_last, i + 1 == n);
        assert_eq!(section.frames.len(), section.frame_range.len());
        assert_eq!(section.provisional.len(), section.provisional_range.len());
        // Provisional frames sit right next to the final ones, on the ungenerated side.
        if section.is_last {
            assert!(section.provisional.is_empty());
        } else {
            assert_eq!(section.provisional.len(), 4 * job_window - 3);
            match order {
                SectionOrder::Forward => assert_eq!(section.provisional_range.start, section.frame_range.end),
                SectionOrder::Inverted => assert_eq!(section.provisional_range.end, section.frame_range.start),
            }
        }
        for (k, f) in section.frame_range.clone().zip(section.frames) {
            assert!(video[k].is_none(), "frame {k} produced twice");
            video[k] = Some(f);
        }
        ranges.push(section.frame_range);
    }
    assert_eq!(ranges.len(), n);
    for w in ranges.windows(2) {
        match order {
            SectionOrder::Forward => assert_eq!(w[0].end, w[1].start, "{ranges:?}"),
            SectionOrder::Inverted => assert_eq!(w[1].end, w[0].start, "{ranges:?}"),
        }
    }
    video.into_iter().map(|f| f.expect("every frame produced")).collect()
}

#[test]
fn both_loops_give_36n_plus_1_frames_for_window_9() {
    let g = generator();
    for schedule in [ScheduleChoice::InvertedAntiDrifting, ScheduleChoice::Geometric] {
        // 2.4 s at 30 fps = 72 frames = 2 sections of 36.
        let video = run(&g, conditioning(32, 32), settings(schedule.clone(), 2.4, 9));
        assert_eq!(video.len(), 36 * 2 + 1, "{schedule:?}");
        assert!(video.iter().all(|f| (f.width, f.height, f.rgb.len()) == (32, 32, 32 * 32 * 3)));
        // Real pictures, not a constant or saturated field: many distinct values, frames differ.
        let mut seen = [false; 256];
        video.iter().flat_map(|f| &f.rgb).for_each(|&b| seen[b as usize] = true);
        assert!(seen.iter().filter(|&&s| s).count() > 32, "{schedule:?}: too few distinct pixel values");
        assert!(video[0] != video[36] && video[36] != video[72], "{schedule:?}: frames do not change");
    }
}

#[test]
fn frame_counts_follow_4_times_1_plus_n_w_minus_3() {
    let g = generator();
    // (schedule, seconds, window) → sections = round(30·s / 4W).
    let cases = [
        (ScheduleChoice::InvertedAntiDrifting, 1.2, 3, 3),
        (ScheduleChoice::Geometric, 1.2, 3, 3),
        (ScheduleChoice::InvertedAntiDrifting, 0.5, 4, 1),
        (ScheduleChoice::Geometric, 0.5, 4, 1),
        (ScheduleChoice::FirstFramePriority, 0.8, 2, 3),
        (ScheduleChoice::Symmetric, 2.0, 5, 3),
        (ScheduleChoice::InvertedAntiDrifting, 3.6, 2, 14),
    ];
    for (schedule, seconds, window, sections) in cases {
        let s = settings(schedule.clone(), seconds, window);
        let job = g.start(conditioning(16, 32), s.clone()).unwrap();
        assert_eq!(job.plan().sections, sections, "{schedule:?} {seconds}s W={window}");
        let video = run(&g, conditioning(16, 32), s);
        assert_eq!(video.len(), 4 * (1 + sections * window) - 3, "{schedule:?} {seconds}s W={window}");
        assert!(video.iter().all(|f| (f.width, f.height) == (16, 32)));
    }
}

#[test]
fn same_request_and_seed_give_identical_frames() {
    let g = generator();
    for schedule in [ScheduleChoice::InvertedAntiDrifting, ScheduleChoice::Geometric] {
        let s = settings(schedule, 2.4, 9);
        let a = run(&g, conditioning(32, 16), s.clone());
        let b = run(&generator(), conditioning(32, 16), s.clone());
        assert!(a == b, "two runs differ");
        let c = run(&g, conditioning(32, 16), JobSettings { seed: 8, ..s.clone() });
        assert!(a != c, "another seed gives the same video");
        let d = run(&g, conditioning(32, 16), JobSettings { sampler: Sampler::Euler, ..s });
        assert!(a != d, "another sampler gives the same video");
    }
}

#[test]
fn cancel_stops_within_one_step() {
    let g = generator();
    for schedule in [ScheduleChoice::InvertedAntiDrifting, ScheduleChoice::Geometric] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let token = CancelToken::new();
        let (log, t) = (calls.clone(), token.clone());
        // On the job's thread: with a decoder thread, section 1 samples before section 0 returns.
        let serial = JobSettings { pipeline: false, ..settings(schedule, 2.4, 9) };
        let mut job = g.start(conditioning(32, 32), serial).unwrap().with_cancel_token(token).on_progress(move |p| {
            log.lock().unwrap().push((p.section, p.step));
            if p.section == 1 && p.step == 2 {
                t.cancel();
            }
        });
        let first = job.next().unwrap().unwrap();
        assert_eq!(first.index, 0);
        match job.next() {
            Some(Err(Error::Cancelled)) => {}
            other => panic!("expected Cancelled, got {:?}", other.map(|r| r.map(|s| s.index))),
        }
        assert!(job.next().is_none(), "a cancelled job ends");
        // Steps 1..4 of section 0, then 1, 2 of section 1: nothing after the cancelling step.
        assert_eq!(*calls.lock().unwrap(), vec![(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]);
    }

    // Cancelled from another thread before the job starts: the first section fails at once.
    let job = g.start(conditioning(32, 32), settings(ScheduleChoice::Geometric, 2.4, 9)).unwrap();
    let token = job.cancel_token();
    std::thread::spawn(move || token.cancel()).join().unwrap();
    let results: Vec<_> = job.collect();
    assert!(matches!(results.as_slice(), [Err(Error::Cancelled)]));
}

#[test]
fn the_job_runs_on_another_thread() {
    let g = generator();
    let job = g.start(conditioning(32, 32), settings(ScheduleChoice::Geometric, 1.2, 9)).unwrap();
    let handle = std::thread::spawn(move || job.map(|s| s.map(|s| s.frames.len())).collect::<Result<Vec<_>, _>>());
    let counts = handle.join().unwrap().unwrap();
    assert_eq!(counts.iter().sum::<usize>(), 37);
}

#[test]
fn progress_reports_every_step_with_a_falling_eta() {
    let g = generator();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let job = g
        .start(conditioning(32, 32), settings(ScheduleChoice::InvertedAntiDrifting, 2.4, 9))
        .unwrap()
        .on_progress(move |p| {
            let preview = framepack::generator::latent_preview(p.denoised).unwrap();
            log.lock().unwrap().push((
                p.section,
                p.sections,
                p.step,
                p.total_steps,
                p.eta,
                p.fraction(),
                preview.width,
            ));
        });
    job.run_to_end().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2 * 4);
    for (i, &(section, sections, step, total, _, fraction, preview_w)) in seen.iter().enumerate() {
        assert_eq!((section, sections, step, total), (i / 4, 2, i % 4 + 1, 4));
        assert!((fraction - (i + 1) as f64 / 8.0).abs() < 1e-12);
        assert_eq!(preview_w, 9 * 4, "9 latent frames of width 4 side by side");
    }
    assert_eq!(seen.last().unwrap().4, std::time::Duration::ZERO);
}

#[test]
fn teacache_skips_steps_and_a_zero_skip_threshold_changes_nothing() {
    let g = generator();
    let s = JobSettings { steps: 8, ..settings(ScheduleChoice::Geometric, 2.4, 9) };
    let full = run(&g, conditioning(32, 32), s.clone());
    let never_skip = run(&g, conditioning(32, 32), JobSettings { teacache: Some(1e-12), ..s.clone() });
    assert!(full == never_skip, "TeaCache that never skips must not change the result");
    let job = g.start(conditioning(32, 32), JobSettings { teacache: Some(1e6), ..s.clone() }).unwrap();
    let mut frames = 0;
    for section in job {
        let section = section.unwrap();
        // First and last step always compute; a huge threshold skips every other one.
        assert_eq!(section.teacache_skipped, 8 - 2);
        frames += section.frames.len();
    }
    assert_eq!(frames, 73);
    let skipping = run(&g, conditioning(32, 32), JobSettings { teacache: Some(1e6), ..s });
    assert!(full != skipping);
}

#[test]
fn an_end_image_changes_the_video_and_is_optional() {
    let g = generator();
    let s = settings(ScheduleChoice::InvertedAntiDrifting, 2.4, 9);
    let plain = run(&g, conditioning(32, 32), s.clone());
    let mut cond = conditioning(32, 32);
    cond.end_image = Some(testing::test_image(32, 32, 99).unwrap());
    let ended = run(&g, cond, s);
    assert_eq!(plain.len(), ended.len());
    assert!(plain != ended);
}

#[test]
fn per_section_prompts_are_used() {
    let g = generator();
    let s = settings(ScheduleChoice::Geometric, 2.4, 9);
    let base = conditioning(32, 32);
    let other = TextConditioning { llama: randn(50, &[1, 3, 16]), pooled: randn(51, &[1, 8]) };
    let mut two = base.clone();
    two.text = vec![base.text[0].clone(), other];
    let a = run(&g, base, s.clone());
    let b = run(&g, two, s);
    // Section 0 is the same; the second prompt changes only what section 1 touches.
    assert!(a[..4] == b[..4], "frames finalized by section 0 must not change");
    assert!(a != b);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let g = generator();
    let s = settings(ScheduleChoice::Geometric, 2.4, 9);
    let bad = |cond: Conditioning, s: JobSettings| match g.start(cond, s) {
        Err(Error::Invalid { what, reason }) => format!("{what}: {reason}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    };
    assert!(bad(conditioning(24, 32), s.clone()).contains("multiples of 16"));
    let mut c = conditioning(32, 32);
    c.text = vec![c.text[0].clone(); 3];
    assert!(bad(c, s.clone()).contains("3 encoded prompts for 2 sections"));
    let mut c = conditioning(32, 32);
    c.image_embeds = None;
    assert!(bad(c, s.clone()).starts_with("image embeds"));
    let mut c = conditioning(32, 32);
    c.end_image = Some(testing::test_image(32, 16, 1).unwrap());
    let inverted = JobSettings { schedule: ScheduleChoice::InvertedAntiDrifting, ..s.clone() };
    assert!(bad(c.clone(), inverted).contains("differs from the start image"));
    assert!(bad(c, s.clone()).contains("no context after the window"));
    let mut c = conditioning(32, 32);
    c.text[0].llama = randn(1, &[1, 5, 15]);
    assert!(bad(c, s.clone()).starts_with("prompt features"));
    assert!(bad(conditioning(32, 32), JobSettings { steps: 0, ..s.clone() }).starts_with("steps"));
    assert!(bad(conditioning(32, 32), JobSettings { seconds: -1.0, ..s.clone() }).starts_with("seconds"));
    assert!(bad(conditioning(32, 32), JobSettings { teacache: Some(0.0), ..s.clone() }).starts_with("teacache"));
    let custom = framepack::packing::ContextSchedule {
        past: vec![framepack::packing::Level::new(2, framepack::packing::Kernel::new(1, 3, 3))],
        ..framepack::packing::ContextSchedule::geometric()
    };
    assert!(
        bad(conditioning(32, 32), JobSettings { schedule: ScheduleChoice::Custom(custom), ..s })
            .starts_with("schedule")
    );
}

#[test]
fn cancel_from_another_thread_while_sampling() {
    let g = generator();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
    let job = g
        .start(conditioning(32, 32), JobSettings { steps: 50, ..settings(ScheduleChoice::Geometric, 4.8, 9) })
        .unwrap()
        .on_progress(move |p| {
            let _ = tx.send((p.section, p.step));
            // Slow the steps down so the other thread's cancel lands mid-section.
            std::thread::sleep(std::time::Duration::from_millis(5));
        });
    let token = job.cancel_token();
    let worker = std::thread::spawn(move || job.collect::<Vec<_>>());
    // Wait for the third step, then cancel.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(rx.recv().unwrap());
    }
    token.cancel();
    let cancelled_after = seen.len();
    let results = worker.join().unwrap();
    let more: Vec<_> = rx.try_iter().collect();
    // The step in flight when the token flipped may still report; nothing after it.
    assert!(more.len() <= 1, "{} steps reported after cancel", more.len());
    assert!(cancelled_after + more.len() < 4 * 50);
    assert!(matches!(results.last(), Some(Err(framepack::Error::Cancelled))));
    assert!(results.iter().rev().skip(1).all(|r| r.is_ok()));
}

#[test]
fn sampled_image_latents_are_seeded() {
    use framepack::generator::ImageLatent;
    let g = generator();
    let s = settings(ScheduleChoice::Geometric, 1.2, 9);
    let mean = run(&g, conditioning(32, 32), s.clone());
    let sampled = JobSettings { image_latent: ImageLatent::Sample, ..s };
    let a = run(&g, conditioning(32, 32), sampled.clone());
    assert!(a == run(&g, conditioning(32, 32), sampled.clone()));
    assert!(a != mean);
    assert!(a != run(&g, conditioning(32, 32), JobSettings { seed: 99, ..sampled }));
}

fn tiny_settings(schedule: ScheduleChoice) -> JobSettings {
    JobSettings { decoder: DecoderChoice::Tiny, ..settings(schedule, 2.4, 9) }
}

#[test]
fn tiny_decoder_streams_forward_jobs_as_one_decode_of_all_latents() {
    let g = generator();
    let job = g.start(conditioning(32, 32), tiny_settings(ScheduleChoice::Geometric)).unwrap();
    let total = job.total_frames();
    let mut job = job;
    let mut video = Vec::new();
    let mut latents = Vec::new();
    while let Some(section) = job.next() {
        let s = section.unwrap();
        assert!(s.provisional.is_empty(), "a stream has no provisional frames");
        assert_eq!(s.frame_range, video.len()..video.len() + s.frames.len());
        if s.index == 0 {
            latents.push(job.start_latent().unwrap().clone());
        }
        latents.push(s.latent_tensor.clone());
        video.extend(s.frames);
    }
    assert_eq!((video.len(), total), (36 * 2 + 1, 36 * 2 + 1));
    // The stream, section by section, gives the frames of one decode of every latent.
    let tiny = g.models().tiny_decoder.as_ref().unwrap();
    let all = Tensor::cat(&latents, 2).unwrap().permute((0, 2, 1, 3, 4)).unwrap();
    let once = tiny.decode(&all).unwrap().permute((0, 2, 1, 3, 4)).unwrap().affine(2.0, -1.0).unwrap();
    let once = framepack::generator::to_frames(&once).unwrap();
    assert_eq!(once.len(), video.len());
    let max_diff =
        video.iter().zip(&once).flat_map(|(a, b)| a.rgb.iter().zip(&b.rgb).map(|(x, y)| x.abs_diff(*y))).max().unwrap();
    assert!(max_diff <= 1, "streamed and one-shot decodes differ by {max_diff}");
    // It is not the full VAE's video.
    let full = run(&g, conditioning(32, 32), settings(ScheduleChoice::Geometric, 2.4, 9));
    assert!(full != video);
}

#[test]
fn a_streamed_job_shows_its_first_frame_before_sampling_and_every_frame_in_order() {
    use std::sync::{Arc, Mutex};
    #[derive(Debug, PartialEq)]
    enum Ev {
        Frame(usize),
        Step,
    }
    let g = generator();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (log.clone(), log.clone());
    // On the job's thread (a decoder thread decodes frame 0 while the first step runs).
    let serial = JobSettings { pipeline: false, ..tiny_settings(ScheduleChoice::Geometric) };
    let job = g
        .start(conditioning(32, 32), serial)
        .unwrap()
        .on_frame(move |i, _| a.lock().unwrap().push(Ev::Frame(i)))
        .on_progress(move |_| b.lock().unwrap().push(Ev::Step));
    let sections: Vec<_> = job.map(|s| s.unwrap()).collect();
    let log = log.lock().unwrap();
    // Frame 0 is the stream's decode of the start latent alone: it comes before the first step.
    assert_eq!(log[0], Ev::Frame(0), "{log:?}");
    assert_eq!(log[1], Ev::Step);
    let frames: Vec<usize> = log.iter().filter_map(|e| if let Ev::Frame(i) = e { Some(*i) } else { None }).collect();
    assert_eq!(frames, (0..36 * 2 + 1).collect::<Vec<_>>());
    assert_eq!(sections[0].frame_range, 0..37, "the first section still holds frame 0");
}

#[test]
fn tiny_decoder_keeps_the_cross_fade_of_inverted_jobs() {
    let g = generator();
    let video = run(&g, conditioning(32, 32), tiny_settings(ScheduleChoice::InvertedAntiDrifting));
    assert_eq!(video.len(), 36 * 2 + 1);
    let mut seen = [false; 256];
    video.iter().flat_map(|f| &f.rgb).for_each(|&b| seen[b as usize] = true);
    assert!(seen.iter().filter(|&&s| s).count() > 32, "too few distinct pixel values");
}

#[test]
fn previews_decode_every_step_with_the_tiny_decoder() {
    let g = generator();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let log = sizes.clone();
    let s = JobSettings { previews: true, ..settings(ScheduleChoice::InvertedAntiDrifting, 2.4, 9) };
    let job = g.start(conditioning(32, 48), s).unwrap().on_progress(move |p| {
        log.lock().unwrap().push(p.preview.iter().map(|f| (f.width, f.height, f.rgb.len())).collect::<Vec<_>>());
    });
    job.run_to_end().unwrap();
    let sizes = sizes.lock().unwrap();
    assert_eq!(sizes.len(), 2 * 4);
    for step in sizes.iter() {
        assert_eq!(step, &vec![(32, 48, 32 * 48 * 3); 9], "one preview frame per latent of the window");
    }
    // Off by default.
    let empty = Arc::new(Mutex::new(true));
    let e = empty.clone();
    let job =
        g.start(conditioning(32, 32), settings(ScheduleChoice::Geometric, 1.2, 9)).unwrap().on_progress(move |p| {
            *e.lock().unwrap() &= p.preview.is_empty();
        });
    job.run_to_end().unwrap();
    assert!(*empty.lock().unwrap());
}

#[test]
fn the_tiny_decoder_must_exist_when_asked_for() {
    let dev = Device::Cpu;
    let g = Generator::new(Models {
        transformer: testing::tiny_transformer(1, DType::F32, &dev).unwrap(),
        vae: Autoencoder::hunyuan_video(testing::tiny_vae(2, DType::F32, &dev).unwrap(), DType::F32),
        tiny_decoder: None,
    });
    for s in [
        tiny_settings(ScheduleChoice::Geometric),
        JobSettings { previews: true, ..settings(ScheduleChoice::Geometric, 1.2, 9) },
    ] {
        let err = g.start(conditioning(32, 32), s).err().expect("refused");
        assert!(err.to_string().contains("tiny decoder"), "{err}");
    }
}

#[test]
fn on_frame_delivers_every_final_frame_before_its_section_returns() {
    let g = generator();
    for s in [
        tiny_settings(ScheduleChoice::Geometric),
        tiny_settings(ScheduleChoice::InvertedAntiDrifting),
        settings(ScheduleChoice::Geometric, 2.4, 9),
    ] {
        let label = format!("{:?} {:?}", s.schedule, s.decoder);
        let yielded = Arc::new(Mutex::new(0usize));
        let got: Arc<Mutex<Vec<(usize, Frame, usize)>>> = Arc::default();
        let (y, sink) = (yielded.clone(), got.clone());
        let job = g
            .start(conditioning(32, 32), s)
            .unwrap()
            .on_frame(move |i, f| sink.lock().unwrap().push((i, f.clone(), *y.lock().unwrap())));
        let total = job.total_frames();
        let mut sections = Vec::new();
        for section in job {
            sections.push(section.unwrap());
            *yielded.lock().unwrap() += 1;
        }
        let got = got.lock().unwrap();
        let mut indices: Vec<usize> = got.iter().map(|(i, ..)| *i).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..total).collect::<Vec<_>>(), "{label}: every frame once");
        for (i, frame, before) in got.iter() {
            let k = sections.iter().position(|s| s.frame_range.contains(i)).unwrap();
            assert_eq!(*before, k, "{label}: frame {i} came after its section");
            assert_eq!(frame, &sections[k].frames[i - sections[k].frame_range.start], "{label}: frame {i}");
        }
    }
}

/// Everything a job hands out: its sections and the `on_frame` calls, with the names of the
/// threads that made them.
#[derive(Debug, Default)]
struct Handed {
    sections: Vec<framepack::generator::Section>,
    frames: Vec<(usize, Frame, Option<String>)>,
    /// Sampler steps reported before each section was handed out.
    steps_before: Vec<usize>,
}

/// The decode stage's threads are named `framepack-decode-N`.
fn on_decoder_thread(name: &Option<String>) -> bool {
    name.as_deref().is_some_and(|n| n.starts_with("framepack-decode"))
}

fn hand_out(g: &Generator, s: JobSettings) -> Handed {
    let frames: Arc<Mutex<Vec<(usize, Frame, Option<String>)>>> = Arc::default();
    let steps = Arc::new(Mutex::new(0usize));
    let (sink, counter) = (frames.clone(), steps.clone());
    let job = g
        .start(conditioning(32, 32), s)
        .unwrap()
        .on_frame(move |i, f| {
            sink.lock().unwrap().push((i, f.clone(), std::thread::current().name().map(String::from)))
        })
        .on_progress(move |_| *counter.lock().unwrap() += 1);
    let mut out = Handed::default();
    for section in job {
        out.sections.push(section.unwrap());
        out.steps_before.push(*steps.lock().unwrap());
    }
    out.frames = std::mem::take(&mut *frames.lock().unwrap());
    out
}

#[test]
fn a_decoder_thread_changes_no_frame_and_decodes_while_the_next_section_samples() {
    assert!(rayon::current_num_threads() >= 2, "the test pool needs 2 threads to pipeline");
    let g = generator();
    for s in [
        tiny_settings(ScheduleChoice::Geometric),
        tiny_settings(ScheduleChoice::InvertedAntiDrifting),
        settings(ScheduleChoice::Geometric, 2.4, 9),
        settings(ScheduleChoice::InvertedAntiDrifting, 3.6, 9),
    ] {
        let label = format!("{:?} {:?}", s.schedule, s.decoder);
        let serial = hand_out(&g, JobSettings { pipeline: false, ..s.clone() });
        let piped = hand_out(&g, JobSettings { pipeline: true, ..s.clone() });
        let n = serial.sections.len();
        assert!(n >= 2, "{label}");
        assert_eq!(piped.sections.len(), n, "{label}");
        for (a, b) in serial.sections.iter().zip(&piped.sections) {
            assert_eq!(
                (a.index, &a.frame_range, &a.provisional_range),
                (b.index, &b.frame_range, &b.provisional_range)
            );
            assert!(a.frames == b.frames && a.provisional == b.provisional, "{label}: section {} differs", a.index);
            let d = (&a.latent_tensor - &b.latent_tensor).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{label}: latents differ");
        }
        let frames = |h: &Handed| h.frames.iter().map(|(i, f, _)| (*i, f.clone())).collect::<Vec<_>>();
        assert!(frames(&serial) == frames(&piped), "{label}: on_frame calls differ");
        // The frames come from the decoder thread, and each section is handed out only after
        // the next one has sampled: its decode overlapped that sampling.
        assert!(piped.frames.iter().all(|(.., t)| on_decoder_thread(t)), "{label}");
        assert!(!serial.frames.iter().any(|(.., t)| on_decoder_thread(t)), "{label}");
        let steps = s.steps;
        assert_eq!(serial.steps_before, (1..=n).map(|k| k * steps).collect::<Vec<_>>(), "{label}");
        assert_eq!(piped.steps_before, (1..=n).map(|k| (k + 1).min(n) * steps).collect::<Vec<_>>(), "{label}");
    }
}

#[test]
fn a_one_thread_pool_or_a_one_section_job_decodes_on_the_jobs_thread() {
    let g = generator();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let one_thread = pool.install(|| hand_out(&g, tiny_settings(ScheduleChoice::Geometric)));
    let one_section = hand_out(&g, JobSettings { seconds: 1.2, ..tiny_settings(ScheduleChoice::Geometric) });
    for h in [one_thread, one_section] {
        assert!(!h.frames.is_empty());
        assert!(!h.frames.iter().any(|(.., t)| on_decoder_thread(t)));
    }
}

#[test]
fn a_pipelined_job_cancels_and_drops_while_its_decoder_thread_runs() {
    // Cancelled from the decoder thread, on the first frame of section 1.
    let g = generator();
    let token = CancelToken::new();
    let t = token.clone();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let sink = frames.clone();
    let s = JobSettings { seconds: 4.8, ..tiny_settings(ScheduleChoice::Geometric) };
    let job = g.start(conditioning(32, 32), s.clone()).unwrap().with_cancel_token(token).on_frame(move |i, _| {
        sink.lock().unwrap().push(i);
        if i == 37 {
            t.cancel();
        }
    });
    let results: Vec<_> = job.collect();
    assert!(
        matches!(results.last(), Some(Err(Error::Cancelled))),
        "{:?}",
        results.iter().map(|r| r.is_ok()).collect::<Vec<_>>()
    );
    assert!(results.iter().rev().skip(1).all(|r| r.is_ok()));
    assert!(results.len() <= 2, "{} results after a cancel in section 1", results.len());
    let frames = frames.lock().unwrap().clone();
    assert_eq!(frames, (0..=37).collect::<Vec<_>>(), "no frame after the cancelling one");

    // Dropped after its first section: the decoder thread stops and calls the sink no more.
    let frames = Arc::new(Mutex::new(Vec::new()));
    let sink = frames.clone();
    let mut job = g.start(conditioning(32, 32), s).unwrap().on_frame(move |i, _| sink.lock().unwrap().push(i));
    job.next().unwrap().unwrap();
    drop(job);
    let after_drop = frames.lock().unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(frames.lock().unwrap().len(), after_drop, "frames after the job was dropped");
    assert!(after_drop < 36 * 4 + 1);
}
