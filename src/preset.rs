//! `*.preset.ron` assets: everything about a cutscene except the start image.

use bevy::asset::io::Reader;
use bevy::asset::{AssetLoader, LoadContext};
use bevy::prelude::*;
use framepack::packing::ScheduleChoice;
use framepack::{DecoderChoice, JobSettings};
use serde::Deserialize;

use crate::playback::{BufferPolicy, CutscenePlayback, PlaybackMode};
use crate::request::{GenerationRequest, RgbaImage};

/// A cutscene preset, loaded from a `*.preset.ron` file. Every field has a default:
///
/// ```ron
/// (
///     name: "Door opens",
///     prompt: "[0s: the door creaks open] [2s: light floods the hall]",
///     seconds: 2.0,
///     seed: 7,
///     steps: 8,
///     schedule: Geometric,
///     resolution: 640,
///     teacache: Some(0.15),
///     playback: Pause, // buffering: Pause, Hold or Loop
///     mode: Once,      // after the last frame: Once, Loop, Despawn or Remove
///     end_image: None, // or Some("presets/door_end.png"); needs an inverted or symmetric schedule
///     decoder: Full,   // or Tiny: the bundle's tiny decoder (vae_tiny/), far faster
///     previews: false, // true: players show the tiny decoder's estimate while a section samples
/// )
/// ```
#[derive(Asset, TypePath, Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preset {
    /// A name for menus.
    pub name: String,
    /// The prompt; `[0s: …] [2s-4s: …]` tags make it change over time.
    pub prompt: String,
    /// Video length in seconds (rounded to whole sections).
    pub seconds: f64,
    /// Noise seed.
    pub seed: u64,
    /// Sampler steps per section.
    pub steps: usize,
    /// Context schedule (`Geometric` streams frames in play order; `InvertedAntiDrifting` is
    /// the original checkpoint's loop, whose frames only play once generation ends).
    pub schedule: ScheduleChoice,
    /// Distilled guidance scale.
    pub guidance: f64,
    /// Resolution class of the output buckets.
    pub resolution: usize,
    /// TeaCache threshold, or `None` for full computation.
    pub teacache: Option<f64>,
    /// Playback frame rate (the clip's is 30 fps; other rates play it faster or slower).
    pub fps: f32,
    /// What a [`CutscenePlayer`](crate::CutscenePlayer) does when it catches up with generation.
    pub playback: BufferPolicy,
    /// What a player does after the last frame.
    pub mode: PlaybackMode,
    /// Optional end frame: an image asset path (PNG), relative to the assets folder. The video
    /// is generated towards it, which needs a schedule with context after the window
    /// (`InvertedAntiDrifting` or `Symmetric`).
    pub end_image: Option<String>,
    /// The decoder of the frames (`Tiny` needs a bundle with a tiny decoder).
    pub decoder: DecoderChoice,
    /// Send the tiny decoder's frame of every sampler step's estimate; players show it while
    /// they wait for frames (needs a bundle with a tiny decoder).
    pub previews: bool,
    /// The end frame's pixels, read by the asset loader from [`Preset::end_image`].
    #[serde(skip)]
    pub end_pixels: Option<RgbaImage>,
}

impl Default for Preset {
    fn default() -> Self {
        let s = JobSettings::default();
        Self {
            name: String::new(),
            prompt: String::new(),
            seconds: s.seconds,
            seed: s.seed,
            steps: s.steps,
            schedule: ScheduleChoice::Geometric,
            guidance: s.guidance,
            resolution: framepack::pipeline::DEFAULT_RESOLUTION,
            teacache: None,
            fps: 30.0,
            playback: BufferPolicy::default(),
            mode: PlaybackMode::Once,
            end_image: None,
            decoder: DecoderChoice::Full,
            previews: false,
            end_pixels: None,
        }
    }
}

impl Preset {
    /// Parses preset RON; errors carry `line:column`.
    pub fn from_ron(text: &str) -> Result<Self, ron::error::SpannedError> {
        ron::Options::default().from_str(text)
    }

    /// The generator settings of this preset.
    pub fn settings(&self) -> JobSettings {
        JobSettings {
            seconds: self.seconds,
            seed: self.seed,
            steps: self.steps,
            schedule: self.schedule.clone(),
            guidance: self.guidance,
            teacache: self.teacache,
            decoder: self.decoder,
            previews: self.previews,
            ..JobSettings::default()
        }
    }

