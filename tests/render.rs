//! Rendering test (feature `render_tests`; runs under lavapipe with no GPU): the headless demo
//! walks into the door, captures its camera, generates with the nano model and plays the
//! cutscene on the in-world screen; the screenshot it saves of the cutscene must not be blank.

use std::path::{Path, PathBuf};
use std::process::Command;

use bevy::asset::RenderAssetUsages;
use bevy::image::{CompressedImageFormats, ImageSampler, ImageType};
use bevy::prelude::*;

fn distinct_colors(rgba: &[u8]) -> usize {
    let mut c: Vec<[u8; 4]> = rgba.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect();
    c.sort_unstable();
    c.dedup();
    c.len()
}

/// The demo binary `cargo test` built next to this test (`target/<profile>/examples/cutscene`).
fn demo_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("examples").join(format!("cutscene{}", std::env::consts::EXE_SUFFIX))
}

fn decode_png(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let image = Image::from_buffer(
        &bytes,
        ImageType::Extension("png"),
        CompressedImageFormats::NONE,
        true,
        ImageSampler::Default,
        RenderAssetUsages::default(),
    )
    .unwrap();
    image.data.unwrap()
}

#[test]
fn headless_demo_saves_a_cutscene_frame_that_is_not_blank() {
    let demo = demo_binary();
    assert!(demo.exists(), "{} is missing: `cargo test` builds the examples", demo.display());
    let out = std::env::temp_dir().join(format!("bevy_framepack_demo_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(&demo).args(["--headless", "--frames", "150", "--out"]).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the demo failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let mut cutscene: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("cutscene_"))
        .collect();
    cutscene.sort();
    let last = cutscene.last().unwrap_or_else(|| panic!("no cutscene frame saved in {}:\n{stdout}", out.display()));
    let game = decode_png(&out.join("game.png"));
    let shown = decode_png(last);
    assert_eq!(shown.len(), game.len());
    // The in-world screen shows decoded, filtered frames: it adds many colors to the flat scene.
    let (before, after) = (distinct_colors(&game), distinct_colors(&shown));
    assert!(after > before + 100, "{}: {after} colors vs {before} in the game frame: blank?", last.display());
    println!("{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
