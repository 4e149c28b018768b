//! Library side of the `framepack` command: its error type, video writers and the ordered
//! section writer shared by its subcommands and tests.
#![warn(missing_docs)]

pub mod error;

/// `println!` that ignores a closed standard output (`framepack … | head`): the command carries
/// on and still writes its files, instead of panicking at the next line.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod output;
pub mod video;
