//! Training of the nano model, stage 2: the packed transformer, by flow matching on the latents
//! of the stage-1 VAE.
//!
//! Every example is one section of a clip, laid out exactly as [`framepack::generator`] lays it out
//! at inference: a schedule (forward geometric or inverted anti-drifting, drawn per example), a
//! plan of 1 to `max_sections` sections and a section of it are drawn, and
//! [`ContextSchedule::layout`] fills the 1x/2x/4x history from the clip's own latents (the start
//! latent, generated positions, zeros where the video has nothing yet). The noisy window is
//! `x_σ = (1 − σ)·x₀ + σ·ε` with `σ = sigmoid(n)`, `n ~ N(0, 1)`, and the model learns the
//! velocity `ε − x₀` (the generator's denoiser is `x − σ·v`).
//!
//! Conditioning goes through the released inputs: the bundle's tiny Llama and CLIP (frozen,
//! random) turn the prompt words into features that the transformer's own text refiner learns
//! to read, and the tiny SigLIP (frozen, random) gives 4 feature tokens of the start frame.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::clips::{self, ClipConfig};
use crate::train::{RunFiles, init_weights, io, move_vars};
use framepack::Result;
use framepack::generator::NoiseRng;
use framepack::models::Autoencoder;
use framepack::models::transformer::{self, Transformer, TransformerInputs};
use framepack::packing::{ContextSchedule, Kernel, SectionPlan, Slot, latent_to_frames};
use framepack::preprocess::RgbImage;
use framepack::sampling::model_timestep;

/// The nano transformer: width 128 (4 heads × 32), 2 dual-stream and 4 single-stream blocks,
/// one refiner block, every history embedder and the image projection; text, pooled and image
/// widths match the bundle's tiny encoders (16, 8, 8).
pub fn nano_transformer_config() -> transformer::Config {
    transformer::Config {
        num_attention_heads: 4,
        attention_head_dim: 32,
        num_layers: 2,
        num_single_layers: 4,
        num_refiner_layers: 1,
        mlp_ratio: 4.0,
        guidance_embeds: false,
        text_embed_dim: 16,
        pooled_projection_dim: 8,
        rope_axes_dim: [8, 12, 12],
        has_image_proj: true,
        image_proj_dim: 8,
        has_clean_x_embedder: true,
        ..transformer::Config::default()
    }
}

/// Settings of a transformer training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DitTraining {
    /// Total optimizer steps.
    pub steps: usize,
    /// Sections per step.
    pub batch: usize,
    /// Training clips encoded once at the start of the run.
    pub clips: usize,
    /// Longest plan drawn, in sections; clips are `1 + max_sections·W` latents long.
    pub max_sections: usize,
    /// Latent frames per section.
    pub window: usize,
    /// Clip sizes `[width, height]`; the clips are split evenly between them and each step
    /// draws its whole batch from one size (the demo's 4:3 capture buckets to 64 × 48 at
    /// resolution 64).
    pub sizes: Vec<[usize; 2]>,
    /// AdamW learning rate.
    pub lr: f64,
    /// Share of inverted-schedule examples whose end slot (the position after the video) holds
    /// the clip's last frame encoded as a still image, as the generator fills it from an end
    /// image; the others leave it zero, as a job without one does.
    pub end_share: f64,
    /// Steps between checkpoints (the last step always saves).
    pub checkpoint_every: usize,
    /// Seed of the initialisation and of the example draws.
    pub seed: u64,
    /// Weights a fresh run starts from instead of the random initialisation (a transformer
    /// checkpoint of the same config, any float dtype), e.g. the previous model version's.
    pub init: Option<std::path::PathBuf>,
}

impl Default for DitTraining {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch: 8,
            clips: 400,
            max_sections: 3,
            window: 9,
            sizes: vec![[64, 64], [64, 48]],
            lr: 5e-4,
            end_share: 0.0,
            checkpoint_every: 100,
            seed: 0,
            init: None,
        }
    }
}

impl DitTraining {
    /// Version 2 of the nano model: 128 × 128 and 128 × 96 clips (the square bucket and the
    /// demo's 4:3 capture at resolution 128) on the TAEHV's latents, with the end slot filled
    /// in 40 % of the inverted examples.
    pub fn nano_v2() -> Self {
        Self { sizes: vec![[128, 128], [128, 96]], end_share: 0.4, ..Self::default() }
    }
}

