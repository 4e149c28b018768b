//! Writes a tiny random FramePack bundle (released layout) for trying the CLI without the real
//! weights: `cargo run -p framepack-train --example write_tiny_bundle -- DIR [SEED]`.
//! The video it makes is noise-like: the models are random.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: write_tiny_bundle DIR [SEED]");
        std::process::exit(2);
    };
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    match framepack_train::testing::write_tiny_bundle(std::path::Path::new(&dir), seed) {
        Ok(paths) => {
            print!("{}", paths.inspect());
            println!("wrote a tiny random bundle to {dir}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
