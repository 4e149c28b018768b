//! The game's (and the CLI's) side: submit jobs, follow their events, cancel them.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use framepack::generator::Frame;
use framepack::pipeline::Request;
use framepack::preprocess::RgbImage;
use futures_util::StreamExt;

use crate::error::{RemoteError, Result};
use crate::options::RemoteOptions;
use crate::protocol::{Envelope, Event, FailureKind, ImageRef, Infra, JobSpec, PROTOCOL_VERSION};

/// A connection to the job queue.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    infra: Infra,
    url: String,
    disconnect_timeout: Duration,
}

/// What happened to a job, with redeliveries folded in: a job that started over on another
/// worker reports [`JobEvent::Restarted`] and then only what the first attempt did not deliver.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// A worker began the job.
    Started {
        /// The worker's name.
        worker: String,
        /// Sections of the job.
        sections: usize,
        /// Frames of the finished video.
        total_frames: usize,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// The job started over (its worker stopped answering); frames already received are not
    /// sent again.
    Restarted {
        /// The delivery count.
        attempt: u64,
        /// The worker now running it.
        worker: String,
    },
    /// A sampler step finished.
    Progress {
        /// Generation-order index of the section.
        section: usize,
        /// Sections of the job.
        sections: usize,
        /// Steps done in this section.
        step: usize,
        /// Steps per section.
        steps: usize,
        /// Fraction of the job done.
        fraction: f32,
        /// Estimated time until sampling ends.
        eta: Duration,
    },
    /// A final frame.
    Frame {
        /// Index in the video.
        index: usize,
        /// The RGB frame.
        frame: Frame,
    },
    /// A section is done (its frames came before it).
    Section {
        /// Generation-order index.
        index: usize,
        /// Sections of the job.
        sections: usize,
        /// Where its frames lie in the video.
        frames: Range<usize>,
    },
    /// Every section was generated.
    Finished,
    /// The job failed on the worker.
    Failed {
        /// Where.
        kind: FailureKind,
        /// The worker's message.
        message: String,
    },
    /// The job was cancelled.
    Cancelled,
}

impl JobEvent {
    /// Whether this ends the job.
    pub fn is_end(&self) -> bool {
        matches!(self, Self::Finished | Self::Failed { .. } | Self::Cancelled)
    }
}

/// A fresh job id: 32 hex digits from the process's random hasher keys, the time and a counter.
pub fn new_job_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(now);
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

impl Client {
    /// Connects to the server (one attempt within the options' `connect_timeout`) and opens the
    /// namespace's streams and buckets, creating those that are missing.
    pub async fn connect(opts: &RemoteOptions) -> Result<Self> {
        let nats = opts.connect().await?;
        let infra = Infra::open(nats.clone(), &opts.prefix, opts.request_timeout).await.map_err(|e| match e {
            RemoteError::JetStream { what, reason } => RemoteError::Connect {
                url: opts.url.clone(),
                reason: format!("{what}: {reason} (is JetStream enabled, `nats-server -js`?)"),
            },
            e => e,
        })?;
        Ok(Self { nats, infra, url: opts.url.clone(), disconnect_timeout: opts.disconnect_timeout })
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JetStream context (to publish or inspect directly).
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.infra.js
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.nats.connection_state() == State::Connected
    }

    /// Queues a job under a fresh id and returns the id.
    pub async fn submit(&self, request: &Request) -> Result<String> {
        let job = new_job_id();
        self.submit_as(&job, request).await?;
        Ok(job)
    }

    /// Queues a job under `job` (letters, digits, `_`, `-`; a reused id within two minutes is
    /// refused because the server drops it as a duplicate).
    pub async fn submit_as(&self, job: &str, request: &Request) -> Result<()> {
        if !crate::protocol::valid_job_id(job) {
            return Err(RemoteError::Options(format!("job id `{job}` must be 1–64 letters, digits, `_` or `-`")));
        }
        let mut blobs = Vec::new();
        let mut budget = crate::protocol::inline_budget(self.nats.server_info().max_payload);
        let image = self.image(job, "start", &request.image, &mut blobs, &mut budget).await?;
        let end_image = match &request.end_image {
            Some(i) => Some(self.image(job, "end", i, &mut blobs, &mut budget).await?),
            None => None,
        };
        let spec = JobSpec {
            version: PROTOCOL_VERSION,
            prompt: request.prompt.clone(),
            resolution: request.resolution,
            settings: request.settings.clone(),
            image,
            end_image,
        };
        let payload = Envelope::new(&spec, blobs).encode();
        self.publish_job(job, payload).await
    }

    /// Publishes raw bytes as job `job` (the protocol's tests send malformed jobs with it).
    pub async fn publish_job(&self, job: &str, payload: Vec<u8>) -> Result<()> {
        let ack = self
            .infra
            .js
            .send_publish(
                self.infra.names.job_subject(job),
                PublishMessage::build().payload(payload.into()).message_id(job),
            )
            .await
            .map_err(|e| RemoteError::js("job publish", e))?
            .await
            .map_err(|e| RemoteError::js("job publish", e))?;
        if ack.duplicate {
            return Err(RemoteError::Options(format!("job id `{job}` was already used in the last two minutes")));
        }
        Ok(())
    }