    /// How players of this preset's cutscenes play: its end mode, buffering policy and frame
    /// rate (as a speed relative to FramePack's 30 fps).
    pub fn playback_settings(&self) -> CutscenePlayback {
        let speed =
            if self.fps.is_finite() && self.fps > 0.0 { self.fps / framepack::packing::FPS as f32 } else { 1.0 };
        CutscenePlayback { mode: self.mode, buffer: self.playback, speed, ..CutscenePlayback::ONCE }
    }

    /// A generation request for this preset, starting from `image`.
    pub fn request(&self, image: RgbaImage) -> GenerationRequest {
        GenerationRequest {
            image,
            end_image: self.end_pixels.clone(),
            prompt: self.prompt.clone(),
            resolution: self.resolution,
            settings: self.settings(),
        }
    }
}

/// Loads [`Preset`]s from `*.preset.ron`.
#[derive(Default, TypePath)]
pub struct PresetLoader;

/// Why a preset did not load.
#[derive(Debug, thiserror::Error)]
pub enum PresetLoaderError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The asset path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The RON is malformed or does not fit [`Preset`].
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The asset path.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The end image is missing, unreadable or unusable with the preset's schedule.
    #[error("{path}: end image {image}: {reason}")]
    EndImage {
        /// The preset's asset path.
        path: String,
        /// The end image's asset path.
        image: String,
        /// What is wrong.
        reason: String,
    },
}

impl PresetLoaderError {
    /// A parse error located in `path`.
    pub fn parse(path: impl Into<String>, e: &ron::error::SpannedError) -> Self {
        Self::Parse {
            path: path.into(),
            line: e.span.start.line,
            column: e.span.start.col,
            message: e.code.to_string(),
        }
    }
}

impl AssetLoader for PresetLoader {
    type Asset = Preset;
    type Settings = ();
    type Error = PresetLoaderError;

    async fn load(&self, reader: &mut dyn Reader, _: &(), cx: &mut LoadContext<'_>) -> Result<Preset, Self::Error> {
        let path = cx.path().to_string();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.map_err(|source| PresetLoaderError::Io { path: path.clone(), source })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut preset = Preset::from_ron(&text).map_err(|e| PresetLoaderError::parse(path.clone(), &e))?;
        if let Some(image) = preset.end_image.clone() {
            let fail =
                |reason: String| PresetLoaderError::EndImage { path: path.clone(), image: image.clone(), reason };
            if preset.schedule.resolve().future.is_empty() {
                return Err(fail(format!(
                    "the {:?} schedule has no context after the window, so an end frame would be ignored \
                     (use InvertedAntiDrifting or Symmetric)",
                    preset.schedule
                )));
            }
            let bytes = cx.read_asset_bytes(image.clone()).await.map_err(|e| fail(e.to_string()))?;
            let ext = std::path::Path::new(&image).extension().and_then(|e| e.to_str()).unwrap_or("png");
            let decoded = Image::from_buffer(
                &bytes,
                bevy::image::ImageType::Extension(ext),
                bevy::image::CompressedImageFormats::NONE,
                true,
                bevy::image::ImageSampler::Default,
                bevy::asset::RenderAssetUsages::default(),
            )
            .map_err(|e| fail(e.to_string()))?;
            preset.end_pixels = Some(RgbaImage::from_image(&decoded).map_err(|e| fail(e.to_string()))?);
        }
        Ok(preset)
    }

    fn extensions(&self) -> &[&str] {
        &["preset.ron"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_presets_parse_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/presets");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".preset.ron") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let p = Preset::from_ron(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            p.settings().plan().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            framepack::generator::PromptSchedule::parse(&p.prompt).unwrap();
            if let Some(end) = &p.end_image {
                assert!(dir.join("..").join(end).exists(), "{}: end image {end} is missing", path.display());
            }
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn parse_error_has_line_and_column() {
        let e = Preset::from_ron("(\n  seconds: 2.0,\n  steps: \"many\",\n)").unwrap_err();
        let err = PresetLoaderError::parse("presets/bad.preset.ron", &e).to_string();
        assert!(err.starts_with("presets/bad.preset.ron:3:"), "{err}");
    }
}
