//! Plugin settings: where the model comes from and where it runs.

use std::path::PathBuf;

use bevy::prelude::*;
use candle_core::DType;
use framepack::bundle::DeviceChoice;
use framepack::models::transformer::Residency;

/// The number format of the weights and activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Reflect)]
pub enum Precision {
    /// f32 on the CPU (which has no fast bf16 matrix product), bf16 on a GPU: what the
    /// `framepack` CLI picks.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// 16-bit floats (IEEE half).
    F16,
    /// bfloat16 (GPU only: the CPU VAE refuses it).
    Bf16,
}

impl Precision {
    /// The dtype on `device`.
    pub(crate) fn dtype(self, device: DeviceChoice) -> DType {
        match (self, device) {
            (Self::Auto, DeviceChoice::Cpu) | (Self::F32, _) => DType::F32,
            (Self::Auto, _) | (Self::Bf16, _) => DType::BF16,
            (Self::F16, _) => DType::F16,
        }
    }
}

/// Where the worker loads its models from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Reflect)]
pub enum ModelSource {
    /// The embedded nano model (9.5 MB, f16): a small FramePack transformer with a TAEHV as its
    /// VAE, trained on procedural 128 × 96 and 128 × 128 game clips (see
    /// `assets/nano/MODEL_CARD.md`), compiled into the plugin and loaded from memory when the
    /// worker starts. It continues a frame of a simple 2-D scene with learned motion on the CPU
    /// (use resolution 120 for a 4:3 capture, as `presets/nano.preset.ron` does); it knows nothing
    /// of other scenes.
    #[default]
    Nano,
    /// A FramePack model bundle in the released layout (see `framepack::bundle::BundlePaths`).
    Directory(PathBuf),
    /// `framepack worker`s behind a NATS JetStream server (the `remote` feature): jobs are
    /// queued there, run on whichever worker is free (a GPU host), and their frames stream back
    /// as they are decoded. Nothing runs on this machine; the device, precision, thread and
    /// low-VRAM settings are the workers'. An unreachable server fails the job with
    /// [`GenerationError::Remote`](crate::GenerationError::Remote); the game keeps running.
    #[cfg(feature = "remote")]
    Remote(#[reflect(ignore)] framepack_remote::RemoteOptions),
}

/// The plugin's settings. Insert it before or after adding [`FramePackPlugin`](crate::FramePackPlugin)
/// (the plugin only inserts the default when it is absent); it is read when the worker thread
/// starts, at the first generation request.
#[derive(Resource, Clone, Debug, PartialEq, Reflect)]
#[reflect(Resource, Default, Debug, PartialEq)]
pub struct FramePackSettings {
    /// The model bundle.
    pub model: ModelSource,
    /// The device inference runs on (CUDA and Metal need `framepack`'s `cuda`/`metal` features).
    #[reflect(ignore)]
    pub device: DeviceChoice,
    /// The weights' and activations' number format.
    pub precision: Precision,
    /// Low-VRAM mode: device memory in bytes the transformer's weights may occupy; its blocks
    /// then stream from the memory-mapped checkpoint (`framepack::models::transformer::Residency`).
    /// `None` keeps every weight on the device.
    pub low_vram_budget: Option<u64>,
    /// How many response messages (sections, progress, …) may wait for the game before the
    /// worker stops and waits (back-pressure). At least 1.
    pub response_capacity: usize,
    /// Threads of the worker's dedicated inference pool (`None`: one per CPU core). Fewer
    /// threads leave cores to the game's own systems.
    pub threads: Option<usize>,
    /// Decode each section on a second pool of as many threads while the next section samples
    /// (CPU, at least 2 threads; `framepack::JobSettings::pipeline`). The nano model's sections
    /// then take 0.79 instead of 1.10 s on 2 cores. The worker may keep up to twice
    /// [`Self::threads`] busy; turn it off to hold it to that many.
    pub pipeline: bool,
    /// Run the worker and its pool at a lower OS priority (nice 10 on Linux) than the game, so
    /// the game's frames come first on a busy CPU. Where the game also renders on the CPU
    /// (software rendering on 2 cores) this made the median frame time while generating 35–39
    /// instead of 46 ms but the job 2.5–3× slower; turn it off when generation speed matters more.
    pub low_priority: bool,
    /// A folder of generated clips: a request whose clip is there (same model, start and end
    /// image, prompt and settings) plays it without generating, and every completed job is
    /// saved there as `<key>.cutscene`.
    pub cache: Option<PathBuf>,
    /// Most bytes of clips the cache folder keeps: after each save the least recently written
    /// clips are deleted until the folder fits (the new clip is always kept).
    pub cache_limit_bytes: u64,
}

impl Default for FramePackSettings {
    fn default() -> Self {
        Self {
            model: ModelSource::Nano,
            device: DeviceChoice::Cpu,
            precision: Precision::Auto,
            low_vram_budget: None,
            response_capacity: 8,
            threads: None,
            pipeline: true,
            low_priority: true,
            cache: None,
            cache_limit_bytes: 256 << 20,
        }
    }
}

impl FramePackSettings {
    /// Settings for a model bundle directory.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { model: ModelSource::Directory(dir.into()), ..default() }
    }
    /// Settings for the workers behind the NATS server at `url` (e.g. `nats://127.0.0.1:4222`),
    /// with no credentials; use [`ModelSource::Remote`] for credentials, TLS and timeouts.
    #[cfg(feature = "remote")]
    pub fn remote(url: impl Into<String>) -> Self {
        Self { model: ModelSource::Remote(framepack_remote::RemoteOptions::new(url)), ..default() }
    }
    /// Sets the model source.
    pub fn with_model(mut self, model: ModelSource) -> Self {
        self.model = model;
        self
    }
    /// Sets the device.
    pub fn with_device(mut self, device: DeviceChoice) -> Self {
        self.device = device;
        self
    }
    /// Sets the precision.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// The dtype the worker loads the models in.
    pub(crate) fn dtype(&self) -> DType {
        self.precision.dtype(self.device)
    }
    /// Streams the transformer's blocks within `bytes` of device memory for weights.
    pub fn with_low_vram_budget(mut self, bytes: u64) -> Self {
        self.low_vram_budget = Some(bytes);
        self
    }
    /// The transformer placement these settings ask for.
    pub fn residency(&self) -> Residency {
        match self.low_vram_budget {
            Some(budget_bytes) => Residency::Streamed { budget_bytes },
            None => Residency::Resident,
        }
    }
    /// Uses `threads` inference threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }
    /// Turns decoding on a second pool while the next section samples on or off.
    pub fn with_pipeline(mut self, pipeline: bool) -> Self {
        self.pipeline = pipeline;
        self
    }
    /// Caches generated clips in `dir`.
    pub fn with_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }
    /// Whether the settings the worker reads when it starts are the same (the cache fields are
    /// read by the game and apply at once).
    pub(crate) fn same_worker(&self, other: &Self) -> bool {
        Self { cache: None, cache_limit_bytes: 0, ..self.clone() }
            == Self { cache: None, cache_limit_bytes: 0, ..other.clone() }
    }
    /// Sets the response channel capacity.
    pub fn with_response_capacity(mut self, capacity: usize) -> Self {
        self.response_capacity = capacity;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cache_may_change_after_the_worker_started() {
        let a = FramePackSettings::default();
        assert!(a.same_worker(&a.clone().with_cache("clips")));
        assert!(!a.same_worker(&a.clone().with_threads(1)));
        assert!(!a.same_worker(&FramePackSettings::from_dir("bundle")));
    }
}
