//! Packing schedules against the spec's worked examples, property tests over many windows and
//! video lengths, token counts, section planning and every error path.

use std::collections::HashSet;

use framepack::Error;
use framepack::packing::{
    ContextSchedule, Kernel, Level, ScheduleChoice, SectionLayout, SectionOrder, SectionPlan, Slot, inverted_paddings,
    paper_context_length, paper_context_limit,
};
use proptest::prelude::*;

fn r(a: i64, b: i64) -> Vec<i64> {
    (a..=b).collect()
}

fn layout(s: &ContextSchedule, sections: usize, window: usize, k: usize) -> SectionLayout {
    let plan = SectionPlan::new(sections, window, s.order).unwrap();
    s.layout(&plan, k).unwrap()
}

fn slots(l: &SectionLayout, k: Kernel) -> Vec<Slot> {
    l.group(k).unwrap().slots.clone()
}

fn lat(range: std::ops::RangeInclusive<usize>) -> Vec<Slot> {
    range.map(Slot::Latent).collect()
}

fn zeros(n: usize) -> Vec<Slot> {
    vec![Slot::Zero; n]
}

fn cat(parts: &[Vec<Slot>]) -> Vec<Slot> {
    parts.concat()
}

#[test]
fn geometric_indices_match_f1_split_window_9_and_3() {
    // F1: arange(0, 1+16+2+1+W) split [1, 16, 2, 1, W].
    for (w, last) in [(9usize, 28i64), (3, 22)] {
        let s = ContextSchedule::geometric();
        for k in 0..5 {
            let l = layout(&s, 5, w, k);
            assert_eq!(l.indices_latents, r(20, last));
            assert_eq!(l.indices_latents_clean(), vec![0, 19]);
            assert_eq!(l.indices_latents_history_2x(), vec![17, 18]);
            assert_eq!(l.indices_latents_history_4x(), r(1, 16));
        }
    }
}

#[test]
fn geometric_content_follows_the_appended_history() {
    let s = ContextSchedule::geometric();
    // Section 1: clean = [start, start], 2x/4x all zeros.
    let l = layout(&s, 4, 9, 0);
    assert_eq!(l.latents, 1..10);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Start]);
    assert_eq!(slots(&l, Kernel::X2), zeros(2));
    assert_eq!(slots(&l, Kernel::X4), zeros(16));
    // Section 2: clean_4x = [zeros×9, start, s1[0..5]], 2x = s1[6..7], 1x = s1[8] (s1[i] = latent 1+i).
    let l = layout(&s, 4, 9, 1);
    assert_eq!(l.latents, 10..19);
    assert_eq!(slots(&l, Kernel::X4), cat(&[zeros(9), vec![Slot::Start], lat(1..=6)]));
    assert_eq!(slots(&l, Kernel::X2), lat(7..=8));
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(9)]);
    // Section 4: the last 19 history latents.
    let l = layout(&s, 4, 9, 3);
    assert_eq!(slots(&l, Kernel::X4), lat(9..=24));
    assert_eq!(slots(&l, Kernel::X2), lat(25..=26));
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(27)]);
}