impl DitTraining {
    fn validate(&self) -> Result<()> {
        if self.batch == 0
            || self.clips < self.sizes.len()
            || self.max_sections == 0
            || self.window == 0
            || self.sizes.is_empty()
            || self.sizes.iter().flatten().any(|s| *s == 0 || s % 16 != 0)
            || !(0.0..=1.0).contains(&self.end_share)
        {
            return Err(crate::invalid(
                "training settings",
                format!(
                    "{self:?}: need batch, max_sections and window ≥ 1, at least one clip per size, \
                     sizes divisible by 16 and end_share in [0, 1]"
                ),
            ));
        }
        Ok(())
    }
}

/// One line of the transformer loss log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DitStepLoss {
    /// 1-based step.
    pub step: usize,
    /// Velocity MSE over the noisy window.
    pub loss: f32,
    /// Wall time of the step.
    pub seconds: f64,
}

#[derive(Serialize)]
struct State {
    step: usize,
    settings: DitTraining,
}

/// Encoded training clips: scaled VAE latents, prompt features and start-frame image features.
pub struct ClipLatents {
    /// `(1, C, 1 + sections·W, h, w)` per clip, scaled (`z·scaling_factor`).
    pub latents: Vec<Tensor>,
    /// The frames encoded as still images for the end slot (see [`Self::end_latents`]).
    pub end_frames: Vec<usize>,
    /// Per clip, `(1, C, 1, h, w)` of each of [`Self::end_frames`] encoded alone, as an end
    /// image is.
    pub end_latents: Vec<Vec<Tensor>>,
    /// Index into `texts` per clip.
    pub prompt: Vec<usize>,
    /// `(llama (1, L, D), pooled (1, P))` per distinct prompt.
    pub texts: Vec<(Tensor, Tensor)>,
    /// `(1, N, D)` image features of each clip's first frame.
    pub image_embeds: Vec<Tensor>,
}

/// The first frame of a clip as an image.
pub fn first_frame(clip: &clips::Clip) -> Result<RgbImage> {
    RgbImage::new(clip.width, clip.height, clip.frames[0].clone())
}

impl ClipLatents {
    /// Encodes the clips of `seeds` (`frames` frames each) with the pipeline's VAE and encoders,
    /// and their frames `end_frames` as still images; `on_clip` sees the count done.
    pub fn encode(
        pipeline: &mut framepack::Pipeline,
        seeds: &[u64],
        cfg: &ClipConfig,
        end_frames: &[usize],
        mut on_clip: impl FnMut(usize),
    ) -> Result<Self> {
        if let Some(f) = end_frames.iter().find(|&&f| f >= cfg.frames) {
            return Err(crate::invalid("end frames", format!("frame {f} is past the clip's {} frames", cfg.frames)));
        }
        let mut out = Self {
            latents: Vec::new(),
            end_frames: end_frames.to_vec(),
            end_latents: Vec::new(),
            prompt: Vec::new(),
            texts: Vec::new(),
            image_embeds: Vec::new(),
        };
        let mut prompts: Vec<String> = Vec::new();
        for (i, &seed) in seeds.iter().enumerate() {
            let clip = clips::clip(seed, cfg)?;
            let vae = &pipeline.generator().models().vae;
            let x = clip.to_tensor(&Device::Cpu)?;
            let z = vae.encode(&x, None)?;
            out.latents.push(z);
            let ends = end_frames.iter().map(|&f| vae.encode(&x.narrow(2, f, 1)?, None)).collect::<Result<_>>()?;
            out.end_latents.push(ends);
            let p = match prompts.iter().position(|p| *p == clip.prompt) {
                Some(p) => p,
                None => {
                    let f = pipeline.encode_prompts(&[clip.prompt.as_str()])?.remove(0);
                    out.texts.push((f.llama.to_dtype(DType::F32)?, f.clip_pooled.to_dtype(DType::F32)?));
                    prompts.push(clip.prompt.clone());
                    prompts.len() - 1
                }
            };
            out.prompt.push(p);
            out.image_embeds.push(pipeline.image_embeds(&first_frame(&clip)?)?);
            on_clip(i + 1);
        }
        Ok(out)
    }
}

