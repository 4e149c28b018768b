//! A worker: pulls jobs from the shared work queue, runs them on this machine with the core, and
//! publishes their events.
//!
//! One job is in flight per worker: it pulls the next job only after acknowledging the last. While
//! a job runs it acknowledges progress (`+WPI`) after every sampler step and at least every third
//! of `ack_wait`, so a worker that dies stops acknowledging and the server delivers the job again
//! to another worker after `ack_wait`. A job whose events cannot be published (the server went
//! away) is abandoned unacknowledged, for the same reason. A message that is not a job is
//! answered with a `Failed { kind: Rejected }` event and terminated; the worker keeps working.

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use framepack::CancelToken;
use framepack::pipeline::Request;
use framepack::preprocess::RgbImage;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::engine::{End, Engine, EngineJob, Loader, Update};
use crate::error::{RemoteError, Result};
use crate::options::RemoteOptions;
use crate::protocol::{Envelope, Event, FailureKind, ImageRef, Infra, JobSpec, Names, PROTOCOL_VERSION};

/// How a worker takes part in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    /// The server.
    pub remote: RemoteOptions,
    /// The name in `Started` events and in the server's connection list.
    pub name: String,
    /// How long a job may go without an acknowledgement before the server gives it to another
    /// worker (set when the shared consumer is first created).
    pub ack_wait: Duration,
    /// Deliveries of one job before the server gives up on it.
    pub max_deliver: i64,
    /// Jobs in flight across all workers (at least the number of workers).
    pub max_ack_pending: i64,
    /// Largest blob sent inside an event message; larger frames go to the object store.
    /// `None`: what the server's `max_payload` allows.
    pub inline_limit: Option<usize>,
    /// Threads of the worker's own inference pool (`None`: rayon's global pool, one thread per
    /// core). Give each of several workers on one machine its share.
    pub threads: Option<usize>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            remote: RemoteOptions::default(),
            name: format!("worker-{}", std::process::id()),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 256,
            inline_limit: None,
            threads: None,
        }
    }
}

/// Runs a worker until `shutdown` resolves (a running job is then handed back to the queue).
/// `load` builds the pipeline when the first job arrives; `ready` is called once the worker
/// listens for jobs. Only a server that refuses the connection (credentials, TLS) is an
/// error; an unreachable one (or one without JetStream yet) is retried every second, and every
/// job failure becomes an event.
pub async fn run(
    opts: WorkerOptions,
    load: Loader,
    ready: impl FnOnce() + Send,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let work = work(opts, load, ready, stop_rx);
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        () = shutdown => {
            let _ = stop_tx.send(true);
            work.await
        }
    }
}

/// A worker on its own thread (with its own async runtime), for games, tests and benchmarks that
/// run one in-process. Dropping it stops the worker and waits for it.
pub struct WorkerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<()>>>,
}

