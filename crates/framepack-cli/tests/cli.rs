//! The `framepack` command on a tiny random bundle: generate to PNGs, GIF and MP4 (decoded back),
//! `info`, `--help`, and one-line errors for bad arguments and missing weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framepack-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn framepack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framepack")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A bundle and a 96×80 start image.
fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let weights = dir.join("weights");
    framepack_train::testing::write_tiny_bundle(&weights, 5).unwrap();
    let image = dir.join("start.png");
    let (w, h) = (96u32, 80u32);
    let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
    image::save_buffer(&image, &data, w, h, image::ExtendedColorType::Rgb8).unwrap();
    (dir, weights, image)
}

fn generate(weights: &Path, image: &Path, out: &Path, extra: &[&str]) -> Output {
    generate_command(weights, image, out, extra).output().unwrap()
}

/// `framepack generate` on a bundle, 3 steps at resolution 32, quiet, 2.4 s unless `extra` says.
fn generate_command(weights: &Path, image: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "generate",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--prompt",
        "[0s: a cat sits] [1.2s: the cat jumps]",
        "--steps",
        "3",
        "--resolution",
        "32",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--seconds") {
        args.extend_from_slice(&["--seconds", "2.4"]);
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_framepack"));
    command.args(&args);
    command
}

fn mp4_frames(path: &Path) -> (usize, Vec<(usize, usize)>) {
    let size = std::fs::metadata(path).unwrap().len();
    let reader = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut mp4 = mp4::Mp4Reader::read_header(reader, size).unwrap();
    let track = mp4.tracks().get(&1).unwrap();
    assert_eq!(track.media_type().unwrap(), mp4::MediaType::H264);
    let count = track.sample_count();
    let sps = track.sequence_parameter_set().unwrap().to_vec();
    let pps = track.picture_parameter_set().unwrap().to_vec();
    let mut decoder = Decoder::new().unwrap();
    let annexb = |nal: &[u8]| [&[0u8, 0, 0, 1][..], nal].concat();
    decoder.decode(&annexb(&sps)).unwrap();
    decoder.decode(&annexb(&pps)).unwrap();
    let mut sizes = Vec::new();
    for i in 1..=count {
        let sample = mp4.read_sample(1, i).unwrap().unwrap();
        // AVCC (4-byte length prefixes) to Annex B.
        let mut bytes: &[u8] = &sample.bytes;
        let mut stream = Vec::new();
        while bytes.len() >= 4 {
            let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            stream.extend(annexb(&bytes[4..4 + n]));
            bytes = &bytes[4 + n..];
        }
        if let Some(frame) = decoder.decode(&stream).unwrap() {
            sizes.push(frame.dimensions());
        }
    }
    (count as usize, sizes)
}