impl ClipLatents {
    /// The tensors of [`Self::save`], names prefixed by `prefix`.
    fn tensors(&self, prefix: &str, out: &mut std::collections::HashMap<String, Tensor>) -> Result<()> {
        let dev = Device::Cpu;
        for (i, z) in self.latents.iter().enumerate() {
            out.insert(format!("{prefix}clip.{i}.latents"), z.clone());
            out.insert(format!("{prefix}clip.{i}.image_embeds"), self.image_embeds[i].clone());
            for (k, e) in self.end_latents[i].iter().enumerate() {
                out.insert(format!("{prefix}clip.{i}.end.{k}"), e.clone());
            }
        }
        for (p, (llama, pooled)) in self.texts.iter().enumerate() {
            out.insert(format!("{prefix}text.{p}.llama"), llama.clone());
            out.insert(format!("{prefix}text.{p}.pooled"), pooled.clone());
        }
        let prompt: Vec<u32> = self.prompt.iter().map(|&p| p as u32).collect();
        out.insert(format!("{prefix}prompt"), Tensor::new(prompt.as_slice(), &dev)?);
        let ends: Vec<u32> = self.end_frames.iter().map(|&f| f as u32).collect();
        out.insert(format!("{prefix}end_frames"), Tensor::new(ends.as_slice(), &dev)?);
        Ok(())
    }

    /// Reads what [`Self::tensors`] wrote under `prefix`.
    fn from_tensors(t: &std::collections::HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let get = |name: String| {
            t.get(&name).cloned().ok_or_else(|| crate::invalid("clip cache", format!("no tensor {name}")))
        };
        let prompt: Vec<usize> =
            get(format!("{prefix}prompt"))?.to_vec1::<u32>()?.into_iter().map(|p| p as usize).collect();
        let end_frames: Vec<usize> =
            get(format!("{prefix}end_frames"))?.to_vec1::<u32>()?.into_iter().map(|f| f as usize).collect();
        let mut out = Self {
            latents: Vec::new(),
            end_frames: end_frames.clone(),
            end_latents: Vec::new(),
            prompt: prompt.clone(),
            texts: Vec::new(),
            image_embeds: Vec::new(),
        };
        for i in 0..prompt.len() {
            out.latents.push(get(format!("{prefix}clip.{i}.latents"))?);
            out.image_embeds.push(get(format!("{prefix}clip.{i}.image_embeds"))?);
            out.end_latents
                .push((0..end_frames.len()).map(|k| get(format!("{prefix}clip.{i}.end.{k}"))).collect::<Result<_>>()?);
        }
        let texts = prompt.iter().copied().max().map_or(0, |m| m + 1);
        for p in 0..texts {
            out.texts.push((get(format!("{prefix}text.{p}.llama"))?, get(format!("{prefix}text.{p}.pooled"))?));
        }
        Ok(out)
    }
}

/// The encoded clips of a run, cached beside it (`dit_clips.safetensors` + `dit_clips.json`, the
/// settings and VAE they were encoded with): encoding is the slow part of starting a run, and a
/// resumed run encodes the same clips again.
struct ClipCache {
    tensors: std::path::PathBuf,
    key_file: std::path::PathBuf,
    key: String,
}

impl ClipCache {
    fn new(dir: &Path, settings: &DitTraining, pipeline: &framepack::Pipeline) -> Result<Self> {
        let vae = pipeline.generator().models().vae.config().to_json();
        let key = serde_json::json!({
            "clips": settings.clips,
            "sizes": settings.sizes,
            "frames": clip_frames(settings),
            "end_frames": end_frames(settings),
            "vae": vae,
        })
        .to_string();
        Ok(Self { tensors: dir.join("dit_clips.safetensors"), key_file: dir.join("dit_clips.json"), key })
    }

    fn load(&self, sizes: usize) -> Option<Vec<ClipLatents>> {
        if std::fs::read_to_string(&self.key_file).ok()? != self.key {
            return None;
        }
        let t = candle_core::safetensors::load(&self.tensors, &Device::Cpu).ok()?;
        (0..sizes).map(|k| ClipLatents::from_tensors(&t, &format!("{k}."))).collect::<Result<_>>().ok()
    }