impl WorkerThread {
    /// Starts a worker.
    pub fn spawn(opts: WorkerOptions, load: Loader) -> std::io::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let join = std::thread::Builder::new().name(format!("framepack-remote-{}", opts.name)).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RemoteError::Options(format!("cannot start the async runtime: {e}")))?;
            rt.block_on(run(opts, load, || {}, async {
                let _ = stopped.await;
            }))
        })?;
        Ok(Self { stop: Some(stop), join: Some(join) })
    }

    /// Stops the worker and returns how it ended.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        drop(self.stop.take());
        match self.join.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(RemoteError::Options("the worker thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

struct Ctx {
    infra: Infra,
    opts: WorkerOptions,
    inline_budget: usize,
    engine: Engine,
}

async fn work(opts: WorkerOptions, load: Loader, ready: impl FnOnce(), mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut remote = opts.remote.clone();
    remote.name.get_or_insert_with(|| opts.name.clone());
    // Wait for a server that is not up yet; give up on one that refuses these credentials.
    let client = loop {
        match remote.connect().await {
            Ok(c) => break c,
            Err(e @ (RemoteError::Refused { .. } | RemoteError::Options(_))) => return Err(e),
            Err(e) => {
                eprintln!("{}: {e}; retrying", opts.name);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    };
    let infra = loop {
        match Infra::open(client.clone(), &remote.prefix, remote.request_timeout).await {
            Ok(i) => break i,
            Err(e) => {
                eprintln!("{}: {e}; retrying", opts.name);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    };
    let consumer = consumer(&infra, &opts).await?;
    let inline_budget =
        crate::protocol::inline_budget(client.server_info().max_payload).min(opts.inline_limit.unwrap_or(usize::MAX));
    let engine = Engine::spawn(load, opts.threads)
        .map_err(|e| RemoteError::Options(format!("cannot start the inference thread: {e}")))?;
    let ctx = Ctx { infra, opts, inline_budget, engine };
    ready();
    while !*stop.borrow() {
        let msg = tokio::select! {
            m = next_job(&consumer) => m,
            _ = stop.changed() => break,
        };
        match msg {
            Ok(Some(msg)) => ctx.handle(msg, &mut stop).await,
            Ok(None) => {}
            Err(e) => {
                // The server is away or busy: the client reconnects by itself; try again soon.
                eprintln!("{}: {e}", ctx.opts.name);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    Ok(())
}

async fn consumer(infra: &Infra, opts: &WorkerOptions) -> Result<PullConsumer> {
    let stream = infra.js.get_stream(infra.names.jobs_stream()).await.map_err(|e| RemoteError::js("jobs stream", e))?;
    stream
        .get_or_create_consumer(
            Names::WORKERS,
            pull::Config {
                durable_name: Some(Names::WORKERS.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: opts.ack_wait,
                max_deliver: opts.max_deliver,
                max_ack_pending: opts.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| RemoteError::js("workers consumer", e))
}

/// Pulls at most one job, waiting up to 5 s for one.
async fn next_job(consumer: &PullConsumer) -> Result<Option<jetstream::Message>> {
    let expires = Duration::from_secs(5);
    let pull = async {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(expires)
            .messages()
            .await
            .map_err(|e| RemoteError::js("job pull", e))?;
        match batch.next().await {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => Err(RemoteError::js("job pull", e)),
            None => Ok(None),
        }
    };
    tokio::time::timeout(expires + Duration::from_secs(5), pull)
        .await
        .unwrap_or_else(|_| Err(RemoteError::js("job pull", "no answer from the server")))
}

/// Publishes one job attempt's events in order.
struct Publisher<'a> {
    ctx: &'a Ctx,
    job: String,
    attempt: u64,
    seq: u64,
}

impl Publisher<'_> {
    async fn send(&mut self, env: Envelope) -> Result<()> {
        self.seq += 1;
        let js = &self.ctx.infra.js;
        let subject = self.ctx.infra.names.event_subject(&self.job);
        let id = format!("{}.{}.{}", self.job, self.attempt, self.seq);
        let ack = js
            .send_publish(subject, PublishMessage::build().payload(env.encode().into()).message_id(id))
            .await
            .map_err(|e| RemoteError::js("event publish", e))?;
        ack.await.map_err(|e| RemoteError::js("event publish", e))?;
        Ok(())
    }

    async fn event(&mut self, ev: Event) -> Result<()> {
        self.send(Envelope::new(&ev, Vec::new())).await
    }

    async fn update(&mut self, u: Update) -> Result<()> {
        let attempt = self.attempt;
        match u {
            Update::Started { sections, total_frames, width, height } => {
                let worker = self.ctx.opts.name.clone();
                self.event(Event::Started { attempt, worker, sections, total_frames, width, height }).await
            }
            Update::Progress { section, sections, step, steps, fraction, eta_ms } => {
                self.event(Event::Progress { attempt, section, sections, step, steps, fraction, eta_ms }).await
            }
            Update::Frame { index, width, height, png } => {
                let mut blobs = Vec::new();
                let mut budget = self.ctx.inline_budget;
                let name = format!("{}/{attempt}/frame-{index}", self.job);
                let png = self.ctx.infra.put_blob(png, name, &mut blobs, &mut budget).await?;
                let ev = Event::Frame { attempt, index, image: ImageRef { width, height, png } };
                self.send(Envelope::new(&ev, blobs)).await
            }
            Update::Section { index, sections, frames } => {
                self.event(Event::Section { attempt, index, sections, frames }).await
            }
            Update::End(End::Done) => self.event(Event::Finished { attempt }).await,
            Update::End(End::Cancelled) => self.event(Event::Cancelled { attempt }).await,
            Update::End(End::Failed(kind, message)) => self.event(Event::Failed { attempt, kind, message }).await,
        }
    }
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    let r = match kind {
        AckKind::Ack => msg.double_ack().await,
        other => msg.ack_with(other).await,
    };
    if let Err(e) = r {
        eprintln!("acknowledgement failed: {e}");
    }
}

impl Ctx {
    async fn handle(&self, msg: jetstream::Message, stop: &mut watch::Receiver<bool>) {
        let subject = msg.subject.to_string();
        let Some(job) = self.infra.names.job_of(&subject).map(str::to_string) else {
            eprintln!("{}: dropping a message on `{subject}`: not a job subject", self.opts.name);
            ack(&msg, AckKind::Term).await;
            return;
        };
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let mut out = Publisher { ctx: self, job: job.clone(), attempt, seq: 0 };
        let request = match self.decode_job(&msg.payload).await {
            Ok(r) => r,
            Err(e) => {
                let kind = if matches!(e, RemoteError::Malformed { .. }) {
                    FailureKind::Rejected
                } else {
                    FailureKind::InvalidRequest
                };
                let _ = out.event(Event::Failed { attempt, kind, message: e.to_string() }).await;
                ack(&msg, AckKind::Term).await;
                return;
            }
        };
        let mut watch = match self.infra.cancel.watch_with_history(&job).await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{}: cannot watch job {job}'s cancel flag ({e}); handing it back", self.opts.name);
                ack(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                return;
            }
        };
        let token = CancelToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        if !self.engine.run(EngineJob { request, token: token.clone(), tx }) {
            let message = "the inference thread is gone".to_string();
            let _ = out.event(Event::Failed { attempt, kind: FailureKind::Panicked, message }).await;
            ack(&msg, AckKind::Term).await;
            return;
        }
        let mut tick = tokio::time::interval((self.opts.ack_wait / 3).max(Duration::from_millis(50)));
        let (mut lost, mut stopping, mut watching) = (false, false, true);
        let end = loop {
            tokio::select! {
                u = rx.recv() => {
                    let Some(u) = u else { break None };
                    let is_progress = matches!(u, Update::Progress { .. });
                    if let Update::End(end) = u {
                        break Some(end);
                    }
                    if !lost && let Err(e) = out.update(u).await {
                        eprintln!("{}: job {job}: {e}; abandoning it to another worker", self.opts.name);
                        lost = true;
                        token.cancel();
                    }
                    if is_progress && !lost {
                        ack(&msg, AckKind::Progress).await;
                    }
                }
                _ = tick.tick(), if !lost => ack(&msg, AckKind::Progress).await,
                e = watch.next(), if watching => match e {
                    Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => token.cancel(),
                    Some(_) => {}
                    None => watching = false,
                },
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    token.cancel();
                }
            }
        };
        match end {
            _ if lost => {} // redelivered after ack_wait
            Some(End::Cancelled) if stopping => ack(&msg, AckKind::Nak(None)).await,
            Some(end) => match out.update(Update::End(end)).await {
                Ok(()) => ack(&msg, AckKind::Ack).await,
                Err(e) => eprintln!("{}: job {job}: {e}; it will be delivered again", self.opts.name),
            },
            None => {
                let message = "the inference thread stopped".to_string();
                let _ = out.event(Event::Failed { attempt, kind: FailureKind::Panicked, message }).await;
                ack(&msg, AckKind::Term).await;
            }
        }
    }

    async fn decode_job(&self, payload: &[u8]) -> Result<Request> {
        let env = Envelope::decode(payload, "job")?;
        let spec: JobSpec = env.header("job")?;
        if spec.version != PROTOCOL_VERSION {
            return Err(RemoteError::malformed(
                "job",
                format!("protocol version {} (this worker speaks {PROTOCOL_VERSION})", spec.version),
            ));
        }
        let image = self.image(&env, &spec.image).await?;
        let end_image = match &spec.end_image {
            Some(i) => Some(self.image(&env, i).await?),
            None => None,
        };
        Ok(Request { image, end_image, prompt: spec.prompt, resolution: spec.resolution, settings: spec.settings })
    }

    async fn image(&self, env: &Envelope, img: &ImageRef) -> Result<RgbImage> {
        let png = self.infra.get_blob(env, &img.png, "job").await?;
        let rgb = framepack::clip::decode_png(&png, img.width, img.height)
            .map_err(|e| RemoteError::malformed("job", format!("image: {e}")))?;
        RgbImage::new(img.width as usize, img.height as usize, rgb)
            .map_err(|e| RemoteError::malformed("job", format!("image: {e}")))
    }
}
