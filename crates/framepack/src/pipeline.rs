//! The whole FramePack pipeline over a model bundle: image preprocessing, SigLIP, prompt
//! encoding (cached by prompt text), and the [`Generator`].
//!
//! [`Pipeline::start`] takes a [`Request`] — start image, prompt (optionally timestamped,
//! `[0s: …] [2s-4s: …]`), optional end image, resolution base and [`JobSettings`] — and returns a
//! [`Job`] that yields the decoded sections. The text encoders (the Llama alone is ~16 GB in
//! bf16) are loaded only when a prompt is not cached yet and dropped right after encoding; the
//! SigLIP encoder is kept.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::bundle::{BundlePart, BundlePaths};
use crate::error::{BundleError, Error, Result};
use crate::files::FileStore;
use crate::generator::{Conditioning, Generator, Job, JobSettings, PromptSchedule, TextConditioning};
use crate::models::text::clip::ClipTextConfig;
use crate::models::text::llama::LlamaConfig;
use crate::models::text::{PromptCache, PromptEncoder, PromptEncoderFiles, PromptEncoderOptions, PromptFeatures};
use crate::models::transformer::Residency;
use crate::models::vision::{SiglipVisionConfig, SiglipVisionModel};
use crate::packing::{ContextSchedule, SectionPlan};
use crate::preprocess::{self, RgbImage};

/// FramePack's resolution class.
pub const DEFAULT_RESOLUTION: usize = 640;

/// One video to generate.
#[derive(Clone, Debug)]
pub struct Request {
    /// The start frame (any size; it is bucketed, resized and center-cropped).
    pub image: RgbImage,
    /// Optional end frame (resized and cropped to the start frame's bucket).
    pub end_image: Option<RgbImage>,
    /// The prompt; `[0s: …] [2s-4s: …]` tags change it over time (see [`PromptSchedule`]).
    pub prompt: String,
    /// Resolution class of the buckets (640 in FramePack).
    pub resolution: usize,
    /// Length, seed, steps, schedule, TeaCache, …
    pub settings: JobSettings,
}

impl Request {
    /// A request with FramePack's defaults.
    pub fn new(image: RgbImage, prompt: impl Into<String>) -> Self {
        Self {
            image,
            end_image: None,
            prompt: prompt.into(),
            resolution: DEFAULT_RESOLUTION,
            settings: JobSettings::default(),
        }
    }
}

/// Everything a [`Request`] will produce, checked once by [`Request::plan`]: callers (the
/// pipeline, the CLI, the Bevy plugin) read the frame size and counts from it and pass it on
/// instead of checking the request again.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestPlan {
    /// Frame width in pixels (the start image's bucket).
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// The resolved context schedule.
    pub schedule: ContextSchedule,
    /// Sections, window and order.
    pub sections: SectionPlan,
    /// The parsed prompt.
    pub prompts: PromptSchedule,
}

impl RequestPlan {
    /// Frames of the finished video.
    pub fn total_frames(&self) -> usize {
        self.sections.total_frames()
    }

    /// The prompt of every section, in generation order.
    pub fn section_prompts(&self) -> Vec<String> {
        self.prompts.for_sections(&self.sections)
    }
}

impl Request {
    /// Checks the settings, the prompt and the image against the resolution buckets and
    /// returns what the job will produce. Nothing is loaded or computed.
    pub fn plan(&self) -> Result<RequestPlan> {
        let (schedule, sections) = self.settings.plan()?;
        let prompts = PromptSchedule::parse(&self.prompt)?;
        let (height, width) =
            preprocess::find_nearest_bucket(self.image.height(), self.image.width(), self.resolution)?;
        Ok(RequestPlan { width, height, schedule, sections, prompts })
    }
}

/// The preprocessed images of a request.
#[derive(Clone, Debug)]
pub struct PreparedImages {
    /// The start frame, bucketed and cropped.
    pub start: RgbImage,
    /// The end frame, cropped to the same size.
    pub end: Option<RgbImage>,
}

/// Every model of a bundle, ready to generate.
pub struct Pipeline {
    generator: Generator,
    vision: SiglipVisionModel,
    text_files: PromptEncoderFiles,
    prompt_cache: PromptCache,
    device: Device,
    dtype: DType,
}

fn read_text(store: &FileStore, path: &Path, c: BundlePart) -> Result<String> {
    store
        .read_to_string(path)
        .map_err(|e| BundleError::Mismatched { part: c, reason: format!("cannot read {}: {e}", path.display()) }.into())
}

fn weight_paths(store: &FileStore, dir: &Path, c: BundlePart) -> Result<Vec<std::path::PathBuf>> {
    crate::bundle::weight_files(store, dir, "model").map_err(crate::bundle::status_error(c))
}

impl Pipeline {
    /// Checks the whole bundle (one line naming the first missing or mismatched part), loads the
    /// transformer, the VAE and SigLIP, and records where the text encoders are.
    pub fn load(paths: &BundlePaths, device: &Device, dtype: DType) -> Result<Self> {
        Self::load_with(paths, device, dtype, Residency::Resident)
    }