#[test]
fn inverted_matches_spec_timeline_5s_window_9() {
    // FramePack's inverted loop with 4 sections pads its windows by 3, 2, 1, 0.
    let s = ContextSchedule::inverted_anti_drifting();
    let rows: [(i64, i64, i64, i64); 4] = [(28, 36, 37, 40), (19, 27, 28, 31), (10, 18, 19, 22), (1, 9, 10, 13)];
    for (k, (a, b, post, x4)) in rows.into_iter().enumerate() {
        let l = layout(&s, 4, 9, k);
        assert_eq!(l.indices_latents, r(a, b), "section {}", k + 1);
        assert_eq!(l.indices_latents_clean(), vec![0, post]);
        assert_eq!(l.indices_latents_history_2x(), vec![post + 1, post + 2]);
        assert_eq!(l.indices_latents_history_4x(), r(x4, x4 + 15));
        assert_eq!(l.latents.start as i64, a, "for n ≤ 4 RoPE time equals real time");
    }
    // Content: s1 = latents 28..36, s2 = 19..27, s3 = 10..18.
    let l = layout(&s, 4, 9, 0);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::End]);
    assert_eq!(slots(&l, Kernel::X2), zeros(2));
    assert_eq!(slots(&l, Kernel::X4), zeros(16));
    let l = layout(&s, 4, 9, 1);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(28)]);
    assert_eq!(slots(&l, Kernel::X2), lat(29..=30));
    assert_eq!(slots(&l, Kernel::X4), cat(&[lat(31..=36), vec![Slot::End], zeros(9)]));
    let l = layout(&s, 4, 9, 2);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(19)]);
    assert_eq!(slots(&l, Kernel::X4), cat(&[lat(22..=36), vec![Slot::End]]));
    let l = layout(&s, 4, 9, 3);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(10)]);
    assert_eq!(slots(&l, Kernel::X2), lat(11..=12));
    assert_eq!(slots(&l, Kernel::X4), lat(13..=28));
}

#[test]
fn inverted_window_3_padding_1_matches_transformer_case_a() {
    // arange(26) split [1, 3, 3, 1, 2, 16]: latents 4–6, clean [0, 7], 2x [8, 9], 4x 10–25.
    let s = ContextSchedule::inverted_anti_drifting();
    let l = layout(&s, 2, 3, 0);
    assert_eq!(l.indices_latents, r(4, 6));
    assert_eq!(l.indices_latents_clean(), vec![0, 7]);
    assert_eq!(l.indices_latents_history_2x(), vec![8, 9]);
    assert_eq!(l.indices_latents_history_4x(), r(10, 25));
}

#[test]
fn inverted_paddings_cap_the_gap() {
    assert_eq!(inverted_paddings(1), vec![0]);
    assert_eq!(inverted_paddings(4), vec![3, 2, 1, 0]);
    assert_eq!(inverted_paddings(5), vec![3, 2, 2, 1, 0]);
    assert_eq!(inverted_paddings(8), vec![3, 2, 2, 2, 2, 2, 1, 0]);
    let s = ContextSchedule::inverted_anti_drifting();
    let l = layout(&s, 8, 9, 3);
    assert_eq!(l.indices_latents, r(19, 27));
    assert_eq!(l.indices_latents_clean(), vec![0, 28]);
    // Real positions keep following the video: section 4 of 8 covers latents 37..45.
    assert_eq!(l.latents, 37..46);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(46)]);
}

#[test]
fn token_counts_640x608_are_17500() {
    let s = ContextSchedule::geometric();
    let t = s.context_tokens(9, 80, 76).unwrap();
    assert_eq!(t.noisy, 13_680);
    assert_eq!(t.groups, vec![(Kernel::X1, 3040), (Kernel::X4, 400), (Kernel::X2, 380)]);
    assert_eq!(t.total(), 17_500);
    assert_eq!(ContextSchedule::inverted_anti_drifting().context_tokens(9, 80, 76).unwrap().total(), 17_500);
    // Every bucket of FramePack's 640 class (H×W in pixels) and its image-token totals.
    for (h, w, total) in [
        (416, 960, 17_970),
        (448, 864, 17_402),
        (480, 832, 17_966),
        (512, 768, 17_664),
        (544, 704, 17_226),
        (576, 672, 17_406),
        (608, 640, 17_500),
        (640, 608, 17_500),
    ] {
        assert_eq!(s.context_tokens(9, h / 8, w / 8).unwrap().total(), total, "{h}x{w}");
        assert_eq!(s.context_tokens(9, w / 8, h / 8).unwrap().total(), total, "{w}x{h}");
    }
    // A forced 640×640 grid: 18 400.
    assert_eq!(s.context_tokens(9, 80, 80).unwrap().total(), 18_400);
}

