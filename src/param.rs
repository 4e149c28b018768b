//! The worker as the game sees it: the [`FramePackWorker`] resource and the [`FramePack`]
//! system parameter that queues and cancels jobs.

use bevy::ecs::system::SystemParam;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;

use std::path::PathBuf;

use framepack::pipeline::{Request, RequestPlan};

use crate::cache::{self, PendingLoad};
use crate::clip::{ClipStatus, CutsceneClip};
use crate::messages::{GenerationError, JobId};
use crate::request::{FramePackError, GenerationRequest, JobTicket};
use crate::settings::FramePackSettings;
use crate::worker::{Command, Response, WorkerThread};

/// Whether the model is ready (a resource): a loading screen can wait for `Ready` after
/// [`FramePack::preload`], so the first cutscene does not pay for the load.
#[derive(Resource, Clone, Debug, Default, PartialEq, Eq, Reflect)]
#[reflect(Resource, Debug, Default)]
pub enum FramePackStatus {
    /// Nothing loaded yet (or the worker has shut down).
    #[default]
    Unloaded,
    /// The worker is loading the model.
    Loading,
    /// The model is loaded.
    Ready,
    /// The model failed to load; the next preload or job tries again.
    Failed(GenerationError),
}

/// The worker handle (a resource). The thread starts at the first generation request or
/// [`FramePack::preload`], with the [`FramePackSettings`] of that moment, and stops on `AppExit`
/// or when the resource is dropped. Settings the worker reads (model, device, precision, memory
/// budget, threads, priority, channel capacity) changed after that are not applied: the plugin
/// logs a warning and the worker keeps [`FramePackWorker::settings`]. The cache settings apply
/// at once.
#[derive(Resource, Default)]
pub struct FramePackWorker {
    thread: Option<WorkerThread>,
    settings: Option<FramePackSettings>,
    next_id: u64,
    shut_down: bool,
    /// The clip of every job that has not ended.
    pub(crate) clips: HashMap<JobId, Handle<CutsceneClip>>,
    /// Cached clips being read.
    pub(crate) cache_loads: Vec<PendingLoad>,
    /// Where each job's clip goes in the cache when it completes.
    pub(crate) cache_saves: HashMap<JobId, PathBuf>,
}

impl FramePackWorker {
    /// Whether the worker thread is running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.join.as_ref().is_some_and(|j| !j.is_finished()))
    }

    /// Cancels the running job and stops the thread, waiting for it (one sampler step at most).
    /// Later requests are refused.
    pub fn shutdown(&mut self) {
        self.shut_down = true;
        if let Some(mut t) = self.thread.take() {
            t.shutdown();
        }
    }

    /// The settings the running worker started with.
    pub fn settings(&self) -> Option<&FramePackSettings> {
        self.settings.as_ref().filter(|_| self.thread.is_some())
    }

    fn start(&mut self, settings: &FramePackSettings) -> Result<&WorkerThread, FramePackError> {
        if self.shut_down {
            return Err(FramePackError::WorkerUnavailable("the worker has shut down".into()));
        }
        if self.thread.is_none() {
            let t = WorkerThread::spawn(settings.clone())
                .map_err(|e| FramePackError::WorkerUnavailable(format!("cannot start the thread: {e}")))?;
            self.thread = Some(t);
            self.settings = Some(settings.clone());
        }
        Ok(self.thread.as_ref().unwrap_or_else(|| unreachable!("started above")))
    }

    /// Sends a planned job to the worker (starting it) and makes its clip.
    pub(crate) fn enqueue(
        &mut self,
        settings: &FramePackSettings,
        clips: &mut Assets<CutsceneClip>,
        id: JobId,
        clip: Handle<CutsceneClip>,
        request: Box<Request>,
        plan: Box<RequestPlan>,
    ) -> Result<(), FramePackError> {
        let size = (plan.width as u32, plan.height as u32);
        let total_frames = plan.total_frames();
        let sent = self.start(settings).and_then(|thread| {
            thread
                .tx
                .send(Command::Generate { id, request, plan })
                .map_err(|_| FramePackError::WorkerUnavailable("the worker thread has stopped".into()))
        });
        let mut generating = CutsceneClip::generating(id, size, total_frames);
        if let Err(e) = &sent {
            generating.end(ClipStatus::Failed(GenerationError::ModelLoad(e.to_string())));
        } else {
            self.clips.insert(id, clip.clone());
        }
        let _ = clips.insert(&clip, generating);
        sent
    }

    pub(crate) fn drain(&self) -> impl Iterator<Item = Response> + '_ {
        self.thread.iter().flat_map(|t| t.rx.try_iter())
    }
}

