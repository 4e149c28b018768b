//! FramePack jobs over NATS JetStream.
//!
//! Workers (`framepack worker`, or [`worker::WorkerThread`] in-process) pull jobs from one
//! work-queue stream through a durable consumer they share and run them with the `framepack`
//! core; games and the CLI [`Client::submit`] jobs and follow their events
//! ([`Client::events`]): started, progress at every sampler step, every frame as it is decoded,
//! sections, and one of finished, failed or cancelled. The [`protocol`] module documents the
//! subjects, streams, buckets and message layout. The server needs JetStream
//! (`nats-server -js`) and version 2.10 or newer.

mod client;
mod engine;
pub mod error;
mod options;
pub mod protocol;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use client::{Client, JobEvent, JobEvents, new_job_id};
pub use engine::Loader;
pub use error::{RemoteError, Result};
pub use options::{Credentials, DEFAULT_PREFIX, DEFAULT_URL, RemoteOptions, Tls};
pub use protocol::FailureKind;
pub use worker::{WorkerOptions, WorkerThread};
