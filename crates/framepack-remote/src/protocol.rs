//! The wire protocol: subjects, streams and buckets, and the messages on them.
//!
//! Every message is an [`Envelope`]: the magic `FPR1`, a u32 (little-endian) length and a JSON
//! header, a u32 count of binary blobs (PNG images), then each blob with its u32 length. A blob too large for one message
//! (the server's `max_payload`, 1 MiB by default) goes to the object store instead and the
//! header names it ([`Blob::Object`]).
//!
//! - Jobs: subject `<prefix>.jobs.<job>` on the work-queue stream `<prefix>_jobs`; the header is
//!   a [`JobSpec`]. Workers share the durable pull consumer `workers`.
//! - Events: subject `<prefix>.ev.<job>` on the stream `<prefix>_events` (kept one hour); the
//!   header is an [`Event`]. Clients replay a job's events with an ordered consumer.
//! - Cancel: a put of the job's key in the key-value bucket `<prefix>_cancel`.
//! - Large blobs: the object store `<prefix>_blobs` (kept one hour).

use std::ops::Range;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use framepack::JobSettings;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::error::{RemoteError, Result};

/// The protocol version a [`JobSpec`] carries; a worker rejects other versions.
pub const PROTOCOL_VERSION: u32 = 1;

const MAGIC: &[u8; 4] = b"FPR1";

/// How long events, cancel flags and blobs are kept.
pub const RETENTION: Duration = Duration::from_secs(3600);

/// The subjects, streams and buckets of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// The names under `prefix` (checked by [`RemoteOptions`](crate::RemoteOptions)).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }
    /// Subject a job is queued on.
    pub fn job_subject(&self, job: &str) -> String {
        format!("{}.jobs.{job}", self.prefix)
    }
    /// Subject a job's events are published on.
    pub fn event_subject(&self, job: &str) -> String {
        format!("{}.ev.{job}", self.prefix)
    }
    /// The job id in a job subject.
    pub fn job_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject.strip_prefix(&self.prefix)?.strip_prefix(".jobs.").filter(|j| valid_job_id(j))
    }
    /// The work-queue stream of jobs.
    pub fn jobs_stream(&self) -> String {
        format!("{}_jobs", self.prefix)
    }
    /// The stream of events.
    pub fn events_stream(&self) -> String {
        format!("{}_events", self.prefix)
    }
    /// The key-value bucket of cancel flags.
    pub fn cancel_bucket(&self) -> String {
        format!("{}_cancel", self.prefix)
    }
    /// The object store of blobs too large for a message.
    pub fn blob_bucket(&self) -> String {
        format!("{}_blobs", self.prefix)
    }
    /// The durable consumer all workers share.
    pub const WORKERS: &'static str = "workers";
}

/// Whether `id` can be a job id: 1–64 letters, digits, `_` or `-` (it is a subject token and a
/// key).
pub fn valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Where a blob's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum Blob {
    /// In this message, the `index`-th blob.
    Inline {
        /// Position among the envelope's blobs.
        index: usize,
    },
    /// In the object store under `name`.
    Object {
        /// The object's name.
        name: String,
    },
}

/// An 8-bit RGB image stored as a PNG blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The PNG.
    pub png: Blob,
}

/// A queued job: the core's request, with the images as blobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The prompt (timestamp tags allowed).
    pub prompt: String,
    /// Resolution class of the buckets.
    pub resolution: usize,
    /// Length, seed, steps, schedule, decoder, …
    pub settings: JobSettings,
    /// The start frame.
    pub image: ImageRef,
    /// The optional end frame.
    pub end_image: Option<ImageRef>,
}

/// Why a remote job failed, sorted like the plugin's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The worker could not load its model.
    ModelLoad,
    /// The model refused the request.
    InvalidRequest,
    /// A tensor operation failed.
    Inference,
    /// Inference panicked (the worker reloads its model).
    Panicked,
    /// The job message itself was unreadable or of another protocol version.
    Rejected,
}