#[test]
fn generate_writes_pngs_gif_and_mp4_with_36n_plus_1_frames() {
    let (dir, weights, image) = setup("generate");

    // Forward loop to a folder of PNGs.
    let pngs = dir.join("frames");
    let o = generate(&weights, &image, &pngs, &["--schedule", "geometric"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote 73 frames (32x32"), "{}", stdout(&o));
    let mut files: Vec<_> = std::fs::read_dir(&pngs).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 73);
    let first = image::open(&files[0]).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (32, 32));

    // Inverted loop with TeaCache and an end frame to a GIF.
    let gif_path = dir.join("clip.gif");
    let o = generate(
        &weights,
        &image,
        &gif_path,
        &["--schedule", "inverted", "--teacache", "--end-image", image.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("TeaCache skipped"), "{}", stdout(&o));
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&gif_path).unwrap()).unwrap();
    let mut n = 0;
    while let Some(f) = dec.read_next_frame().unwrap() {
        assert_eq!((f.width, f.height), (32, 32));
        n += 1;
    }
    assert_eq!(n, 73);

    // MP4: one H.264 track, 73 samples, every one decodes to 32×32.
    let mp4_path = dir.join("clip.mp4");
    let o = generate(&weights, &image, &mp4_path, &["--seconds", "1.2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (count, sizes) = mp4_frames(&mp4_path);
    assert_eq!(count, 37);
    assert_eq!(sizes.len(), 37);
    assert!(sizes.iter().all(|&s| s == (32, 32)));

    // Same request and seed: the same PNG frames.
    let again = dir.join("frames2");
    let o = generate(&weights, &image, &again, &["--schedule", "geometric"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["frame_00000.png", "frame_00036.png", "frame_00072.png"] {
        assert_eq!(std::fs::read(pngs.join(name)).unwrap(), std::fs::read(again.join(name)).unwrap(), "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn info_reports_the_bundle() {
    let (dir, weights, _) = setup("info");
    let o = framepack(&["info", "--weights", weights.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for folder in
        ["vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "image_encoder", "feature_extractor"]
    {
        assert!(out.contains(folder), "{folder}: {out}");
    }
    assert!(out.contains("complete"), "{out}");

    std::fs::remove_file(weights.join("text_encoder/model-00001-of-00002.safetensors")).unwrap();
    let o = framepack(&["info", "--weights", weights.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("MISSING"), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("model-00001-of-00002.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_are_one_line() {
    let (dir, weights, image) = setup("errors");
    let out = dir.join("x.mp4");
    let one_line = |o: &Output, code: i32, needle: &str| {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{needle}: {err}");
        assert!(!err.contains("backtrace") && !err.contains("panicked"), "{err}");
    };
    one_line(&generate(&weights, &image, &out, &["--seconds", "abc"]), 2, "--seconds");
    one_line(&generate(&weights, &image, &out, &["--schedule", "sideways"]), 2, "sideways");
    // clap's suggestion survives on the one line.
    one_line(&generate(&weights, &image, &out, &["--secnds", "3"]), 2, "similar argument exists: '--seconds'");
    one_line(&framepack(&["generate", "--image", "a.png"]), 2, "--weights");
    one_line(&generate(&dir.join("nope"), &image, &out, &[]), 1, "nope");
    one_line(&generate(&weights, &dir.join("missing.png"), &out, &[]), 1, "missing.png");
    one_line(&generate(&weights, &image, &out, &["--guidance=-1"]), 1, "guidance");
    one_line(&generate(&weights, &image, &out, &["--window", "0"]), 1, "window");
    one_line(&generate(&weights, &image, &out, &["--device", "cuda"]), 1, "cuda");
    one_line(&generate(&weights, &image, &dir.join("clip.avi"), &[]), 1, "clip.avi");
    assert!(!dir.join("clip.avi").exists(), "no folder named like a video");
    one_line(
        &generate(&weights, &image, &out, &["--schedule", "geometric", "--end-image", image.to_str().unwrap()]),
        1,
        "end image",
    );
    std::fs::remove_file(weights.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    one_line(&generate(&weights, &image, &out, &[]), 1, "diffusion_pytorch_model.safetensors");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_documents_every_option() {
    let o = framepack(&["generate", "--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for flag in [
        "--image",
        "--prompt",
        "--seconds",
        "--seed",
        "--steps",
        "--guidance",
        "--schedule",
        "--window",
        "--resolution",
        "--teacache",
        "--end-image",
        "--weights",
        "--out",
        "--device",
        "--dtype",
        "--sampler",
        "--quiet",
    ] {
        let line = help.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_else(|| panic!("{flag} missing"));
        let idx = help.find(line).unwrap();
        let after = help[idx + line.len()..].strip_prefix('\n').unwrap_or_default();
        let described =
            line.trim().len() > flag.len() + 12 || after.lines().next().is_some_and(|l| !l.trim().is_empty());
        assert!(described, "{flag} has no description");
    }
    let top = stdout(&framepack(&["--help"]));
    for cmd in ["generate", "info", "plan"] {
        assert!(top.contains(cmd), "{top}");
    }
}

#[test]
fn generate_with_the_tiny_decoder_and_step_previews() {
    let (dir, weights, image) = setup("tiny");
    let o = framepack(&["info", "--weights", weights.to_str().unwrap()]);
    assert!(stdout(&o).contains("vae_tiny (optional tiny decoder): 1"), "{}", stdout(&o));

    let frames = dir.join("frames");
    let preview = dir.join("preview.png");
    let o = generate(
        &weights,
        &image,
        &frames,
        &["--schedule", "geometric", "--decoder", "tiny", "--preview", preview.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote 73 frames (32x32"), "{}", stdout(&o));
    // The last step's estimate: 9 latents, one 32×32 frame each, side by side.
    let strip = image::open(&preview).unwrap().to_rgb8();
    assert_eq!(strip.dimensions(), (9 * 32, 32));

    // An explicit file; a missing one and a bundle without vae_tiny/ are one-line errors.
    let file = dir.join("taehv.safetensors");
    std::fs::rename(weights.join("vae_tiny/taehv.safetensors"), &file).unwrap();
    let o = generate(&weights, &image, &dir.join("none"), &["--decoder", "tiny"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("taehv.safetensors"), "{}", stderr(&o));
    std::fs::remove_dir_all(weights.join("vae_tiny")).unwrap();
    let o = generate(&weights, &image, &dir.join("none"), &["--decoder", "tiny"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tiny decoder"), "{}", stderr(&o));
    let o = generate(
        &weights,
        &image,
        &dir.join("none"),
        &["--decoder", "tiny", "--tiny-decoder", "/nonexistent.safetensors"],
    );
    assert!(stderr(&o).contains("/nonexistent.safetensors"), "{}", stderr(&o));
    // The released config does not fit the tiny file: the error names the tensor.
    let o = generate(
        &weights,
        &image,
        &dir.join("gif.gif"),
        &["--decoder", "tiny", "--tiny-decoder", file.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("encoder.0.weight") && e.contains(file.to_str().unwrap()) && e.contains("expected shape"),
        "{e}"
    );
}

#[test]
fn a_closed_stdout_does_not_stop_generate() {
    // `framepack generate … | head -0`: every line printed goes to a pipe nobody reads.
    let (dir, weights, image) = setup("closed-stdout");
    let pngs = dir.join("frames");
    let mut child = generate_command(&weights, &image, &pngs, &["--schedule", "geometric"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&pngs).unwrap().count(), 73);
}
