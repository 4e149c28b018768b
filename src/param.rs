//! The worker as the game sees it: the [`FramePackWorker`] resource and the [`FramePack`]
//! system parameter that queues and cancels jobs.

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;

use crate::messages::JobId;
use crate::request::{FramePackError, GenerationRequest, JobTicket};
use crate::settings::FramePackSettings;
use crate::worker::{Command, Response, WorkerThread};

/// The worker handle (a resource). The thread starts at the first generation request, with
/// the [`FramePackSettings`] of that moment, and stops on `AppExit` or when the resource is
/// dropped.
#[derive(Resource, Default)]
pub struct FramePackWorker {
    thread: Option<WorkerThread>,
    next_id: u64,
    shut_down: bool,
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
/// fn start(mut framepack: FramePack, mut images: ResMut<Assets<Image>>, mut commands: Commands) {
///     let image = RgbaImage::new(2, 2, vec![255; 16]).expect("2·2·4 bytes");
///     match framepack.generate(GenerationRequest::new(image, "a cat walks")) {
///         Ok(ticket) => {
///             let player = CutscenePlayer::new(&ticket, 30.0, BufferPolicy::Pause, &mut images);
///             commands.spawn((Sprite::default(), player));
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
}

impl FramePack<'_> {
    /// Validates the request and queues it; the worker runs jobs one after another. Returns
    /// the job's id and frame geometry at once (never blocks on inference).
    pub fn generate(&mut self, request: GenerationRequest) -> Result<JobTicket, FramePackError> {
        let request = request.to_core()?;
        let plan = request.plan().map_err(|e| FramePackError::InvalidRequest(e.to_string()))?;
        let worker = &mut *self.worker;
        if worker.shut_down {
            return Err(FramePackError::WorkerUnavailable("the worker has shut down".into()));
        }
        if worker.thread.is_none() {
            let t = WorkerThread::spawn((*self.settings).clone())
                .map_err(|e| FramePackError::WorkerUnavailable(format!("cannot start the thread: {e}")))?;
            worker.thread = Some(t);
        }
        let id = JobId(worker.next_id);
        worker.next_id += 1;
        let thread = worker.thread.as_ref().expect("started above");
        let ticket = JobTicket {
            id,
            width: plan.width as u32,
            height: plan.height as u32,
            total_frames: plan.total_frames(),
            sections: plan.sections.sections,
        };
        thread
            .tx
            .send(Command::Generate { id, request: Box::new(request), plan: Box::new(plan) })
            .map_err(|_| FramePackError::WorkerUnavailable("the worker thread has stopped".into()))?;
        Ok(ticket)
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