    fn save(&self, data: &[ClipLatents]) -> Result<()> {
        let mut t = std::collections::HashMap::new();
        for (k, d) in data.iter().enumerate() {
            d.tensors(&format!("{k}."), &mut t)?;
        }
        candle_core::safetensors::save(&t, &self.tensors).map_err(|e| io(&self.tensors, e))?;
        std::fs::write(&self.key_file, &self.key).map_err(|e| io(&self.key_file, e))
    }
}

/// One batch of sections, ready for the transformer.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Clean window latents `(B, C, W, h, w)`.
    pub x0: Tensor,
    /// `(B, n)` RoPE indices of the window.
    pub indices_latents: Tensor,
    /// 1x, 2x and 4x groups: latents `(B, C, n, h, w)` and indices `(B, n)`.
    pub groups: [Option<(Tensor, Tensor)>; 3],
    /// `(B, L, D)` Llama features, zero-padded.
    pub llama: Tensor,
    /// `(B, L)` mask of the valid prefix.
    pub mask: Tensor,
    /// `(B, P)` pooled CLIP features.
    pub pooled: Tensor,
    /// `(B, N, D)` image features.
    pub image_embeds: Tensor,
}

impl Batch {
    /// The batch on `dev`.
    pub fn to_device(&self, dev: &Device) -> Result<Self> {
        let mut groups: [Option<(Tensor, Tensor)>; 3] = [None, None, None];
        for (g, src) in groups.iter_mut().zip(&self.groups) {
            if let Some((l, i)) = src {
                *g = Some((l.to_device(dev)?, i.to_device(dev)?));
            }
        }
        Ok(Self {
            x0: self.x0.to_device(dev)?,
            indices_latents: self.indices_latents.to_device(dev)?,
            groups,
            llama: self.llama.to_device(dev)?,
            mask: self.mask.to_device(dev)?,
            pooled: self.pooled.to_device(dev)?,
            image_embeds: self.image_embeds.to_device(dev)?,
        })
    }

    /// The transformer's inputs for the noisy window `hidden_states` at `timestep`.
    pub fn inputs<'a>(&'a self, hidden_states: &'a Tensor, timestep: &'a Tensor) -> TransformerInputs<'a> {
        let g = |i: usize| self.groups[i].as_ref();
        TransformerInputs {
            image_embeds: Some(&self.image_embeds),
            latents_clean: g(0).map(|g| &g.0),
            indices_latents_clean: g(0).map(|g| &g.1),
            latents_history_2x: g(1).map(|g| &g.0),
            indices_latents_history_2x: g(1).map(|g| &g.1),
            latents_history_4x: g(2).map(|g| &g.0),
            indices_latents_history_4x: g(2).map(|g| &g.1),
            ..TransformerInputs::new(
                hidden_states,
                timestep,
                &self.llama,
                &self.mask,
                &self.pooled,
                &self.indices_latents,
            )
        }
    }
}

/// One drawn training example's layout.
struct Draw {
    schedule: ContextSchedule,
    plan: SectionPlan,
    section: usize,
    /// Whether the end slot holds the last frame's still latent.
    with_end: bool,
}

/// Draws one section: the schedule (geometric or inverted), plan length and section index, each
/// uniformly, and for inverted plans whether the end slot is filled (`end_share`).
fn draw(rng: &mut NoiseRng, settings: &DitTraining) -> Result<Draw> {
    let inverted = rng.next_u64() % 2 == 1;
    let schedule = if inverted { ContextSchedule::inverted_anti_drifting() } else { ContextSchedule::geometric() };
    let sections = 1 + (rng.next_u64() % settings.max_sections as u64) as usize;
    let plan = SectionPlan::new(sections, settings.window, schedule.order)?;
    let section = (rng.next_u64() % sections as u64) as usize;
    // Drawn only for inverted examples of runs with end frames: other runs draw what they always did.
    let with_end = inverted && settings.end_share > 0.0 && rng.uniform() < settings.end_share;
    Ok(Draw { schedule, plan, section, with_end })
}

