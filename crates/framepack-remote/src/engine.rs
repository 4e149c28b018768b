//! The worker's inference thread: owns the pipeline, runs one job at a time and reports what
//! happens over a channel the async side drains.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::JoinHandle;

use framepack::CancelToken;
use framepack::pipeline::{Pipeline, Request};
use tokio::sync::mpsc::UnboundedSender;

use crate::protocol::FailureKind;

/// Loads the pipeline a worker runs (called again after a panic).
pub type Loader = Box<dyn FnMut() -> framepack::Result<Pipeline> + Send>;

/// What the inference thread reports about a job.
pub(crate) enum Update {
    Started {
        sections: usize,
        total_frames: usize,
        width: u32,
        height: u32,
    },
    Progress {
        section: usize,
        sections: usize,
        step: usize,
        steps: usize,
        fraction: f32,
        eta_ms: u64,
    },
    /// A final frame as an RGB PNG.
    Frame {
        index: usize,
        width: u32,
        height: u32,
        png: Vec<u8>,
    },
    Section {
        index: usize,
        sections: usize,
        frames: std::ops::Range<usize>,
    },
    End(End),
}

#[derive(Debug, PartialEq)]
pub(crate) enum End {
    Done,
    Cancelled,
    Failed(FailureKind, String),
}

pub(crate) struct EngineJob {
    pub(crate) request: Request,
    pub(crate) token: CancelToken,
    pub(crate) tx: UnboundedSender<Update>,
}

pub(crate) struct Engine {
    tx: Option<mpsc::Sender<EngineJob>>,
    join: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the thread; with `threads`, its tensor operations run on a pool of that many
    /// threads of its own instead of rayon's global one.
    pub(crate) fn spawn(load: Loader, threads: Option<usize>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<EngineJob>();
        let pool = threads
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .thread_name(|i| format!("framepack-remote-inference-{i}"))
                    .build()
                    .map_err(std::io::Error::other)
            })
            .transpose()?;
        let join = std::thread::Builder::new().name("framepack-remote-engine".into()).spawn(move || match pool {
            Some(pool) => pool.install(|| engine_main(load, rx)),
            None => engine_main(load, rx),
        })?;
        Ok(Self { tx: Some(tx), join: Some(join) })
    }

    /// Queues a job; `false` when the thread is gone.
    pub(crate) fn run(&self, job: EngineJob) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn engine_main(mut load: Loader, rx: mpsc::Receiver<EngineJob>) {
    let mut pipeline: Option<Pipeline> = None;
    while let Ok(job) = rx.recv() {
        let tx = job.tx.clone();
        let end = match catch_unwind(AssertUnwindSafe(|| run(&mut load, &mut pipeline, &job))) {
            Ok(end) => end,
            Err(p) => {
                pipeline = None;
                End::Failed(FailureKind::Panicked, framepack::error::panic_message(p.as_ref()))
            }
        };
        let _ = tx.send(Update::End(end));
    }
}

fn classify(e: &framepack::Error) -> FailureKind {
    match e {
        framepack::Error::Weights(_) | framepack::Error::Bundle(_) => FailureKind::ModelLoad,
        framepack::Error::Invalid { .. } => FailureKind::InvalidRequest,
        _ => FailureKind::Inference,
    }
}

fn run(load: &mut Loader, pipeline: &mut Option<Pipeline>, job: &EngineJob) -> End {
    let token = &job.token;
    let failed = |e: framepack::Error| {
        if token.is_cancelled() || matches!(e, framepack::Error::Cancelled) {
            End::Cancelled
        } else {
            End::Failed(classify(&e), e.to_string())
        }
    };
    if pipeline.is_none() {
        match load() {
            Ok(p) => *pipeline = Some(p),
            Err(e) => return End::Failed(FailureKind::ModelLoad, e.to_string()),
        }
    }
    let Some(p) = pipeline.as_mut() else { unreachable!("loaded above") };
    if token.is_cancelled() {
        return End::Cancelled;
    }
    let plan = match job.request.plan() {
        Ok(plan) => plan,
        Err(e) => return failed(e),
    };
    let started = match p.start_planned(&job.request, &plan) {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    let progress = job.tx.clone();
    let frames = job.tx.clone();
    let frame_token = token.clone();
    let run = started
        .with_cancel_token(token.clone())
        .on_progress(move |p| {
            let _ = progress.send(Update::Progress {
                section: p.section,
                sections: p.sections,
                step: p.step,
                steps: p.total_steps,
                fraction: p.fraction() as f32,
                eta_ms: p.eta.as_millis() as u64,
            });
        })
        .on_frame(move |index, f| {
            let png = match framepack::clip::encode_png(&f.rgb, f.width as u32, f.height as u32) {
                Ok(png) => png,
                Err(_) => {
                    frame_token.cancel();
                    return;
                }
            };
            if frames.send(Update::Frame { index, width: f.width as u32, height: f.height as u32, png }).is_err() {
                frame_token.cancel();
            }
        });
    let (width, height) = run.frame_size();
    let _ = job.tx.send(Update::Started {
        sections: run.plan().sections,
        total_frames: run.total_frames(),
        width: width as u32,
        height: height as u32,
    });
    for section in run {
        match section {
            Ok(s) => {
                let _ = job.tx.send(Update::Section { index: s.index, sections: s.sections, frames: s.frame_range });
            }
            Err(e) => return failed(e),
        }
    }
    if token.is_cancelled() { End::Cancelled } else { End::Done }
}