/// One step of a job's life as a worker publishes it. `attempt` is the delivery count of the job
/// message: a job whose worker died is delivered again and its events start over with a higher
/// attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A worker began the job.
    Started {
        /// Delivery count.
        attempt: u64,
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
    /// A sampler step finished.
    Progress {
        /// Delivery count.
        attempt: u64,
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
        /// Estimated time until sampling ends, in milliseconds.
        eta_ms: u64,
    },
    /// A final frame (RGB PNG).
    Frame {
        /// Delivery count.
        attempt: u64,
        /// Index in the video.
        index: usize,
        /// The frame.
        image: ImageRef,
    },
    /// A section is done (its frames came before it).
    Section {
        /// Delivery count.
        attempt: u64,
        /// Generation-order index.
        index: usize,
        /// Sections of the job.
        sections: usize,
        /// Where its frames lie in the video.
        frames: Range<usize>,
    },
    /// Every section was generated.
    Finished {
        /// Delivery count.
        attempt: u64,
    },
    /// The job failed.
    Failed {
        /// Delivery count.
        attempt: u64,
        /// Where it failed.
        kind: FailureKind,
        /// The worker's message.
        message: String,
    },
    /// The job was cancelled.
    Cancelled {
        /// Delivery count.
        attempt: u64,
    },
}

impl Event {
    /// The delivery count the event belongs to.
    pub fn attempt(&self) -> u64 {
        match self {
            Self::Started { attempt, .. }
            | Self::Progress { attempt, .. }
            | Self::Frame { attempt, .. }
            | Self::Section { attempt, .. }
            | Self::Finished { attempt }
            | Self::Failed { attempt, .. }
            | Self::Cancelled { attempt } => *attempt,
        }
    }
    /// Whether this ends the job.
    pub fn is_end(&self) -> bool {
        matches!(self, Self::Finished { .. } | Self::Failed { .. } | Self::Cancelled { .. })
    }
}

/// A header and its blobs, as one message payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The JSON header.
    pub header: Vec<u8>,
    /// The binary blobs.
    pub blobs: Vec<Vec<u8>>,
}

impl Envelope {
    /// Wraps a header (serialized to JSON) and blobs.
    pub fn new<H: Serialize>(header: &H, blobs: Vec<Vec<u8>>) -> Self {
        let header = serde_json::to_vec(header).unwrap_or_else(|e| unreachable!("plain data serializes: {e}"));
        Self { header, blobs }
    }

    /// The payload's size in bytes.
    pub fn encoded_len(&self) -> usize {
        12 + self.header.len() + self.blobs.iter().map(|b| 4 + b.len()).sum::<usize>()
    }

    /// The payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    /// Reads a payload; `what` names the message kind in errors.
    pub fn decode(bytes: &[u8], what: &'static str) -> Result<Self> {
        let bad = |reason: String| RemoteError::malformed(what, reason);
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(bad(format!("not a framepack message ({} bytes without the FPR1 magic)", bytes.len())));
        }
        let mut at = 4;
        let word = |at: usize, part: &str| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| bad(format!("truncated before the {part}")))
        };
        let block = |at: &mut usize, part: &str| -> Result<Vec<u8>> {
            let len = word(*at, part)?;
            let data = bytes.get(*at + 4..*at + 4 + len).ok_or_else(|| {
                bad(format!("truncated {part}: {len} bytes announced, {} left", bytes.len() - *at - 4))
            })?;
            *at += 4 + len;
            Ok(data.to_vec())
        };
        let header = block(&mut at, "header")?;
        let count = word(at, "blob count")?;
        at += 4;
        let mut blobs = Vec::with_capacity(count.min(64));
        for i in 0..count {
            blobs.push(block(&mut at, if i == 0 { "first blob" } else { "next blob" })?);
        }
        if at != bytes.len() {
            return Err(bad(format!("{} bytes after the last blob", bytes.len() - at)));
        }
        Ok(Self { header, blobs })
    }

    /// The header as `H`.
    pub fn header<H: for<'de> Deserialize<'de>>(&self, what: &'static str) -> Result<H> {
        serde_json::from_slice(&self.header).map_err(|e| RemoteError::malformed(what, format!("header: {e}")))
    }

    /// The bytes of an inline blob.
    pub fn inline(&self, index: usize, what: &'static str) -> Result<&[u8]> {
        self.blobs.get(index).map(Vec::as_slice).ok_or_else(|| {
            RemoteError::malformed(what, format!("blob {index} is missing (the message has {})", self.blobs.len()))
        })
    }
}

/// The JetStream objects of a namespace, opened (and created where missing).
#[derive(Clone)]
pub(crate) struct Infra {
    pub(crate) js: jetstream::Context,
    pub(crate) names: Names,
    pub(crate) cancel: kv::Store,
    pub(crate) blobs: object_store::ObjectStore,
}