impl ClipLatents {
    /// The section `section` of `plan` under `schedule` for clip `clip`, batch of one; `with_end`
    /// fills the end slot with the still latent of the plan's last frame (which must be one of
    /// [`Self::end_frames`]).
    pub fn section(
        &self,
        clip: usize,
        schedule: &ContextSchedule,
        plan: &SectionPlan,
        section: usize,
        with_end: bool,
    ) -> Result<Batch> {
        let z = &self.latents[clip];
        let (_, c, t, h, w) = z.dims5()?;
        if plan.total_latents() > t {
            return Err(crate::invalid(
                "training clip",
                format!("a {}-section plan needs {} latents, the clip has {t}", plan.sections, plan.total_latents()),
            ));
        }
        let layout = schedule.layout(plan, section)?;
        let zeros = Tensor::zeros((1, c, 1, h, w), DType::F32, z.device())?;
        let end = if with_end {
            let last_frame = latent_to_frames(plan.total_latents()) - 1;
            let k = self.end_frames.iter().position(|&f| f == last_frame).ok_or_else(|| {
                crate::invalid("end slot", format!("frame {last_frame} was not encoded as an end image"))
            })?;
            self.end_latents[clip][k].clone()
        } else {
            zeros.clone()
        };
        let slot = |s: Slot| -> Result<Tensor> {
            Ok(match s {
                Slot::Start => z.narrow(2, 0, 1)?,
                Slot::Latent(p) => z.narrow(2, p, 1)?,
                Slot::End => end.clone(),
                Slot::Zero => zeros.clone(),
            })
        };
        let mut groups: [Option<(Tensor, Tensor)>; 3] = [None, None, None];
        for g in &layout.groups {
            let i = [Kernel::X1, Kernel::X2, Kernel::X4]
                .iter()
                .position(|k| *k == g.kernel)
                .ok_or_else(|| crate::invalid("schedule", format!("kernel {} is not one of the model's", g.kernel)))?;
            let parts = g.slots.iter().map(|s| slot(*s)).collect::<Result<Vec<_>>>()?;
            let n = g.indices.len();
            groups[i] = Some((Tensor::cat(&parts, 2)?, Tensor::from_vec(g.indices.clone(), (1, n), z.device())?));
        }
        let info = plan.section(section)?;
        let x0 = z.narrow(2, info.latents.start, plan.window)?;
        let n = layout.indices_latents.len();
        let (llama, pooled) = &self.texts[self.prompt[clip]];
        Ok(Batch {
            x0,
            indices_latents: Tensor::from_vec(layout.indices_latents.clone(), (1, n), z.device())?,
            groups,
            llama: llama.clone(),
            mask: Tensor::ones((1, llama.dim(1)?), DType::F32, z.device())?,
            pooled: pooled.clone(),
            image_embeds: self.image_embeds[clip].clone(),
        })
    }

    /// `settings.batch` random sections of random clips (clips of the same group layout stack).
    pub fn batch(&self, rng: &mut NoiseRng, settings: &DitTraining) -> Result<Batch> {
        let mut items = Vec::with_capacity(settings.batch);
        for _ in 0..settings.batch {
            let clip = (rng.next_u64() % self.latents.len() as u64) as usize;
            let d = draw(rng, settings)?;
            items.push(self.section(clip, &d.schedule, &d.plan, d.section, d.with_end)?);
        }
        stack(items)
    }
}