/// Starts and cancels generation jobs from a system:
///
/// ```
/// use bevy::prelude::*;
/// use bevy_framepack::prelude::*;
///
/// fn start(mut framepack: FramePack, mut commands: Commands) {
///     let image = RgbaImage::new(2, 2, vec![255; 16]).expect("2·2·4 bytes");
///     match framepack.generate(GenerationRequest::new(image, "a cat walks")) {
///         Ok(ticket) => {
///             commands.spawn((Sprite::default(), CutscenePlayer::new(ticket.clip), CutscenePlayback::ONCE));
///         }
///         Err(e) => error!("{e}"),
///     }
/// }
/// # App::new().add_systems(Update, start);
/// ```
#[derive(SystemParam)]
pub struct FramePack<'w> {
    worker: ResMut<'w, FramePackWorker>,
    settings: Res<'w, FramePackSettings>,
    clips: ResMut<'w, Assets<CutsceneClip>>,
    status: ResMut<'w, FramePackStatus>,
}

impl FramePack<'_> {
    /// Validates the request and queues it; the worker runs jobs one after another. Returns
    /// the job's id and frame geometry at once (never blocks on inference).
    pub fn generate(&mut self, request: GenerationRequest) -> Result<JobTicket, FramePackError> {
        let request = Box::new(request.to_core()?);
        let plan = Box::new(request.plan().map_err(|e| FramePackError::InvalidRequest(e.to_string()))?);
        if self.worker.shut_down {
            return Err(FramePackError::WorkerUnavailable("the worker has shut down".into()));
        }
        let id = JobId(self.worker.next_id);
        self.worker.next_id += 1;
        let clip = self.clips.reserve_handle();
        let ticket = JobTicket {
            id,
            clip: clip.clone(),
            width: plan.width as u32,
            height: plan.height as u32,
            total_frames: plan.total_frames(),
            sections: plan.sections.sections,
        };
        if let Some(dir) = &self.settings.cache {
            let path = cache::path(dir, cache::key(&self.settings, &request));
            if path.is_file() {
                let task = cache::read(path.clone());
                self.worker.cache_loads.push(PendingLoad { job: id, clip, path, task, request, plan });
                return Ok(ticket);
            }
            self.worker.cache_saves.insert(id, path);
        }
        self.worker.enqueue(&self.settings, &mut self.clips, id, clip, request, plan)?;
        self.loading();
        Ok(ticket)
    }

    /// Starts the worker and loads the model now; [`FramePackStatus`] turns `Ready` (or
    /// `Failed`) when done. Does nothing more when the model is loaded or loading.
    pub fn preload(&mut self) -> Result<(), FramePackError> {
        if matches!(*self.status, FramePackStatus::Ready | FramePackStatus::Loading) && self.worker.thread.is_some() {
            return Ok(());
        }
        let thread = self.worker.start(&self.settings)?;
        thread
            .tx
            .send(Command::Preload)
            .map_err(|_| FramePackError::WorkerUnavailable("the worker thread has stopped".into()))?;
        self.loading();
        Ok(())
    }

    /// Whether the model is loaded.
    pub fn status(&self) -> &FramePackStatus {
        &self.status
    }

    fn loading(&mut self) {
        if matches!(*self.status, FramePackStatus::Unloaded | FramePackStatus::Failed(_)) {
            *self.status = FramePackStatus::Loading;
        }
    }

    /// Cancels a queued or running job; a [`GenerationEvent::Cancelled`] message follows
    /// (unless the job had already ended).
    pub fn cancel(&mut self, job: JobId) {
        if let Some(t) = &self.worker.thread {
            t.cancel(job);
        }
    }

    /// Whether the worker thread is running.
    pub fn is_running(&self) -> bool {
        self.worker.is_running()
    }
}
