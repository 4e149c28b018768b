//! The generator and its jobs: sampling, decoding and yielding sections.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::models::Autoencoder;
use crate::models::autoencoder::tiny_decode;
use crate::models::taehv::{StreamingDecoder, Taehv};
use crate::models::transformer::{TeaCache, Transformer, TransformerInputs};
use crate::models::vae::SectionDecoder;
use crate::packing::{ContextSchedule, Kernel, SectionOrder, SectionPlan, Slot};
use crate::sampling::{Step, model_guidance, model_timestep, section_sigmas};

use super::conditioning::Conditioning;
use super::decode::{DecodeThread, Decoding, Sampled, SectionFrames};
use super::frames::{Frame, to_frames};
use super::noise::NoiseRng;
use super::settings::{DecoderChoice, ImageLatent, JobSettings};

/// A cloneable cancellation flag; cancel from any thread, the job stops within one step.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, un-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }
}

/// Reported after every sampler step.
pub struct Progress<'a> {
    /// Generation-order index of the section being sampled.
    pub section: usize,
    /// Sections in the job.
    pub sections: usize,
    /// Steps done in this section (1-based: 1 after the first step).
    pub step: usize,
    /// Steps per section.
    pub total_steps: usize,
    /// Time since the job started sampling.
    pub elapsed: Duration,
    /// Estimated time to the end of sampling (from the mean time per step so far; decoding
    /// counted in).
    pub eta: Duration,
    /// The sampler's current x0 prediction `(1, C, W, h, w)` (see [`latent_preview`]).
    pub denoised: &'a Tensor,
    /// With [`JobSettings::previews`]: the tiny decoder's frames of `denoised`, one per latent of
    /// the section, in play order; empty otherwise.
    pub preview: &'a [Frame],
}

impl Progress<'_> {
    /// Fraction of the job's steps done, in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        (self.section * self.total_steps + self.step) as f64 / (self.sections * self.total_steps).max(1) as f64
    }
}

