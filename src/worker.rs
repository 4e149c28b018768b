//! The inference worker: one dedicated thread that owns the models, fed by crossbeam channels.
//!
//! The game sends jobs over an unbounded channel (the job queue) and drains a *bounded*
//! response channel once per frame without ever blocking; when the game falls behind, the
//! worker waits before sending the next section (back-pressure), and drops progress updates
//! rather than queueing them. Cancelling flips the running job's [`CancelToken`] (checked
//! after every sampler step) or marks a queued job to be skipped. Shutdown (on `AppExit`, or
//! when the resource is dropped) cancels the running job and joins the thread. A panic or an
//! error inside inference becomes a [`GenerationEvent::Failed`] message.
//!
//! The thread knows nothing of the ECS: it sends [`Response`]s, and only the plugin's receive
//! system turns them into messages and player frames. Frames travel as `Arc<[u8]>`, shared by
//! every player of the job.

use std::collections::HashSet;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use framepack::CancelToken;
use framepack::bundle::BundlePaths;
use framepack::pipeline::{Pipeline, Request, RequestPlan};

use crate::clip::rgba_from_rgb;
use crate::messages::{GenerationError, JobId};
use crate::settings::{FramePackSettings, ModelSource};

pub(crate) enum Command {
    Generate {
        id: JobId,
        request: Box<Request>,
        plan: Box<RequestPlan>,
    },
    /// Load the models now, so the first job does not pay for it.
    Preload,
    /// Cancel a job (remote workers; the local worker is cancelled through its token).
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Cancel(JobId),
    Shutdown,
}

/// What the worker thread reports (frames are RGBA8 of the job's size).
pub(crate) enum Response {
    Started {
        job: JobId,
        sections: usize,
        total_frames: usize,
        width: u32,
        height: u32,
    },
    Progress {
        job: JobId,
        section: usize,
        sections: usize,
        step: usize,
        steps: usize,
        fraction: f32,
        eta: Duration,
    },
    /// A section is done (its frames came before it as `Frame`s).
    Section {
        job: JobId,
        index: usize,
        sections: usize,
        range: Range<usize>,
    },
    /// A final frame, sent as soon as it is decoded.
    Frame {
        job: JobId,
        index: usize,
        frame: Arc<[u8]>,
    },
    /// The first frame of the tiny decoder's estimate of the section being sampled.
    Preview {
        job: JobId,
        frame: Arc<[u8]>,
    },
    Ended {
        job: JobId,
        end: JobEnd,
    },
    /// The models were loaded, or failed to load.
    Model(Result<(), GenerationError>),
}

impl Response {
    pub(crate) fn job(&self) -> Option<JobId> {
        match self {
            Self::Started { job, .. }
            | Self::Progress { job, .. }
            | Self::Section { job, .. }
            | Self::Frame { job, .. }
            | Self::Preview { job, .. }
            | Self::Ended { job, .. } => Some(*job),
            Self::Model(_) => None,
        }
    }
}

