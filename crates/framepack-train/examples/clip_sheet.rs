//! A contact sheet of the nano model's procedural clips: one row per seed, every `--step`-th
//! frame across.
//!
//! ```text
//! cargo run -p framepack-train --example clip_sheet -- [--seeds 0..8] [--step 8] [--size WxH] [--out clips.png]
//! ```
//!
//! One seed and a step longer than the clip (`--seeds 3..4 --step 1000`) writes that clip's first
//! frame alone, a start image for `framepack generate`.

use framepack_train::clips::{self, ClipConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut seeds, mut step, mut out) = (0u64..8, 8usize, "clips.png".to_string());
    let mut cfg = ClipConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => {
                let v = value()?;
                let (a, b) = v.split_once("..").ok_or("--seeds takes A..B")?;
                seeds = a.parse()?..b.parse()?;
            }
            "--step" => step = value()?.parse::<usize>()?.max(1),
            "--out" => out = value()?,
            "--size" => {
                let v = value()?;
                let (w, h) = v.split_once('x').ok_or("--size takes WxH")?;
                (cfg.width, cfg.height) = (w.parse()?, h.parse()?);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cols = cfg.frames.div_ceil(step);
    let (w, h) = (cfg.width as u32, cfg.height as u32);
    let mut sheet = image::RgbImage::new(w * cols as u32, h * seeds.clone().count() as u32);
    for (row, seed) in seeds.enumerate() {
        let clip = clips::clip(seed, &cfg)?;
        println!("seed {seed}{}: {}", if clips::is_held_out(seed) { " (held out)" } else { "" }, clip.prompt);
        for (col, frame) in clip.frames.iter().step_by(step).enumerate() {
            let img = image::RgbImage::from_raw(w, h, frame.clone()).ok_or("frame size")?;
            image::imageops::replace(&mut sheet, &img, (col as u32 * w) as i64, (row as u32 * h) as i64);
        }
    }
    sheet.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