#[test]
fn odd_post_patch_grids_use_replicate_padding() {
    // Latent 10×10 (post-patch 5×5), 3 frames at 2x and 5 at 4x as in transformer case c.
    let s = ContextSchedule {
        anchor: true,
        head: vec![],
        past: vec![Level::new(1, Kernel::X1), Level::new(3, Kernel::X2), Level::new(5, Kernel::X4)],
        future: vec![],
        order: SectionOrder::Forward,
    };
    let t = s.context_tokens(2, 10, 10).unwrap();
    assert_eq!(t.noisy, 2 * 25);
    assert_eq!(t.groups, vec![(Kernel::X1, 2 * 25), (Kernel::X4, 2 * 2 * 2), (Kernel::X2, 2 * 3 * 3)]);
}

#[test]
fn context_is_11_5_frames_and_bounded() {
    // 64×64 latent: L_f = 1024 tokens per frame at 1x.
    let lf = 1024.0;
    let t = ContextSchedule::geometric().context_tokens(9, 64, 64).unwrap();
    assert_eq!(t.total() as f64, 11.5 * lf);
    // Paper formula: S·L_f + L_f·Σλ^−i grows with T but stays below (S + λ/(λ−1))·L_f.
    let mut prev = 0.0;
    for t in 0..200 {
        let l = paper_context_length(9, t, 2.0, lf);
        assert!(l >= prev);
        assert!(l < paper_context_limit(9, 2.0, lf) + 1e-9);
        prev = l;
    }
    assert_eq!(paper_context_length(9, 0, 2.0, lf), 9.0 * lf);
    assert_eq!(paper_context_length(9, 1, 2.0, lf), 10.0 * lf);
    assert_eq!(paper_context_length(9, 3, 2.0, lf), (9.0 + 1.75) * lf);
    assert!((paper_context_length(9, 60, 2.0, lf) - 11.0 * lf).abs() < 1e-6);
    assert_eq!(paper_context_limit(1, 4.0, 3.0), (1.0 + 4.0 / 3.0) * 3.0);
}

#[test]
fn section_planning_follows_framepack() {
    let p = SectionPlan::from_seconds(5.0, 9, SectionOrder::Inverted).unwrap();
    assert_eq!((p.sections, p.total_latents(), p.total_frames()), (4, 37, 145));
    assert_eq!(p.frames_per_section(), 33);
    // 3 s → 2.5 → 2 (half to even); 60 s → 50 sections, 1801 frames.
    assert_eq!(SectionPlan::from_seconds(3.0, 9, SectionOrder::Forward).unwrap().sections, 2);
    let p = SectionPlan::from_seconds(60.0, 9, SectionOrder::Forward).unwrap();
    assert_eq!((p.sections, p.total_frames()), (50, 1801));
    assert_eq!(SectionPlan::from_seconds(0.1, 9, SectionOrder::Forward).unwrap().sections, 1);
    assert_eq!(SectionPlan::from_seconds(4.2, 9, SectionOrder::Forward).unwrap().sections, 4); // 3.5 → 4
    assert_eq!(SectionPlan::from_seconds(1.0, 3, SectionOrder::Forward).unwrap().sections, 2); // 2.5 → 2
    assert_eq!(SectionPlan::from_seconds(1.4, 3, SectionOrder::Forward).unwrap().sections, 4); // 3.5 → 4
    // Orders and where sections land.
    let f = SectionPlan::new(3, 9, SectionOrder::Forward).unwrap();
    let starts: Vec<_> = f.sections().map(|s| (s.latents.start, s.frames.clone())).collect();
    assert_eq!(starts, vec![(1, 1..37), (10, 37..73), (19, 73..109)]);
    let i = SectionPlan::new(3, 9, SectionOrder::Inverted).unwrap();
    let starts: Vec<_> = i.sections().map(|s| (s.latents.start, s.padding)).collect();
    assert_eq!(starts, vec![(19, 2), (10, 1), (1, 0)]);
    // General window: 4W − 3 frames per section, 4(1 + nW) − 3 in all.
    let g = SectionPlan::from_seconds(2.0, 3, SectionOrder::Forward).unwrap();
    assert_eq!((g.sections, g.frames_per_section(), g.total_frames()), (5, 9, 61));
}

