//! What the FramePack runtime does not need: the nano model's procedural game-like training
//! clips ([`clips`]), its VAE training ([`train`]) and the version-2 TAEHV autoencoder's
//! ([`taehv`]), its transformer training by flow matching
//! on packed sections ([`dit`]), its bundle and f16 export ([`bundle`]), and tiny random models
//! and bundles for tests, examples and benchmarks ([`testing`]). Games link `framepack` (and
//! `bevy_framepack`) only; the `framepack` CLI's `train-nano` and the test suites use this crate.
#![warn(missing_docs)]

pub mod bundle;
pub mod clips;
pub mod dit;
pub mod taehv;
pub mod testing;
pub mod train;

/// An [`framepack::Error::Invalid`] naming `what` and why.
pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> framepack::Error {
    framepack::Error::Invalid { what, reason: reason.into() }
}
