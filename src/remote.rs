//! `ModelSource::Remote`: the worker thread's stand-in that sends jobs to `framepack worker`s
//! through a NATS JetStream server and turns their events into the same [`Response`]s a local
//! job produces, so messages, clips and players do not know the difference.
//!
//! The thread runs a single-threaded async runtime. It connects at the first job or preload (an
//! unreachable server fails that job, and the next one tries again), runs every job as its own
//! task (remote jobs run in parallel on as many workers as there are), and on shutdown cancels
//! the jobs still running so the workers do not go on with them.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::Receiver;
use framepack::pipeline::Request;
use framepack_remote::{Client, FailureKind, JobEvent, RemoteOptions};
use tokio::sync::watch;

use crate::clip::rgba_from_rgb;
use crate::messages::{GenerationError, JobId};
use crate::worker::{Command, JobEnd, Out, Response};

pub(crate) fn remote_main(opts: RemoteOptions, rx: Receiver<Command>, out: Out) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let e = GenerationError::Remote(format!("cannot start the async runtime: {e}"));
            let _ = out.send(Response::Model(Err(e)));
            return;
        }
    };
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    // The game's channel is a blocking one: a small thread forwards it into the runtime.
    let bridge = std::thread::Builder::new().name("framepack-remote-commands".into()).spawn(move || {
        while let Ok(c) = rx.recv() {
            let last = matches!(c, Command::Shutdown);
            if cmd_tx.send(c).is_err() || last {
                break;
            }
        }
    });
    if bridge.is_err() {
        let _ = out.send(Response::Model(Err(GenerationError::Remote("cannot start a thread".into()))));
        return;
    }
    rt.block_on(serve(opts, cmd_rx, out));
}

async fn connect(opts: &RemoteOptions, client: &mut Option<Client>, out: &Out) -> Result<Client, GenerationError> {
    if let Some(c) = client {
        return Ok(c.clone());
    }
    match Client::connect(opts).await {
        Ok(c) => {
            *client = Some(c.clone());
            out.send_async(Response::Model(Ok(()))).await;
            Ok(c)
        }
        Err(e) => {
            let e = GenerationError::Remote(e.to_string());
            out.send_async(Response::Model(Err(e.clone()))).await;
            Err(e)
        }
    }
}

async fn serve(opts: RemoteOptions, mut rx: tokio::sync::mpsc::UnboundedReceiver<Command>, out: Out) {
    let mut client = None;
    let mut cancels: HashMap<JobId, watch::Sender<bool>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None | Some(Command::Shutdown) => break,
                Some(Command::Preload) => {
                    let _ = connect(&opts, &mut client, &out).await;
                }
                Some(Command::Generate { id, request, .. }) => match connect(&opts, &mut client, &out).await {
                    Ok(c) => {
                        let (tx, cancel) = watch::channel(false);
                        cancels.insert(id, tx);
                        tasks.spawn(run(c, id, request, out.clone(), cancel));
                    }
                    Err(e) => {
                        out.send_async(Response::Ended { job: id, end: JobEnd::Failed(e) }).await;
                    }
                },
                Some(Command::Cancel(id)) => {
                    if let Some(tx) = cancels.get(&id) {
                        let _ = tx.send(true);
                    }
                }
            },
            Some(done) = tasks.join_next() => {
                if let Ok(id) = done {
                    cancels.remove(&id);
                }
            }
        }
    }
    // The game is leaving: ask the workers to stop its jobs, briefly.
    for tx in cancels.values() {
        let _ = tx.send(true);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

fn failure(kind: FailureKind, message: String) -> GenerationError {
    match kind {
        FailureKind::ModelLoad => GenerationError::ModelLoad(message),
        FailureKind::InvalidRequest | FailureKind::Rejected => GenerationError::InvalidRequest(message),
        FailureKind::Panicked => GenerationError::Panicked(message),
        _ => GenerationError::Inference(message),
    }
}

async fn run(client: Client, id: JobId, request: Box<Request>, out: Out, cancel: watch::Receiver<bool>) -> JobId {
    if let Some(end) = job(&client, id, &request, &out, cancel).await {
        out.send_async(Response::Ended { job: id, end }).await;
    }
    id
}

/// Runs one job to its end; `None` when the game went away first.
async fn job(
    client: &Client,
    id: JobId,
    request: &Request,
    out: &Out,
    mut cancel: watch::Receiver<bool>,
) -> Option<JobEnd> {
    let remote = |e: framepack_remote::RemoteError| Some(JobEnd::Failed(GenerationError::Remote(e.to_string())));
    if *cancel.borrow() {
        return Some(JobEnd::Cancelled);
    }
    let job = match client.submit(request).await {
        Ok(j) => j,
        Err(e) => return remote(e),
    };
    let mut events = match client.events(&job).await {
        Ok(ev) => ev,
        Err(e) => return remote(e),
    };
    let mut cancelling = false;
    loop {
        let next = tokio::select! {
            ev = events.next() => ev,
            changed = cancel.changed(), if !cancelling => {
                cancelling = true;
                if changed.is_ok() && *cancel.borrow() && let Err(e) = client.cancel(&job).await {
                    return remote(e);
                }
                continue;
            }
        };
        let ev = match next {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return remote(e),
            None => {
                return remote(framepack_remote::RemoteError::JetStream {
                    what: "event stream",
                    reason: "ended".into(),
                });
            }
        };
        let response = match ev {
            JobEvent::Started { sections, total_frames, width, height, .. } => {
                Response::Started { job: id, sections, total_frames, width, height }
            }
            JobEvent::Restarted { .. } => continue,
            JobEvent::Progress { section, sections, step, steps, fraction, eta } => {
                // Like local progress: dropped, not queued, when the game lags.
                out.try_send(Response::Progress { job: id, section, sections, step, steps, fraction, eta });
                continue;
            }
            JobEvent::Frame { index, frame } => Response::Frame { job: id, index, frame: rgba_from_rgb(&frame.rgb) },
            JobEvent::Section { index, sections, frames } => {
                Response::Section { job: id, index, sections, range: frames }
            }
            JobEvent::Finished => return Some(JobEnd::Done),
            JobEvent::Cancelled => return Some(JobEnd::Cancelled),
            JobEvent::Failed { kind, message } => return Some(JobEnd::Failed(failure(kind, message))),
        };
        if !out.send_async(response).await {
            let _ = client.cancel(&job).await;
            return None;
        }
    }
}