    async fn image(
        &self,
        job: &str,
        which: &str,
        img: &RgbImage,
        blobs: &mut Vec<Vec<u8>>,
        budget: &mut usize,
    ) -> Result<ImageRef> {
        let (width, height) = (img.width() as u32, img.height() as u32);
        let png = framepack::clip::encode_png(img.data(), width, height)
            .map_err(|e| RemoteError::Options(format!("the {which} image cannot be encoded: {e}")))?;
        let png = self.infra.put_blob(png, format!("{job}/{which}"), blobs, budget).await?;
        Ok(ImageRef { width, height, png })
    }

    /// Asks the worker running `job` to stop (it checks after every sampler step); a job still
    /// queued is cancelled when a worker takes it.
    pub async fn cancel(&self, job: &str) -> Result<()> {
        self.infra.cancel.put(job, "1".into()).await.map_err(|e| RemoteError::js("cancel", e))?;
        Ok(())
    }

    /// Follows `job`'s events from its first one (events are kept an hour, so this works
    /// before, during and after the job runs).
    pub async fn events(&self, job: &str) -> Result<JobEvents> {
        let stream = self
            .infra
            .js
            .get_stream(self.infra.names.events_stream())
            .await
            .map_err(|e| RemoteError::js("events stream", e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.infra.names.event_subject(job),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| RemoteError::js("event consumer", e))?;
        let messages = consumer.messages().await.map_err(|e| RemoteError::js("event consumer", e))?;
        Ok(JobEvents {
            client: self.clone(),
            messages: Box::pin(messages),
            attempt: 0,
            started: false,
            frames: HashSet::new(),
            sections: HashSet::new(),
            down_since: None,
            done: false,
        })
    }
}

type Messages = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<
                    async_nats::jetstream::Message,
                    async_nats::jetstream::consumer::pull::OrderedError,
                >,
            > + Send,
    >,
>;

/// One job's events, in order, without the repeats of a redelivered job.
pub struct JobEvents {
    client: Client,
    messages: Messages,
    attempt: u64,
    started: bool,
    frames: HashSet<usize>,
    sections: HashSet<usize>,
    down_since: Option<Instant>,
    done: bool,
}

impl JobEvents {
    /// The next event; `None` after the job's end. A connection down for longer than the
    /// options' `disconnect_timeout` ends it with [`RemoteError::Disconnected`].
    pub async fn next(&mut self) -> Option<Result<JobEvent>> {
        while !self.done {
            let msg = match tokio::time::timeout(Duration::from_millis(200), self.messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(_))) => {
                    // Heartbeat gaps and consumer re-creation after a reconnect are not fatal;
                    // a connection that stays down is. Errors can come back to back while the
                    // server is away, so wait a little before looking again.
                    if let Some(e) = self.check_connection() {
                        self.done = true;
                        return Some(Err(e));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(_) => {
                    if let Some(e) = self.check_connection() {
                        self.done = true;
                        return Some(Err(e));
                    }
                    continue;
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Err(RemoteError::js("event stream", "ended")));
                }
            };
            self.down_since = None;
            match self.fold(&msg.payload).await {
                Ok(Some(ev)) => {
                    self.done = ev.is_end();
                    return Some(Ok(ev));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    fn check_connection(&mut self) -> Option<RemoteError> {
        if self.client.is_connected() {
            self.down_since = None;
            return None;
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        let down = since.elapsed();
        (down >= self.client.disconnect_timeout)
            .then(|| RemoteError::Disconnected { url: self.client.url.clone(), seconds: down.as_secs_f64() })
    }

    /// Turns a wire event into what the caller sees, dropping what an earlier attempt already
    /// delivered and everything of attempts older than the newest.
    async fn fold(&mut self, payload: &[u8]) -> Result<Option<JobEvent>> {
        let env = Envelope::decode(payload, "event")?;
        let ev: Event = env.header("event")?;
        let attempt = ev.attempt();
        if attempt < self.attempt {
            return Ok(None);
        }
        let newer = attempt > self.attempt;
        self.attempt = attempt;
        Ok(match ev {
            Event::Started { worker, sections, total_frames, width, height, .. } => {
                if self.started {
                    Some(JobEvent::Restarted { attempt, worker })
                } else {
                    self.started = true;
                    Some(JobEvent::Started { worker, sections, total_frames, width, height })
                }
            }
            _ if newer && !self.started && !ev.is_end() => None,
            Event::Progress { section, sections, step, steps, fraction, eta_ms, .. } => Some(JobEvent::Progress {
                section,
                sections,
                step,
                steps,
                fraction,
                eta: Duration::from_millis(eta_ms),
            }),
            Event::Frame { index, image, .. } => {
                if !self.frames.insert(index) {
                    return Ok(None);
                }
                let png = self.client.infra.get_blob(&env, &image.png, "event").await?;
                let rgb = framepack::clip::decode_png(&png, image.width, image.height)
                    .map_err(|e| RemoteError::malformed("event", format!("frame {index}: {e}")))?;
                Some(JobEvent::Frame {
                    index,
                    frame: Frame { width: image.width as usize, height: image.height as usize, rgb },
                })
            }
            Event::Section { index, sections, frames, .. } => {
                self.sections.insert(index).then_some(JobEvent::Section { index, sections, frames })
            }
            Event::Finished { .. } => Some(JobEvent::Finished),
            Event::Failed { kind, message, .. } => Some(JobEvent::Failed { kind, message }),
            Event::Cancelled { .. } => Some(JobEvent::Cancelled),
        })
    }
}