impl Infra {
    pub(crate) async fn open(client: async_nats::Client, prefix: &str, timeout: Duration) -> Result<Self> {
        let names = Names::new(prefix);
        let js = jetstream::ContextBuilder::new().timeout(timeout).backpressure_on_inflight(true).build(client);
        js.get_or_create_stream(stream::Config {
            name: names.jobs_stream(),
            subjects: vec![format!("{}.jobs.*", names.prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| RemoteError::js("jobs stream", e))?;
        js.get_or_create_stream(stream::Config {
            name: names.events_stream(),
            subjects: vec![format!("{}.ev.*", names.prefix)],
            retention: stream::RetentionPolicy::Limits,
            max_age: RETENTION,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| RemoteError::js("events stream", e))?;
        let cancel = match js.get_key_value(names.cancel_bucket()).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: names.cancel_bucket(),
                    history: 1,
                    max_age: RETENTION,
                    ..Default::default()
                })
                .await
                .map_err(|e| RemoteError::js("cancel bucket", e))?,
        };
        let blobs = match js.get_object_store(names.blob_bucket()).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: names.blob_bucket(),
                    max_age: RETENTION,
                    ..Default::default()
                })
                .await
                .map_err(|e| RemoteError::js("blob store", e))?,
        };
        Ok(Self { js, names, cancel, blobs })
    }

    /// Stores `data` as a blob: inline (appended to `blobs`) when the message stays within
    /// `limit` bytes, else as the object `name`.
    pub(crate) async fn put_blob(
        &self,
        data: Vec<u8>,
        name: String,
        blobs: &mut Vec<Vec<u8>>,
        budget: &mut usize,
    ) -> Result<Blob> {
        if data.len() + 4 <= *budget {
            *budget -= data.len() + 4;
            blobs.push(data);
            return Ok(Blob::Inline { index: blobs.len() - 1 });
        }
        self.blobs.put(name.as_str(), &mut data.as_slice()).await.map_err(|e| RemoteError::js("blob upload", e))?;
        Ok(Blob::Object { name })
    }

    /// The bytes of a blob of `env`.
    pub(crate) async fn get_blob(&self, env: &Envelope, blob: &Blob, what: &'static str) -> Result<Vec<u8>> {
        match blob {
            Blob::Inline { index } => Ok(env.inline(*index, what)?.to_vec()),
            Blob::Object { name } => {
                let mut obj = self.blobs.get(name).await.map_err(|e| RemoteError::js("blob download", e))?;
                let mut buf = Vec::new();
                obj.read_to_end(&mut buf).await.map_err(|e| RemoteError::js("blob download", e))?;
                Ok(buf)
            }
        }
    }
}

/// Room for blobs in one message under the server's `max_payload` (headers and JSON take the
/// rest).
pub(crate) fn inline_budget(max_payload: usize) -> usize {
    max_payload.saturating_sub(16 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_every_truncation_is_an_error() {
        let env = Envelope::new(&Event::Finished { attempt: 2 }, vec![vec![1, 2, 3], vec![], vec![9; 300]]);
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        let back = Envelope::decode(&bytes, "event").unwrap();
        assert_eq!(back, env);
        assert_eq!(back.header::<Event>("event").unwrap(), Event::Finished { attempt: 2 });
        for cut in 0..bytes.len() {
            let r = Envelope::decode(&bytes[..cut], "event");
            assert!(matches!(r, Err(RemoteError::Malformed { what: "event", .. })), "cut at {cut}: {r:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer, "event").is_err());
        assert!(matches!(Envelope::decode(b"{\"json\": 1}", "job"), Err(RemoteError::Malformed { what: "job", .. })));
        assert!(Envelope::new(&1u8, vec![]).header::<Event>("event").is_err());
        assert!(back.inline(3, "event").is_err());
    }

    #[test]
    fn job_ids_are_subject_tokens_and_keys() {
        let n = Names::new("fp");
        assert_eq!(n.job_of("fp.jobs.abc-1_2"), Some("abc-1_2"));
        assert_eq!(n.job_of("fp.jobs.a.b"), None);
        assert_eq!(n.job_of("fp.jobs."), None);
        assert_eq!(n.job_of("other.jobs.a"), None);
        assert!(!valid_job_id(&"x".repeat(65)));
        assert!(!valid_job_id("a b"));
    }
}
