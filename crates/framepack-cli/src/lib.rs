//! Library side of the `framepack` command: video writers and the ordered section writer shared
//! by its subcommands and tests.
#![warn(missing_docs)]

pub mod output;
pub mod video;