#[derive(Default)]
struct Shared {
    current: Option<(JobId, CancelToken)>,
    cancelled: HashSet<JobId>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lowers the calling thread's scheduling priority (nice 10) when `low`; Linux only, where the
/// nice value is per thread.
fn lower_priority(low: bool) {
    #[cfg(target_os = "linux")]
    if low {
        // SAFETY: plain syscalls on the calling thread's id; a failure leaves the priority as is.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = low;
}

pub(crate) struct WorkerThread {
    pub(crate) tx: Sender<Command>,
    pub(crate) rx: Receiver<Response>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    pub(crate) join: Option<JoinHandle<()>>,
    /// Jobs run on remote workers: cancels go over the command channel.
    remote: bool,
}

impl WorkerThread {
    pub(crate) fn spawn(settings: FramePackSettings) -> std::io::Result<Self> {
        let (tx, cmd_rx) = crossbeam_channel::unbounded();
        let (resp_tx, rx) = crossbeam_channel::bounded(settings.response_capacity.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let out = Out { tx: resp_tx, stop: stop.clone() };
        #[cfg(feature = "remote")]
        if let ModelSource::Remote(opts) = &settings.model {
            let opts = opts.clone();
            let join = std::thread::Builder::new()
                .name("framepack-remote".into())
                .spawn(move || crate::remote::remote_main(opts, cmd_rx, out))?;
            return Ok(Self { tx, rx, shared, stop, join: Some(join), remote: true });
        }
        let sh = shared.clone();
        let threads = settings.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let low = settings.low_priority;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("framepack-inference-{i}"))
            .start_handler(move |_| lower_priority(low))
            .build()
            .map_err(std::io::Error::other)?;
        let join = std::thread::Builder::new().name("framepack-worker".into()).spawn(move || {
            lower_priority(low);
            // Every tensor op of the job runs on the dedicated pool, not on rayon's global one.
            pool.install(|| worker_main(settings, cmd_rx, out, sh))
        })?;
        Ok(Self { tx, rx, shared, stop, join: Some(join), remote: false })
    }

    pub(crate) fn cancel(&self, id: JobId) {
        if self.remote {
            let _ = self.tx.send(Command::Cancel(id));
            return;
        }
        let mut s = lock(&self.shared);
        match &s.current {
            Some((cur, token)) if *cur == id => token.cancel(),
            _ => {
                s.cancelled.insert(id);
            }
        }
    }

    pub(crate) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some((_, token)) = &lock(&self.shared).current {
            token.cancel();
        }
        let _ = self.tx.send(Command::Shutdown);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The worker's sending side: blocks while the bounded channel is full, but gives up as soon
/// as shutdown is requested or the game side is gone.
#[derive(Clone)]
pub(crate) struct Out {
    tx: Sender<Response>,
    stop: Arc<AtomicBool>,
}

impl Out {
    pub(crate) fn send(&self, mut r: Response) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            match self.tx.send_timeout(r, Duration::from_millis(20)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => r = back,
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }
    pub(crate) fn try_send(&self, r: Response) {
        match self.tx.try_send(r) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
    /// `send` for the async remote thread: waits without blocking it.
    #[cfg(feature = "remote")]
    pub(crate) async fn send_async(&self, mut r: Response) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            match self.tx.try_send(r) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    r = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }
}

/// How a job ended.
#[derive(Debug, PartialEq)]
pub(crate) enum JobEnd {
    Done,
    Cancelled,
    Failed(GenerationError),
    GameGone,
}

fn load_pipeline(settings: &FramePackSettings) -> Result<Pipeline, GenerationError> {
    let paths = match &settings.model {
        ModelSource::Directory(dir) => BundlePaths::from_dir(dir),
        ModelSource::Nano => framepack_nano::bundle(),
        #[cfg(feature = "remote")]
        ModelSource::Remote(_) => return Err(GenerationError::ModelLoad("remote models load on the workers".into())),
    };
    let device = settings.device.open().map_err(|e| GenerationError::ModelLoad(e.to_string()))?;
    Pipeline::load_with(&paths, &device, settings.dtype(), settings.residency())
        .map_err(|e| GenerationError::ModelLoad(e.to_string()))
}

/// Runs one job, turning a panic into a failure; `true` when it panicked.
fn guarded(job: impl FnOnce() -> JobEnd) -> (JobEnd, bool) {
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(end) => (end, false),
        Err(panic) => {
            (JobEnd::Failed(GenerationError::Panicked(framepack::error::panic_message(panic.as_ref()))), true)
        }
    }
}

fn worker_main(settings: FramePackSettings, rx: Receiver<Command>, out: Out, shared: Arc<Mutex<Shared>>) {
    let mut pipeline: Option<Pipeline> = None;
    while let Ok(cmd) = rx.recv() {
        let (id, request, plan) = match cmd {
            Command::Shutdown => break,
            Command::Cancel(_) => continue,
            Command::Preload => {
                // A failure is reported as `Response::Model`; the next job tries again.
                let _ = ensure_loaded(&settings, &mut pipeline, &out);
                continue;
            }
            Command::Generate { id, request, plan } => (id, request, plan),
        };
        if out.stop.load(Ordering::SeqCst) {
            break;
        }
        let token = CancelToken::new();
        {
            let mut s = lock(&shared);
            if s.cancelled.remove(&id) {
                drop(s);
                if !out.send(Response::Ended { job: id, end: JobEnd::Cancelled }) {
                    break;
                }
                continue;
            }
            s.current = Some((id, token.clone()));
        }
        let (end, panicked) = guarded(|| run_job(&settings, &mut pipeline, id, (&request, &plan), &token, &out));
        {
            let mut s = lock(&shared);
            s.current = None;
            s.cancelled.remove(&id);
        }
        if panicked {
            // The models may be in any state after a panic: load them again next time.
            pipeline = None;
        }
        if end == JobEnd::GameGone {
            break;
        }
        if !out.send(Response::Ended { job: id, end }) {
            break;
        }
    }
    drop(pipeline);
}

/// The loaded pipeline, loading it first (and reporting the outcome) when there is none.
fn ensure_loaded<'p>(
    settings: &FramePackSettings,
    pipeline: &'p mut Option<Pipeline>,
    out: &Out,
) -> Result<&'p mut Pipeline, GenerationError> {
    if pipeline.is_none() {
        let loaded = load_pipeline(settings);
        let _ = out.send(Response::Model(loaded.as_ref().map(|_| ()).map_err(Clone::clone)));
        *pipeline = Some(loaded?);
    }
    Ok(pipeline.as_mut().unwrap_or_else(|| unreachable!("loaded above")))
}