fn stack(items: Vec<Batch>) -> Result<Batch> {
    let cat = |f: &dyn Fn(&Batch) -> Tensor| -> Result<Tensor> {
        Ok(Tensor::cat(&items.iter().map(f).collect::<Vec<_>>(), 0)?)
    };
    let longest = items.iter().map(|b| b.llama.dim(1)).collect::<candle_core::Result<Vec<_>>>()?;
    let longest = longest.into_iter().max().unwrap_or(1);
    let pad = |t: &Tensor, dim: usize| -> Result<Tensor> {
        let have = t.dim(dim)?;
        Ok(if have < longest { t.pad_with_zeros(dim, 0, longest - have)? } else { t.clone() })
    };
    let llama = items.iter().map(|b| pad(&b.llama, 1)).collect::<Result<Vec<_>>>()?;
    let mask = items.iter().map(|b| pad(&b.mask, 1)).collect::<Result<Vec<_>>>()?;
    let mut groups: [Option<(Tensor, Tensor)>; 3] = [None, None, None];
    for (i, g) in groups.iter_mut().enumerate() {
        if items[0].groups[i].is_some() {
            let parts = items
                .iter()
                .map(|b| b.groups[i].clone().ok_or_else(|| crate::invalid("batch", "schedules with different groups")))
                .collect::<Result<Vec<_>>>()?;
            let lat = parts.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
            let idx = parts.iter().map(|p| p.1.clone()).collect::<Vec<_>>();
            *g = Some((Tensor::cat(&lat, 0)?, Tensor::cat(&idx, 0)?));
        }
    }
    Ok(Batch {
        x0: cat(&|b| b.x0.clone())?,
        indices_latents: cat(&|b| b.indices_latents.clone())?,
        groups,
        llama: Tensor::cat(&llama, 0)?,
        mask: Tensor::cat(&mask, 0)?,
        pooled: cat(&|b| b.pooled.clone())?,
        image_embeds: cat(&|b| b.image_embeds.clone())?,
    })
}

/// Flow-matching loss of `model` on `batch` at noise levels `sigmas` (one per sample) with
/// noise `eps` (shaped like the window).
pub fn flow_loss(model: &Transformer, batch: &Batch, sigmas: &[f64], eps: &Tensor) -> Result<Tensor> {
    let dev = batch.x0.device();
    let b = sigmas.len();
    let s = Tensor::from_vec(sigmas.iter().map(|&s| s as f32).collect::<Vec<_>>(), (b, 1, 1, 1, 1), dev)?;
    let xt = (batch.x0.broadcast_mul(&(1.0 - &s)?)? + eps.broadcast_mul(&s)?)?;
    let timestep = Tensor::from_vec(sigmas.iter().map(|&s| model_timestep(s)).collect::<Vec<_>>(), b, dev)?;
    let v = model.forward(&batch.inputs(&xt, &timestep))?;
    let target = (eps - &batch.x0)?;
    Ok((v - target)?.sqr()?.mean_all()?)
}

/// `σ = sigmoid(n)`, `n ~ N(0, 1)` (logit-normal), one per sample.
pub fn draw_sigmas(rng: &mut NoiseRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| 1.0 / (1.0 + (-rng.normal()).exp())).collect()
}

/// Frames of a training clip: `1 + max_sections·W` latents.
pub fn clip_frames(settings: &DitTraining) -> usize {
    latent_to_frames(1 + settings.max_sections * settings.window)
}

/// The last frame of each plan length's video (`1..=max_sections` sections), which the end slot
/// is filled from when `end_share > 0`.
pub fn end_frames(settings: &DitTraining) -> Vec<usize> {
    if settings.end_share == 0.0 {
        return Vec::new();
    }
    (1..=settings.max_sections).map(|n| latent_to_frames(1 + n * settings.window) - 1).collect()
}

