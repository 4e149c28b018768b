//! Library side of the `framepack` command: video writers shared by its subcommands and tests.
#![warn(missing_docs)]

pub mod video;