#[test]
fn error_paths() {
    let bad = |r: framepack::Result<SectionPlan>, what: &str| match r {
        Err(Error::Invalid { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected invalid {what}, got {other:?}"),
    };
    bad(SectionPlan::from_seconds(0.0, 9, SectionOrder::Forward), "seconds");
    bad(SectionPlan::from_seconds(-1.0, 9, SectionOrder::Forward), "seconds");
    bad(SectionPlan::from_seconds(f64::NAN, 9, SectionOrder::Forward), "seconds");
    bad(SectionPlan::from_seconds(f64::INFINITY, 9, SectionOrder::Forward), "seconds");
    bad(SectionPlan::from_seconds(5.0, 0, SectionOrder::Forward), "latent window");
    bad(SectionPlan::new(0, 9, SectionOrder::Forward), "sections");

    let empty =
        ContextSchedule { anchor: true, head: vec![], past: vec![], future: vec![], order: SectionOrder::Forward };
    let plan = SectionPlan::new(2, 9, SectionOrder::Forward).unwrap();
    assert!(matches!(empty.validate(), Err(Error::Invalid { what: "schedule", .. })));
    assert!(matches!(empty.layout(&plan, 0), Err(Error::Invalid { what: "schedule", .. })));
    assert!(matches!(empty.context_tokens(9, 8, 8), Err(Error::Invalid { what: "schedule", .. })));
    let zero_frames = ContextSchedule { past: vec![Level::new(0, Kernel::X1)], ..empty.clone() };
    assert!(zero_frames.validate().is_err());
    let zero_kernel = ContextSchedule { past: vec![Level::new(1, Kernel::new(0, 2, 2))], ..empty.clone() };
    assert!(zero_kernel.validate().is_err());

    let g = ContextSchedule::geometric();
    for (h, w) in [(9, 8), (8, 7), (0, 8), (8, 0)] {
        let e = g.context_tokens(9, h, w).unwrap_err();
        assert!(matches!(e, Error::Invalid { what: "latent size", .. }), "{h}x{w}");
        assert!(e.to_string().contains(&format!("{h}×{w}")));
    }
    assert!(matches!(g.context_tokens(0, 8, 8), Err(Error::Invalid { what: "latent window", .. })));
    assert!(matches!(g.layout(&plan, 2), Err(Error::Invalid { what: "section", .. })));
    let inverted_plan = SectionPlan::new(2, 9, SectionOrder::Inverted).unwrap();
    assert!(matches!(g.layout(&inverted_plan, 0), Err(Error::Invalid { what: "section plan", .. })));

    let odd = ContextSchedule { past: vec![Level::new(4, Kernel::new(8, 16, 16))], ..empty };
    assert!(odd.layout(&plan, 0).unwrap().check_model_kernels().is_err());
    assert!(layout(&g, 2, 9, 0).check_model_kernels().is_ok());
}

#[test]
fn schedules_round_trip_through_ron_and_names() {
    for s in [
        ContextSchedule::geometric(),
        ContextSchedule::inverted_anti_drifting(),
        ContextSchedule::first_frame_priority(),
        ContextSchedule::symmetric(),
    ] {
        let text = ron::to_string(&s).unwrap();
        assert_eq!(ron::from_str::<ContextSchedule>(&text).unwrap(), s);
    }
    let custom: ScheduleChoice = ron::from_str(
        "Custom((anchor: true, past: [(frames: 1, kernel: (1, 2, 2)), (frames: 4, kernel: (2, 4, 4))], order: Forward))",
    )
    .unwrap();
    let s = custom.resolve();
    assert_eq!(s.past, vec![Level::new(1, Kernel::X1), Level::new(4, Kernel::X2)]);
    assert!(s.head.is_empty() && s.future.is_empty());
    assert_eq!(ron::from_str::<ScheduleChoice>("Geometric").unwrap().resolve(), ContextSchedule::geometric());
    assert_eq!("f1".parse::<ScheduleChoice>().unwrap(), ScheduleChoice::Geometric);
    assert_eq!("inverted".parse::<ScheduleChoice>().unwrap(), ScheduleChoice::InvertedAntiDrifting);
    assert_eq!("first_frame".parse::<ScheduleChoice>().unwrap(), ScheduleChoice::FirstFramePriority);
    assert_eq!("Symmetric".parse::<ScheduleChoice>().unwrap(), ScheduleChoice::Symmetric);
    assert!(matches!("sideways".parse::<ScheduleChoice>(), Err(Error::Invalid { what: "schedule", .. })));
}

#[test]
fn variants_have_their_own_layouts() {
    // First-frame priority: start, head (2@2x, 4@4x), then 8@4x, 2@2x, 1@1x, window.
    let s = ContextSchedule::first_frame_priority();
    let l = layout(&s, 6, 9, 5);
    assert_eq!(l.indices_latents_clean(), vec![0, 17]);
    assert_eq!(l.indices_latents_history_2x(), vec![1, 2, 15, 16]);
    assert_eq!(l.indices_latents_history_4x(), r(3, 14));
    assert_eq!(l.indices_latents, r(18, 26));
    assert_eq!(slots(&l, Kernel::X2), cat(&[lat(1..=2), lat(43..=44)]));
    assert_eq!(slots(&l, Kernel::X4), cat(&[lat(3..=6), lat(35..=42)]));
    // Early on the head overlaps the recent history and is left empty instead of duplicated.
    let l = layout(&s, 6, 9, 1);
    assert_eq!(slots(&l, Kernel::X2), cat(&[zeros(2), lat(7..=8)]));
    // Symmetric, forward: the end latent enters the future side as the window nears it.
    let s = ContextSchedule::symmetric();
    let l = layout(&s, 3, 9, 2);
    assert_eq!(l.indices_latents, r(12, 20));
    assert_eq!(l.indices_latents_clean(), vec![0, 11, 21]);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Latent(18), Slot::End]);
    let l = layout(&s, 3, 9, 0);
    assert_eq!(slots(&l, Kernel::X1), vec![Slot::Start, Slot::Start, Slot::Zero]);
}