/// Trains (or resumes) the nano transformer in `dir` on `dev` (the CPU, or a GPU in a build with
/// candle's backend), reading the VAE and encoders from the bundle `pipeline` was loaded from
/// (the clips are encoded there); `on_encode` sees `(clips encoded, clips)`, `on_step` every
/// step's loss. Returns the step reached.
pub fn train_dit(
    dir: &Path,
    pipeline: &mut framepack::Pipeline,
    settings: &DitTraining,
    dev: &Device,
    mut on_encode: impl FnMut(usize, usize),
    mut on_step: impl FnMut(&DitStepLoss),
) -> Result<usize> {
    settings.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = RunFiles::dit(dir);
    let cfg = nano_transformer_config();
    let mut map = VarMap::new();
    let shapes = framepack::weights::requested_shapes(|vb| Transformer::new(vb, &cfg))?;
    // The output projection starts at zero, so the first prediction is a zero velocity.
    init_weights(&map, shapes, settings.seed, |name| name.starts_with("proj_out."))?;
    let start = files.resume(&mut map)?;
    if start == 0
        && let Some(init) = &settings.init
    {
        let weights = candle_core::safetensors::load(init, &Device::Cpu).map_err(|e| io(init, e))?;
        let data = map.data().lock().expect("not poisoned");
        for (name, var) in data.iter() {
            let w = weights
                .get(name)
                .ok_or_else(|| crate::invalid("init weights", format!("{}: no tensor {name}", init.display())))?;
            if w.dims() != var.dims() {
                return Err(crate::invalid(
                    "init weights",
                    format!("{}: {name} is {:?}, the model needs {:?}", init.display(), w.dims(), var.dims()),
                ));
            }
            var.set(&w.to_dtype(DType::F32)?)?;
        }
    }
    if start >= settings.steps {
        return Ok(start);
    }
    move_vars(&map, dev)?;
    let model = Transformer::new(VarBuilder::from_varmap(&map, DType::F32, dev), &cfg)?;
    let params = ParamsAdamW { lr: settings.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(map.all_vars(), params)?;
    let seeds: Vec<u64> = clips::training_seeds(settings.clips).collect();
    let per_size = seeds.len() / settings.sizes.len();
    let cache = ClipCache::new(dir, settings, pipeline)?;
    let data = match cache.load(settings.sizes.len()) {
        Some(d) => {
            on_encode(seeds.len(), seeds.len());
            d
        }
        None => {
            let mut data = Vec::with_capacity(settings.sizes.len());
            for (k, &[width, height]) in settings.sizes.iter().enumerate() {
                let cfg = ClipConfig { width, height, frames: clip_frames(settings), fps: 30.0 };
                let chunk = &seeds[k * per_size..(k + 1) * per_size];
                let ends = end_frames(settings);
                let on = |i| on_encode(k * per_size + i, seeds.len());
                data.push(ClipLatents::encode(pipeline, chunk, &cfg, &ends, on)?);
            }
            cache.save(&data)?;
            data
        }
    };

    let mut log = files.open_log("step,loss,seconds", start)?;
    let save = |step: usize| files.save(&map, &State { step, settings: settings.clone() });
    for step in start + 1..=settings.steps {
        let t0 = Instant::now();
        let mut rng = NoiseRng::new(settings.seed ^ 0xd17 ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let data = &data[step % data.len()];
        let batch = data.batch(&mut rng, settings)?.to_device(dev)?;
        let sigmas = draw_sigmas(&mut rng, settings.batch);
        let eps = rng.normal_tensor(batch.x0.dims(), dev)?;
        let loss = flow_loss(&model, &batch, &sigmas, &eps)?;
        opt.backward_step(&loss)?;
        let entry = DitStepLoss { step, loss: loss.to_scalar()?, seconds: t0.elapsed().as_secs_f64() };
        if !entry.loss.is_finite() {
            return Err(crate::invalid("training", format!("the loss diverged at step {step}: {entry:?}")));
        }
        writeln!(log, "{},{},{:.3}", entry.step, entry.loss, entry.seconds).map_err(|e| io(&files.log, e))?;
        on_step(&entry);
        if step % settings.checkpoint_every.max(1) == 0 || step == settings.steps {
            save(step)?;
        }
    }
    Ok(settings.steps.max(start))
}

/// Latent standard deviation of the VAE over `clips` training clips of `frames` frames (what
/// the bundle's `scaling_factor` is set from, so latents reach the transformer at unit scale;
/// the VAE's own scaling applies, so measure with scaling 1).
pub fn latent_std(vae: &Autoencoder, clips_n: usize, frames: usize, size: [usize; 2]) -> Result<f64> {
    let cfg = ClipConfig { width: size[0], height: size[1], frames, fps: 30.0 };
    let mut sum = 0f64;
    let mut sq = 0f64;
    let mut n = 0f64;
    for seed in clips::training_seeds(clips_n) {
        let z = vae.encode(&clips::clip(seed, &cfg)?.to_tensor(&Device::Cpu)?, None)?.flatten_all()?;
        let v = z.to_vec1::<f32>()?;
        n += v.len() as f64;
        sum += v.iter().map(|&x| x as f64).sum::<f64>();
        sq += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    }
    let mean = sum / n.max(1.0);
    Ok((sq / n.max(1.0) - mean * mean).max(1e-12).sqrt())
}
