//! Library side of the `framepack` command: its error type, video writers and the ordered
//! section writer shared by its subcommands and tests.
#![warn(missing_docs)]

pub mod error;
pub mod output;
pub mod video;
