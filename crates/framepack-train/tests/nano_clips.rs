//! Procedural clips for the nano model: reproducible by seed, a held-out split, prompts that name
//! the actions, and motion that does what the action says.

use candle_core::Device;
use framepack_train::clips::{self, Action, Clip, ClipConfig, PLAYER_RGB};

fn cfg() -> ClipConfig {
    ClipConfig { frames: 30, ..ClipConfig::default() }
}

/// Centroid `(x, y)` of the player's pixels in frame `t`.
fn player_centroid(c: &Clip, t: usize) -> (f32, f32) {
    let (mut sx, mut sy, mut n) = (0f32, 0f32, 0f32);
    for (p, px) in c.frames[t].chunks_exact(3).enumerate() {
        if px == PLAYER_RGB {
            sx += (p % c.width) as f32;
            sy += (p / c.width) as f32;
            n += 1.0;
        }
    }
    assert!(n > 0.0, "no player pixels in frame {t} of seed {}", c.seed);
    (sx / n, sy / n)
}

fn frame_diff(c: &Clip, a: usize, b: usize) -> usize {
    c.frames[a].iter().zip(&c.frames[b]).filter(|(x, y)| x != y).count()
}

#[test]
fn clips_are_reproducible_and_seeds_differ() {
    let a = clips::clip(5, &cfg()).unwrap();
    assert_eq!(a, clips::clip(5, &cfg()).unwrap());
    assert_ne!(a.frames[0], clips::clip(6, &cfg()).unwrap().frames[0]);
    assert_eq!(a.frames.len(), 30);
    assert!(a.frames.iter().all(|f| f.len() == 64 * 64 * 3));
    let t = a.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[1, 3, 30, 64, 64]);
    let (lo, hi) = (t.min_all().unwrap().to_scalar::<f32>().unwrap(), t.max_all().unwrap().to_scalar::<f32>().unwrap());
    assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi) && lo < hi);
}

#[test]
fn one_seed_in_ten_is_held_out() {
    let held = (0..10_000u64).filter(|&s| clips::is_held_out(s)).count();
    assert!((850..1150).contains(&held), "{held} of 10000 held out");
    let train: Vec<u64> = clips::training_seeds(500).collect();
    let test: Vec<u64> = clips::held_out_seeds(50).collect();
    assert!(train.iter().all(|s| !clips::is_held_out(*s)));
    assert!(test.iter().all(|s| clips::is_held_out(*s)));
}

#[test]
fn prompts_name_the_actions_and_every_action_occurs() {
    let mut seen = std::collections::HashSet::new();
    for seed in 0..200 {
        let c = clips::clip(seed, &ClipConfig { frames: 2, ..ClipConfig::default() }).unwrap();
        assert!(!c.actions.is_empty());
        for a in &c.actions {
            assert!(c.prompt.contains(a.phrase()), "{:?} vs {}", c.actions, c.prompt);
            seen.insert(*a);
        }
    }
    assert_eq!(seen.len(), Action::ALL.len(), "{seen:?}");
}

#[test]
fn motion_follows_the_action() {
    let walk = clips::clip_with(3, &[Action::WalkRight], &cfg()).unwrap();
    let (x0, y0) = player_centroid(&walk, 0);
    let (x1, y1) = player_centroid(&walk, 20);
    assert!(x1 > x0 + 5.0 && (y1 - y0).abs() < 0.5, "walk right: {x0},{y0} → {x1},{y1}");
    let left = clips::clip_with(3, &[Action::WalkLeft], &cfg()).unwrap();
    assert!(player_centroid(&left, 20).0 < x0 - 5.0);

    let jump = clips::clip_with(3, &[Action::Jump], &ClipConfig { frames: 40, ..ClipConfig::default() }).unwrap();
    let ys: Vec<f32> = (0..40).map(|t| player_centroid(&jump, t).1).collect();
    let top = ys.iter().copied().fold(f32::MAX, f32::min);
    assert!(top < ys[0] - 8.0, "the jump rises: {ys:?}");
    assert!((ys[39] - ys[0]).abs() < 0.5, "and lands: {ys:?}");

    // Panning right moves the scenery left on screen; the player, walking nowhere, moves too.
    let pan = clips::clip_with(3, &[Action::PanRight], &cfg()).unwrap();
    assert!(player_centroid(&pan, 20).0 < player_centroid(&pan, 0).0 - 5.0);
    assert!(frame_diff(&pan, 0, 20) > 64 * 3);

    let idle = clips::clip_with(3, &[Action::Idle], &cfg()).unwrap();
    assert_eq!(frame_diff(&idle, 0, 29), 0);
    let bounce = clips::clip_with(3, &[Action::Bounce], &cfg()).unwrap();
    assert!(frame_diff(&bounce, 0, 10) > 0);
    assert_eq!(player_centroid(&bounce, 0), player_centroid(&bounce, 29));
}

#[test]
fn bad_configs_and_conflicting_actions_are_refused() {
    assert!(clips::clip(1, &ClipConfig { width: 8, ..ClipConfig::default() }).is_err());
    assert!(clips::clip(1, &ClipConfig { frames: 0, ..ClipConfig::default() }).is_err());
    assert!(clips::clip_with(1, &[Action::WalkLeft, Action::Jump], &cfg()).is_err());
    assert!(clips::clip_with(1, &[Action::PanLeft, Action::PanRight], &cfg()).is_err());
}
