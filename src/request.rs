//! What a game asks the worker for, and what it gets back at once.

use bevy::asset::Handle;
use bevy::image::Image;
use framepack::JobSettings;
use framepack::pipeline::Request;
use framepack::preprocess::RgbImage;

use crate::clip::CutsceneClip;
use crate::messages::JobId;

/// RGBA8 pixels of a start (or end) image, row-major, tightly packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbaImage {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl RgbaImage {
    /// Wraps `width·height·4` bytes of RGBA8.
    pub fn new(width: u32, height: u32, rgba: Vec<u8>) -> Result<Self, FramePackError> {
        let expected = width as usize * height as usize * 4;
        if width == 0 || height == 0 || rgba.len() != expected {
            return Err(FramePackError::InvalidImage(format!(
                "{width}x{height} RGBA needs {expected} bytes, got {}",
                rgba.len()
            )));
        }
        Ok(Self { width, height, rgba })
    }

    /// Copies the pixels of a CPU-side Bevy [`Image`] (RGBA8 or BGRA8, sRGB or not, e.g. a
    /// screenshot; window captures come back as BGRA).
    pub fn from_image(image: &Image) -> Result<Self, FramePackError> {
        use bevy::render::render_resource::TextureFormat as F;
        let size = image.texture_descriptor.size;
        let data = image
            .data
            .clone()
            .ok_or_else(|| FramePackError::InvalidImage("the image has no CPU-side pixels".into()))?;
        let mut img = Self::new(size.width, size.height, data)?;
        match image.texture_descriptor.format {
            F::Rgba8Unorm | F::Rgba8UnormSrgb => {}
            F::Bgra8Unorm | F::Bgra8UnormSrgb => img.rgba.chunks_exact_mut(4).for_each(|p| p.swap(0, 2)),
            other => return Err(FramePackError::InvalidImage(format!("unsupported pixel format {other:?}"))),
        }
        Ok(img)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// The RGBA8 bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.rgba
    }

    fn to_rgb(&self) -> Result<RgbImage, FramePackError> {
        let rgb = self.rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        RgbImage::new(self.width as usize, self.height as usize, rgb)
            .map_err(|e| FramePackError::InvalidImage(e.to_string()))
    }
}

/// What to generate: a start image, a prompt and the job settings.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    /// The start frame.
    pub image: RgbaImage,
    /// Optional end frame.
    pub end_image: Option<RgbaImage>,
    /// The prompt; `[0s: …] [2s-4s: …]` tags change it over time.
    pub prompt: String,
    /// Resolution class of the output buckets (640 in FramePack).
    pub resolution: usize,
    /// Length, seed, steps, schedule, TeaCache, …
    pub settings: JobSettings,
}

impl GenerationRequest {
    /// The core's request (RGB images), as the worker runs it.
    pub(crate) fn to_core(&self) -> Result<Request, FramePackError> {
        Ok(Request {
            image: self.image.to_rgb()?,
            end_image: self.end_image.as_ref().map(RgbaImage::to_rgb).transpose()?,
            prompt: self.prompt.clone(),
            resolution: self.resolution,
            settings: self.settings.clone(),
        })
    }

    /// A request with FramePack's default settings.
    pub fn new(image: RgbaImage, prompt: impl Into<String>) -> Self {
        Self {
            image,
            end_image: None,
            prompt: prompt.into(),
            resolution: framepack::pipeline::DEFAULT_RESOLUTION,
            settings: JobSettings::default(),
        }
    }
}

/// What [`FramePack::generate`] knows about a job as soon as it is queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobTicket {
    /// The job.
    pub id: JobId,
    /// The clip the job fills, section by section: give it to [`CutscenePlayer`]s.
    ///
    /// [`CutscenePlayer`]: crate::CutscenePlayer
    pub clip: Handle<CutsceneClip>,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames of the finished video (30 fps).
    pub total_frames: usize,
    /// Sections the job generates.
    pub sections: usize,
}

/// Why a request was refused before it reached the worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramePackError {
    /// The start or end image is unusable.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The settings or the prompt are invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The worker thread could not be started or has shut down.
    #[error("worker unavailable: {0}")]
    WorkerUnavailable(String),
}