/// A progress callback (runs on the job's thread).
pub type ProgressFn = Box<dyn FnMut(&Progress<'_>) + Send>;

/// Receives each final frame with its index in the video (see [`Job::on_frame`]).
pub type FrameFn = Box<dyn FnMut(usize, &Frame) + Send>;

/// One generated section and the frames it finalized.
#[derive(Clone, Debug)]
pub struct Section {
    /// Generation-order index.
    pub index: usize,
    /// Sections in the job.
    pub sections: usize,
    /// Real latent positions this section generated.
    pub latents: Range<usize>,
    /// The section's new latents `(1, C, W, h, w)` (transformer scale).
    pub latent_tensor: Tensor,
    /// Where [`Section::frames`] land in the finished video (frame indices, 30 fps). With the
    /// forward loop these ranges follow each other; with the inverted loop each lies before
    /// all earlier ones. The last section also carries the frames still provisional, so the
    /// ranges of all sections tile `0..total_frames` exactly.
    pub frame_range: Range<usize>,
    /// The decoded frames that no later section changes any more, in play order.
    pub frames: Vec<Frame>,
    /// Frames decoded so far that the next section will still cross-fade (the `4W − 3` frames
    /// next to the ungenerated part of the video), in play order; empty for the last section.
    /// Show them as a preview; [`Section::frames`] of later sections replace them.
    pub provisional: Vec<Frame>,
    /// Where [`Section::provisional`] lies in the finished video.
    pub provisional_range: Range<usize>,
    /// Whether this is the last section of the job.
    pub is_last: bool,
    /// Model calls TeaCache skipped in this section (0 without TeaCache).
    pub teacache_skipped: usize,
}

/// The transformer and the VAE a job runs with.
pub struct Models {
    /// The packed transformer.
    pub transformer: Transformer,
    /// The video VAE.
    pub vae: Autoencoder,
    /// The tiny decoder (TAEHV) for [`DecoderChoice::Tiny`] and previews, if the bundle has one.
    /// When the VAE is itself a TAEHV, `None` means that one.
    pub tiny_decoder: Option<Taehv>,
}

impl Models {
    /// The decoder [`DecoderChoice::Tiny`] and previews use: [`Self::tiny_decoder`], else the
    /// VAE when it is a TAEHV.
    pub fn tiny(&self) -> Option<&Taehv> {
        self.tiny_decoder.as_ref().or(self.vae.taehv())
    }
}

/// Runs generation jobs; cheap to clone and `Send + Sync` (the models are shared).
#[derive(Clone)]
pub struct Generator {
    models: Arc<Models>,
}

impl Generator {
    /// A generator over loaded models.
    pub fn new(models: Models) -> Self {
        Self { models: Arc::new(models) }
    }

    /// The models.
    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// The device of the transformer.
    pub fn device(&self) -> &Device {
        self.models.transformer.device()
    }

    /// Validates everything and prepares a job; nothing is computed until it is iterated.
    pub fn start(&self, conditioning: Conditioning, settings: JobSettings) -> Result<Job> {
        let (schedule, plan) = settings.plan()?;
        self.start_planned(conditioning, settings, schedule, plan)
    }

    /// [`Self::start`] with the schedule and section plan of [`JobSettings::plan`] (or
    /// [`crate::pipeline::Request::plan`]) already computed.
    pub fn start_planned(
        &self,
        conditioning: Conditioning,
        settings: JobSettings,
        schedule: ContextSchedule,
        plan: SectionPlan,
    ) -> Result<Job> {
        let cfg = self.models.transformer.config();
        let vae = &self.models.vae;
        vae.check_channels(cfg.in_channels, cfg.out_channels)?;
        let needs_tiny = settings.decoder == DecoderChoice::Tiny || settings.previews;
        let tiny = match (self.models.tiny(), needs_tiny) {
            (None, true) => {
                return Err(Error::invalid(
                    "decoder",
                    "the tiny decoder (or previews) was asked for, but the models have none (bundle folder vae_tiny/)",
                ));
            }
            (Some(t), true) if t.config().latent_channels != cfg.out_channels => {
                return Err(Error::invalid(
                    "decoder",
                    format!(
                        "the tiny decoder takes {} latent channels but the transformer returns {}",
                        t.config().latent_channels,
                        cfg.out_channels
                    ),
                ));
            }
            (t, _) => t,
        };
        let preview_decoder = match tiny {
            Some(t) if settings.previews => Some(t.with_decoder_time_upscale([false; 3])?),
            _ => None,
        };
        let streamable = match settings.decoder {
            DecoderChoice::Tiny => tiny,
            DecoderChoice::Full => vae.taehv(),
        };
        let decoding = match streamable {
            Some(t) if plan.order == SectionOrder::Forward => Decoding::Streamed(StreamingDecoder::new(t)),
            _ => Decoding::Blended(SectionDecoder::new(plan.order, plan.window)?),
        };
        let start_image = image_5d(&conditioning.start_image, "start image")?;
        let (h, w) = (start_image.dim(3)?, start_image.dim(4)?);
        let f = vae.spatial_compression() * cfg.patch_size;
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::invalid(
                "start image",
                format!("{w}x{h} pixels: width and height must be positive multiples of {f}"),
            ));
        }
        let end_image = match &conditioning.end_image {
            Some(_) if schedule.future.is_empty() => {
                return Err(Error::invalid(
                    "end image",
                    "this schedule has no context after the window, so an end frame would be ignored \
                     (use the inverted schedule, or symmetric)",
                ));
            }
            Some(e) => {
                let e = image_5d(e, "end image")?;
                if e.dims() != start_image.dims() {
                    return Err(Error::invalid(
                        "end image",
                        format!("shape {:?} differs from the start image {:?}", e.dims(), start_image.dims()),
                    ));
                }
                Some(e)
            }
            None => None,
        };
        match (&conditioning.image_embeds, cfg.has_image_proj) {
            (Some(e), true) if e.rank() == 3 && e.dim(0)? == 1 && e.dim(2)? == cfg.image_proj_dim => {}
            (Some(e), true) => {
                return Err(Error::invalid(
                    "image embeds",
                    format!("expected shape [1, N, {}], got {:?}", cfg.image_proj_dim, e.dims()),
                ));
            }
            (None, true) => {
                return Err(Error::invalid("image embeds", "required: the transformer has an image projection"));
            }
            (Some(_), false) => {
                return Err(Error::invalid("image embeds", "given, but the transformer has no image projection"));
            }
            (None, false) => {}
        }
        let text = &conditioning.text;
        if text.len() != 1 && text.len() != plan.sections {
            return Err(Error::invalid(
                "prompts",
                format!("{} encoded prompts for {} sections (need 1 or one per section)", text.len(), plan.sections),
            ));
        }
        for t in text {
            let d = t.llama.dims();
            if d.len() != 3 || d[0] != 1 || d[1] == 0 || d[2] != cfg.text_embed_dim {
                return Err(Error::invalid(
                    "prompt features",
                    format!("LLaMA features must be [1, L ≥ 1, {}], got {d:?}", cfg.text_embed_dim),
                ));
            }
            if t.pooled.dims() != [1, cfg.pooled_projection_dim] {
                return Err(Error::invalid(
                    "prompt features",
                    format!(
                        "pooled CLIP features must be [1, {}], got {:?}",
                        cfg.pooled_projection_dim,
                        t.pooled.dims()
                    ),
                ));
            }
        }
        let dev = self.device().clone();
        let latent_hw = (h / vae.spatial_compression(), w / vae.spatial_compression());
        let text = conditioning
            .text
            .iter()
            .map(|t| -> Result<PreparedText> {
                let l = t.llama.dim(1)?;
                Ok(PreparedText {
                    llama: t.llama.to_device(&dev)?,
                    mask: Tensor::ones((1, l), DType::F32, &dev)?,
                    pooled: t.pooled.to_device(&dev)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Job {
            models: self.models.clone(),
            rng: NoiseRng::new(settings.seed),
            stage: Stage::Ready(Box::new(SectionFrames::new(
                self.models.clone(),
                plan.clone(),
                settings.decoder,
                decoding,
            ))),
            preview_decoder,
            latents: vec![None; plan.total_latents()],
            image_embeds: conditioning.image_embeds.as_ref().map(|e| e.to_device(&dev)).transpose()?,
            guidance: Tensor::new(&[model_guidance(settings.guidance)], &dev)?,
            text,
            start_image,
            end_image,
            start_latent: None,
            end_latent: None,
            latent_hw,
            image_size: (w, h),
            settings,
            schedule,
            plan,
            next: 0,
            sampled: 0,
            pending_error: None,
            cancel: CancelToken::new(),
            progress: None,
            started: None,
            steps_done: 0,
            done: false,
            device: dev,
        })
    }
}

fn image_5d(x: &Tensor, what: &'static str) -> Result<Tensor> {
    let x = match x.rank() {
        4 => x.unsqueeze(2)?,
        5 => x.clone(),
        r => return Err(Error::invalid(what, format!("expected (1, 3, H, W) or (1, 3, 1, H, W), got rank {r}"))),
    };
    let d = x.dims();
    if d[0] != 1 || d[1] != 3 || d[2] != 1 {
        return Err(Error::invalid(what, format!("expected one RGB image (1, 3, 1, H, W), got {d:?}")));
    }
    Ok(x.to_dtype(DType::F32)?)
}

struct PreparedText {
    llama: Tensor,
    mask: Tensor,
    pooled: Tensor,
}

/// A running generation job: an iterator of sections. Drop it to abandon the job.
pub struct Job {
    models: Arc<Models>,
    settings: JobSettings,
    schedule: ContextSchedule,
    plan: SectionPlan,
    rng: NoiseRng,
    stage: Stage,
    preview_decoder: Option<Taehv>,
    latents: Vec<Option<Tensor>>,
    image_embeds: Option<Tensor>,
    guidance: Tensor,
    text: Vec<PreparedText>,
    start_image: Tensor,
    end_image: Option<Tensor>,
    start_latent: Option<Tensor>,
    end_latent: Option<Tensor>,
    latent_hw: (usize, usize),
    image_size: (usize, usize),
    /// The next section to hand out, and the sections sampled so far (one more while the
    /// decoder thread decodes `next`).
    next: usize,
    sampled: usize,
    /// A lookahead sampling error, returned after the section that was decoding meanwhile.
    pending_error: Option<Error>,
    cancel: CancelToken,
    progress: Option<ProgressFn>,
    started: Option<Instant>,
    steps_done: usize,
    done: bool,
    device: Device,
}

impl Job {
    /// The section plan.
    pub fn plan(&self) -> &SectionPlan {
        &self.plan
    }

    /// The resolved context schedule.
    pub fn schedule(&self) -> &ContextSchedule {
        &self.schedule
    }

    /// The settings.
    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// Frames of the finished video.
    pub fn total_frames(&self) -> usize {
        self.plan.total_frames()
    }

    /// `(width, height)` of the frames.
    pub fn frame_size(&self) -> (usize, usize) {
        self.image_size
    }

    /// The job's cancellation token (clone it to cancel from another thread).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Uses `token` as the job's cancellation token.
    pub fn with_cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// Calls `f` after every sampler step.
    pub fn on_progress(mut self, f: impl FnMut(&Progress<'_>) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Calls `f` with every final frame and its index in the video, in generation order, as soon
    /// as it exists: forward jobs with a TAEHV decoder decode frame by frame, so each frame
    /// arrives while the rest of its section is still decoding; other jobs deliver a section's
    /// frames when it is decoded. The frames are those of [`Section::frames`]. With
    /// [`JobSettings::pipeline`], `f` runs on the decoder's threads, before the section is
    /// handed out.
    pub fn on_frame(mut self, f: impl FnMut(usize, &Frame) + Send + 'static) -> Self {
        // Before the first section the decode stage is still here (it moves when the job begins).
        if let Stage::Ready(frames) = &mut self.stage {
            frames.frame_sink = Some(Box::new(f));
        }
        self
    }

    /// The start latent `(1, C, 1, h, w)` once the first section has encoded it.
    pub fn start_latent(&self) -> Option<&Tensor> {
        self.start_latent.as_ref()
    }

    /// Every latent generated so far by real position (`None` where not generated yet).
    pub fn latents(&self) -> &[Option<Tensor>] {
        &self.latents
    }

    /// Runs the job to the end and returns the whole video in play order.
    pub fn run_to_end(self) -> Result<Vec<Frame>> {
        let total = self.total_frames();
        let mut video: Vec<Option<Frame>> = vec![None; total];
        for section in self {
            let s = section?;
            for (i, f) in s.frame_range.zip(s.frames) {
                video[i] = Some(f);
            }
        }
        video
            .into_iter()
            .enumerate()
            .map(|(i, f)| f.ok_or_else(|| Error::invalid("video", format!("frame {i} was never produced"))))
            .collect()
    }

    fn encode_image(&self, image: &Tensor, salt: u64) -> Result<Tensor> {
        let m = &self.models;
        let x = image.to_device(m.transformer.device())?;
        let seed = self.settings.seed ^ salt;
        let noise = |dims: &[usize]| NoiseRng::new(seed).normal_tensor(dims, x.device());
        match self.settings.image_latent {
            ImageLatent::Mean => m.vae.encode(&x, None),
            ImageLatent::Sample => m.vae.encode(&x, Some(&noise)),
        }
    }

    fn slot_latent(&self, slot: Slot) -> Result<Tensor> {
        let zeros = || {
            let (h, w) = self.latent_hw;
            Tensor::zeros((1, self.models.transformer.config().in_channels, 1, h, w), DType::F32, &self.device)
        };
        Ok(match slot {
            Slot::Start => self.start_latent.clone().expect("encoded before the first section"),
            Slot::End => match &self.end_latent {
                Some(e) => e.clone(),
                None => zeros()?,
            },
            Slot::Zero => zeros()?,
            Slot::Latent(p) => self.latents.get(p).cloned().flatten().ok_or_else(|| {
                Error::invalid("schedule", format!("context slot reads latent {p}, which is not generated yet"))
            })?,
        })
    }

    /// Encodes the start (and end) latents and sets up the decode stage, on a thread of its
    /// own when [`JobSettings::pipeline`] applies.
    fn begin(&mut self) -> Result<()> {
        self.started = Some(Instant::now());
        let start = self.encode_image(&self.start_image, 0x5354_4152_5400_0000)?;
        if let Some(e) = &self.end_image {
            self.end_latent = Some(self.encode_image(e, 0x454e_4400_0000_0000)?);
        }
        self.start_latent = Some(start.clone());
        let Stage::Ready(mut frames) = std::mem::replace(&mut self.stage, Stage::Gone) else {
            return Err(Error::invalid("job", "started twice"));
        };
        frames.cancel = self.cancel.clone();
        // Both stages get as many threads as the job's pool: while one waits, the other has
        // every core; while both run, the OS shares them.
        let threads = rayon::current_num_threads();
        self.stage = if self.settings.pipeline && self.device.is_cpu() && threads >= 2 && self.plan.sections > 1 {
            let thread = DecodeThread::spawn(*frames, threads)?;
            thread.start(start);
            Stage::Thread(thread)
        } else {
            frames.start(start)?;
            Stage::Ready(frames)
        };
        Ok(())
    }

    fn sample_section(&mut self, index: usize) -> Result<Sampled> {
        self.cancel.check()?;
        let started = self.started.expect("begun");
        let info = self.plan.section(index)?;
        let layout = self.schedule.layout(&self.plan, index)?;
        layout.check_model_kernels()?;

        // Context groups by kernel, each with its RoPE indices.
        let mut groups: Vec<Option<(Tensor, Tensor)>> = vec![None, None, None];
        for g in &layout.groups {
            let slot = [Kernel::X1, Kernel::X2, Kernel::X4].iter().position(|k| *k == g.kernel).expect("checked");
            let parts = g.slots.iter().map(|s| self.slot_latent(*s)).collect::<Result<Vec<_>>>()?;
            let latents = Tensor::cat(&parts, 2)?;
            let indices = Tensor::new(g.indices.as_slice(), &self.device)?;
            groups[slot] = Some((latents, indices));
        }
        let indices_latents = Tensor::new(layout.indices_latents.as_slice(), &self.device)?;

        let tr = &self.models.transformer;
        let (h, w) = self.latent_hw;
        let window = self.plan.window;
        let c = tr.config().in_channels;
        let noise = self.rng.normal_tensor(&[1, c, window, h, w], &self.device)?;
        let sigmas = section_sigmas(self.settings.steps, window, h, w)?;
        let text = &self.text[if self.text.len() == 1 { 0 } else { index }];
        let mut tea = self.settings.teacache.map(|t| TeaCache::new(t, self.settings.steps)).transpose()?;
        let cancel = self.cancel.clone();
        let image_embeds = self.image_embeds.as_ref();
        let guidance = tr.config().guidance_embeds.then_some(&self.guidance);
        let group = |i: usize| groups[i].as_ref();

        let mut denoise = |x: &Tensor, sigma: f64| -> Result<Tensor> {
            cancel.check()?;
            let timestep = Tensor::new(&[model_timestep(sigma)], x.device())?;
            let inputs = TransformerInputs {
                hidden_states: x,
                timestep: &timestep,
                encoder_hidden_states: &text.llama,
                encoder_attention_mask: &text.mask,
                pooled_projections: &text.pooled,
                image_embeds,
                guidance,
                indices_latents: &indices_latents,
                latents_clean: group(0).map(|g| &g.0),
                indices_latents_clean: group(0).map(|g| &g.1),
                latents_history_2x: group(1).map(|g| &g.0),
                indices_latents_history_2x: group(1).map(|g| &g.1),
                latents_history_4x: group(2).map(|g| &g.0),
                indices_latents_history_4x: group(2).map(|g| &g.1),
            };
            let v = match tea.as_mut() {
                Some(cache) => tr.forward_with_cache(&inputs, cache)?,
                None => tr.forward(&inputs)?,
            };
            let v = v.to_dtype(DType::F32)?.to_device(x.device())?;
            Ok((x - (v * sigma)?)?)
        };

        let sections = self.plan.sections;
        let steps_total_job = sections * self.settings.steps;
        let steps_before = self.steps_done;
        let progress = &mut self.progress;
        let preview_decoder = self.preview_decoder.as_ref();
        let mut callback = |step: &Step<'_>| -> Result<()> {
            cancel.check()?;
            if let Some(f) = progress.as_mut() {
                let preview = match preview_decoder {
                    Some(d) => to_frames(&tiny_decode(d, step.denoised)?)?,
                    None => Vec::new(),
                };
                let done = steps_before + step.index + 1;
                let elapsed = started.elapsed();
                let per_step = elapsed.as_secs_f64() / done as f64;
                let eta = Duration::from_secs_f64(per_step * steps_total_job.saturating_sub(done) as f64);
                f(&Progress {
                    section: index,
                    sections,
                    step: step.index + 1,
                    total_steps: step.total,
                    elapsed,
                    eta,
                    denoised: step.denoised,
                    preview: &preview,
                });
            }
            Ok(())
        };
        let new = self.settings.sampler.sample(&mut denoise, &noise, &sigmas, &mut callback)?;
        let teacache_skipped = tea.as_ref().map_or(0, |t| t.skipped());
        self.steps_done += self.settings.steps;
        for k in 0..window {
            self.latents[info.latents.start + k] = Some(new.narrow(2, k, 1)?);
        }
        Ok(Sampled { index, latents: info.latents, new, teacache_skipped })
    }

    fn run_section(&mut self) -> Result<Section> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        self.cancel.check()?;
        if self.started.is_none() {
            self.begin()?;
        }
        let index = self.next;
        if matches!(self.stage, Stage::Ready(_)) {
            let sampled = self.sample_section(index)?;
            self.sampled = index + 1;
            let Stage::Ready(frames) = &mut self.stage else { unreachable!("matched above") };
            return frames.section(sampled);
        }
        // Pipelined: section `index` decodes while the next one samples.
        if self.sampled == index {
            let sampled = self.sample_section(index)?;
            self.submit(sampled)?;
        }
        if self.sampled < self.plan.sections {
            match self.sample_section(self.sampled) {
                Ok(sampled) => self.submit(sampled)?,
                // Section `index` is decoded all the same; the error comes with the next call.
                Err(e) => self.pending_error = Some(e),
            }
        }
        match &self.stage {
            Stage::Thread(t) => t.recv(),
            _ => Err(Error::invalid("job", "decoder thread gone")),
        }
    }

    fn submit(&mut self, sampled: Sampled) -> Result<()> {
        let Stage::Thread(t) = &self.stage else {
            return Err(Error::invalid("job", "decoder thread gone"));
        };
        t.submit(sampled);
        self.sampled += 1;
        Ok(())
    }
}

/// Where a job's decode stage runs.
enum Stage {
    /// On the job's thread (also before the first section, when it may still move).
    Ready(Box<SectionFrames>),
    /// On a decoder thread of its own.
    Thread(DecodeThread),
    Gone,
}

impl Iterator for Job {
    type Item = Result<Section>;

    fn next(&mut self) -> Option<Result<Section>> {
        if self.done || self.next >= self.plan.sections {
            return None;
        }
        let out = self.run_section();
        match &out {
            Ok(_) => self.next += 1,
            Err(_) => {
                self.done = true;
                self.stage = Stage::Gone;
            }
        }
        if self.next >= self.plan.sections {
            self.done = true;
        }
        Some(out)
    }
}