    /// [`Self::load`] with the transformer's blocks placed by `residency` (low-VRAM streaming).
    pub fn load_with(paths: &BundlePaths, device: &Device, dtype: DType, residency: Residency) -> Result<Self> {
        paths.inspect().require(&BundlePart::ALL)?;
        let generator = Generator::new(paths.load_inspected_models(device, dtype, residency)?);
        let store = &paths.store;
        let vcfg = SiglipVisionConfig::from_json(&read_text(
            store,
            &paths.image_encoder.join("config.json"),
            BundlePart::ImageEncoder,
        )?)?;
        let vfiles = weight_paths(store, &paths.image_encoder, BundlePart::ImageEncoder)?;
        let vision = SiglipVisionModel::load(store.weights(&vfiles)?, &vcfg, dtype, device)?;
        let pre = paths.feature_extractor.join("preprocessor_config.json");
        if let Ok(Some(size)) = crate::bundle::siglip_input_size(store, &pre)
            && size != vcfg.image_size
        {
            return Err(Error::from(BundleError::Inconsistent {
                reason: format!(
                    "feature_extractor resizes to {size}² but the image encoder takes {}² ({})",
                    vcfg.image_size,
                    pre.display()
                ),
            }));
        }
        let text_files = PromptEncoderFiles {
            llama_config: LlamaConfig::from_json(&read_text(
                store,
                &paths.text_encoder.join("config.json"),
                BundlePart::TextEncoder,
            )?)?,
            llama_weights: weight_paths(store, &paths.text_encoder, BundlePart::TextEncoder)?,
            llama_tokenizer: paths.tokenizer.join("tokenizer.json"),
            clip_config: ClipTextConfig::from_json(&read_text(
                store,
                &paths.text_encoder_2.join("config.json"),
                BundlePart::TextEncoder2,
            )?)?,
            clip_weights: weight_paths(store, &paths.text_encoder_2, BundlePart::TextEncoder2)?,
            clip_tokenizer: paths.tokenizer_2.join("tokenizer.json"),
            store: store.clone(),
        };
        let cfg = generator.models().transformer.config();
        if text_files.llama_config.hidden_size != cfg.text_embed_dim
            || text_files.clip_config.hidden_size != cfg.pooled_projection_dim
            || vcfg.hidden_size != cfg.image_proj_dim
        {
            return Err(Error::from(BundleError::Inconsistent {
                reason: format!(
                    "encoder widths (Llama {}, CLIP {}, SigLIP {}) do not match the transformer's inputs ({}, {}, {})",
                    text_files.llama_config.hidden_size,
                    text_files.clip_config.hidden_size,
                    vcfg.hidden_size,
                    cfg.text_embed_dim,
                    cfg.pooled_projection_dim,
                    cfg.image_proj_dim
                ),
            }));
        }
        Ok(Self { generator, vision, text_files, prompt_cache: PromptCache::new(), device: device.clone(), dtype })
    }

    /// The generator (transformer + VAE).
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The prompt features cache (by exact prompt text).
    pub fn prompt_cache(&mut self) -> &mut PromptCache {
        &mut self.prompt_cache
    }

    /// Resizes and center-crops the start image to the plan's bucket (and the end image to the
    /// same size).
    pub fn prepare_images(&self, request: &Request, plan: &RequestPlan) -> Result<PreparedImages> {
        let (w, h) = (plan.width, plan.height);
        let start = preprocess::resize_and_center_crop(&request.image, w, h)?;
        let end = request.end_image.as_ref().map(|e| preprocess::resize_and_center_crop(e, w, h)).transpose()?;
        Ok(PreparedImages { start, end })
    }

    /// Encodes every prompt not cached yet (loading the text encoders only if needed) and returns
    /// the features of `texts` in order.
    pub fn encode_prompts(&mut self, texts: &[&str]) -> Result<Vec<PromptFeatures>> {
        let (files, dtype, device) = (&self.text_files, self.dtype, &self.device);
        self.prompt_cache
            .encode_missing(texts, || PromptEncoder::load(files, PromptEncoderOptions::default(), dtype, device))?;
        texts
            .iter()
            .map(|t| self.prompt_cache.get(t).cloned().ok_or_else(|| Error::invalid("prompt", "not in the cache")))
            .collect()
    }

    /// SigLIP `last_hidden_state` of an image.
    pub fn image_embeds(&self, image: &RgbImage) -> Result<Tensor> {
        Ok(self.vision.encode_image(image)?.to_dtype(DType::F32)?)
    }

    /// Everything a [`Job`] needs, encoded.
    pub fn conditioning(&mut self, request: &Request, plan: &RequestPlan) -> Result<Conditioning> {
        let per_section = plan.section_prompts();
        let texts: Vec<&str> = per_section.iter().map(String::as_str).collect();
        let features = self.encode_prompts(&texts)?;
        let text = features
            .into_iter()
            .map(|f| -> Result<TextConditioning> {
                Ok(TextConditioning {
                    llama: f.llama.to_dtype(DType::F32)?,
                    pooled: f.clip_pooled.to_dtype(DType::F32)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let images = self.prepare_images(request, plan)?;
        let image_embeds = self.image_embeds(&images.start)?;
        Ok(Conditioning {
            start_image: preprocess::image_to_tensor(&images.start, &self.device)?,
            end_image: images.end.as_ref().map(|e| preprocess::image_to_tensor(e, &self.device)).transpose()?,
            image_embeds: Some(image_embeds),
            text,
        })
    }

    /// Plans the request ([`Request::plan`]), encodes it and starts a job.
    pub fn start(&mut self, request: &Request) -> Result<Job> {
        let plan = request.plan()?;
        self.start_planned(request, &plan)
    }

    /// Encodes a request already planned with [`Request::plan`] and starts its job.
    pub fn start_planned(&mut self, request: &Request, plan: &RequestPlan) -> Result<Job> {
        let conditioning = self.conditioning(request, plan)?;
        self.generator.start_planned(
            conditioning,
            request.settings.clone(),
            plan.schedule.clone(),
            plan.sections.clone(),
        )
    }
}