fn schedule_strategy() -> impl Strategy<Value = ContextSchedule> {
    let kernel = prop_oneof![Just(Kernel::X1), Just(Kernel::X2), Just(Kernel::X4), Just(Kernel::new(8, 16, 16))];
    let level = (1usize..20, kernel).prop_map(|(f, k)| Level::new(f, k));
    let levels = prop::collection::vec(level, 0..4);
    (
        any::<bool>(),
        levels.clone(),
        levels.clone(),
        levels,
        prop_oneof![Just(SectionOrder::Forward), Just(SectionOrder::Inverted)],
    )
        .prop_filter("at least one level", |(_, h, p, f, _)| h.len() + p.len() + f.len() > 0)
        .prop_map(|(anchor, head, past, future, order)| ContextSchedule { anchor, head, past, future, order })
}

proptest! {
    #[test]
    fn layouts_are_consistent(s in schedule_strategy(), window in 1usize..34, sections in 1usize..40, pick in 0usize..1000) {
        let plan = SectionPlan::new(sections, window, s.order).unwrap();
        let k = pick % sections;
        let l = s.layout(&plan, k).unwrap();
        let info = plan.section(k).unwrap();
        prop_assert_eq!(&l.latents, &info.latents);
        prop_assert_eq!(l.latents.len(), window);
        // Indices: window contiguous, everything disjoint and non-negative.
        prop_assert!(l.indices_latents.windows(2).all(|w| w[1] == w[0] + 1));
        let mut all: Vec<i64> = l.indices_latents.clone();
        for g in &l.groups {
            prop_assert_eq!(g.indices.len(), g.slots.len());
            prop_assert!(g.indices.windows(2).all(|w| w[1] > w[0]), "indices sorted within a group");
            all.extend(&g.indices);
        }
        let set: HashSet<i64> = all.iter().copied().collect();
        prop_assert_eq!(set.len(), all.len(), "indices must be disjoint");
        prop_assert!(all.iter().all(|&i| i >= 0));
        // Every level is present with its frame count, the anchor first in the 1x set.
        let count = |kern: Kernel| -> usize {
            s.head.iter().chain(&s.past).chain(&s.future).filter(|l| l.kernel == kern).map(|l| l.frames).sum::<usize>()
                + usize::from(s.anchor && kern == Kernel::X1)
        };
        for g in &l.groups {
            prop_assert_eq!(g.slots.len(), count(g.kernel));
        }
        if s.anchor {
            let g = l.group(Kernel::X1).unwrap();
            prop_assert_eq!(g.indices[0], 0);
            prop_assert_eq!(g.slots[0], Slot::Start);
        }
        // Slots only hold latents that exist and were generated before this section.
        let mut seen = HashSet::new();
        for g in &l.groups {
            for slot in &g.slots {
                if let Slot::Latent(p) = *slot {
                    prop_assert!(p >= 1 && p < plan.total_latents());
                    match s.order {
                        SectionOrder::Forward => prop_assert!(p < info.latents.start),
                        SectionOrder::Inverted => prop_assert!(p >= info.latents.end),
                    }
                    prop_assert!(seen.insert(p), "latent {} used twice", p);
                }
            }
        }
        // Past context sits right before the window in RoPE time, future right after.
        if !s.past.is_empty() {
            prop_assert!(all.contains(&(l.indices_latents[0] - 1)));
        }
        if !s.future.is_empty() {
            prop_assert!(all.contains(&(l.indices_latents[window - 1] + 1)));
        }
    }

    #[test]
    fn token_count_is_the_same_for_every_section(window in 1usize..34, h in 1usize..60, w in 1usize..60) {
        let (h, w) = (2 * h, 2 * w);
        for s in [ContextSchedule::geometric(), ContextSchedule::inverted_anti_drifting()] {
            let t = s.context_tokens(window, h, w).unwrap();
            prop_assert_eq!(t.noisy, window * (h / 2) * (w / 2));
            prop_assert_eq!(
                t.context(),
                2 * (h / 2) * (w / 2) + h.div_ceil(4) * w.div_ceil(4) + 4 * h.div_ceil(8) * w.div_ceil(8)
            );
        }
    }

    #[test]
    fn plans_cover_the_video_exactly(seconds in 0.05f64..120.0, window in 1usize..34) {
        for order in [SectionOrder::Forward, SectionOrder::Inverted] {
            let p = SectionPlan::from_seconds(seconds, window, order).unwrap();
            let expected = (seconds * 30.0 / (4 * window) as f64).round_ties_even().max(1.0) as usize;
            prop_assert_eq!(p.sections, expected);
            let mut covered: Vec<usize> = p.sections().flat_map(|s| s.latents).collect();
            covered.sort();
            prop_assert_eq!(covered, (1..p.total_latents()).collect::<Vec<_>>());
            let mut frames: Vec<usize> = p.sections().flat_map(|s| s.frames).collect();
            frames.sort();
            prop_assert_eq!(frames, (1..p.total_frames()).collect::<Vec<_>>());
            prop_assert_eq!(p.total_frames(), 4 * (1 + p.sections * window) - 3);
        }
    }
}