fn run_job(
    settings: &FramePackSettings,
    pipeline: &mut Option<Pipeline>,
    id: JobId,
    (request, plan): (&Request, &RequestPlan),
    token: &CancelToken,
    out: &Out,
) -> JobEnd {
    let failed = |e: framepack::Error| {
        if token.is_cancelled() || matches!(e, framepack::Error::Cancelled) {
            JobEnd::Cancelled
        } else {
            JobEnd::Failed(GenerationError::from_core(&e))
        }
    };
    let p = match ensure_loaded(settings, pipeline, out) {
        Ok(p) => p,
        Err(e) => return JobEnd::Failed(e),
    };
    if token.is_cancelled() {
        return JobEnd::Cancelled;
    }
    let serial;
    let request = if settings.pipeline {
        request
    } else {
        serial = Request {
            settings: framepack::JobSettings { pipeline: false, ..request.settings.clone() },
            ..request.clone()
        };
        &serial
    };
    let job = match p.start_planned(request, plan) {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    let progress_out = out.clone();
    let job = job.with_cancel_token(token.clone()).on_progress(move |p| {
        if let Some(f) = p.preview.first() {
            progress_out.try_send(Response::Preview { job: id, frame: rgba_from_rgb(&f.rgb) });
        }
        progress_out.try_send(Response::Progress {
            job: id,
            section: p.section,
            sections: p.sections,
            step: p.step,
            steps: p.total_steps,
            fraction: p.fraction() as f32,
            eta: p.eta,
        })
    });
    let frame_out = out.clone();
    let frame_token = token.clone();
    let job = job.on_frame(move |index, f| {
        if !frame_out.send(Response::Frame { job: id, index, frame: rgba_from_rgb(&f.rgb) }) {
            // The game is gone: stop at the next check.
            frame_token.cancel();
        }
    });
    let (width, height) = job.frame_size();
    let started = Response::Started {
        job: id,
        sections: job.plan().sections,
        total_frames: job.total_frames(),
        width: width as u32,
        height: height as u32,
    };
    if !out.send(started) {
        return JobEnd::GameGone;
    }
    for section in job {
        let s = match section {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let section = Response::Section { job: id, index: s.index, sections: s.sections, range: s.frame_range.clone() };
        if !out.send(section) {
            return JobEnd::GameGone;
        }
    }
    if out.stop.load(Ordering::SeqCst) {
        JobEnd::GameGone
    } else if token.is_cancelled() {
        JobEnd::Cancelled
    } else {
        JobEnd::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_becomes_a_failure_with_its_message() {
        assert_eq!(guarded(|| JobEnd::Done), (JobEnd::Done, false));
        let (end, panicked) = guarded(|| panic!("index out of bounds: the len is 3"));
        assert!(panicked);
        let JobEnd::Failed(e) = end else { panic!("{end:?}") };
        assert_eq!(e, GenerationError::Panicked("index out of bounds: the len is 3".into()));
        assert_eq!(e.to_string(), "inference panicked: index out of bounds: the len is 3");
        let (end, _) = guarded(|| std::panic::panic_any(7u8));
        assert_eq!(end, JobEnd::Failed(GenerationError::Panicked("unknown panic".into())));
    }
}
