//! `framepack`: FramePack video generation from the terminal.

mod generate;
mod remote;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use framepack::packing::{Kernel, ScheduleChoice, SectionPlan, Slot};
use framepack_cli::error::CliError;
use generate::GenerateArgs;

/// FramePack video generation (packed-context next-section diffusion).
#[derive(Parser)]
#[command(name = "framepack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a video from a start image and a prompt.
    ///
    /// The weights folder is laid out like the released repositories: the FramePack
    /// transformer (config.json + safetensors shards + index) at its root or in transformer/,
    /// and vae/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, image_encoder/,
    /// feature_extractor/. Run `framepack info --weights DIR` to check one.
    Generate(GenerateArgs),
    /// Check a weights folder: what is present, missing or mismatched, without loading it.
    Info {
        /// The weights folder (see `generate --help`; `hub:original` / `hub:f1` with the `hf-hub`
        /// feature).
        #[arg(long, value_name = "DIR")]
        weights: PathBuf,
    },
    /// Show how a video is cut into sections: generation order, where each section lands,
    /// the RoPE indices and history slots of its packed context, and the token counts.
    Plan {
        /// Video length in seconds (30 fps).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Context schedule: geometric (F1), inverted (original), first-frame, symmetric.
        #[arg(long, default_value = "geometric")]
        schedule: ScheduleChoice,
        /// Latent frames per section (FramePack uses 9).
        #[arg(long, default_value_t = 9)]
        window: usize,
        /// Video width in pixels (a multiple of 16).
        #[arg(long, default_value_t = 608)]
        width: usize,
        /// Video height in pixels (a multiple of 16).
        #[arg(long, default_value_t = 640)]
        height: usize,
        /// Also print the schedule as RON (for a preset file).
        #[arg(long)]
        ron: bool,
    },
    /// Train the embedded nano model on procedural clips: `vae` first, then `dit` (the
    /// transformer on latents of that VAE), then `export` the f16 bundle. A run directory keeps
    /// the weights, the step reached and a CSV loss log per stage; running a stage again in the
    /// same directory resumes it.
    TrainNano(train::TrainArgs),
    /// Serve generation jobs from a NATS JetStream queue with this machine's model: one job at a
    /// time, progress acknowledged after every sampler step, every frame published as it is
    /// decoded. Run one per GPU; games and `generate --remote` submit to the same server.
    Worker(remote::WorkerArgs),
}

fn slot_name(s: &Slot) -> String {
    match s {
        Slot::Start => "start".into(),
        Slot::Latent(p) => p.to_string(),
        Slot::End => "end".into(),
        Slot::Zero => "-".into(),
    }
}

fn plan(
    seconds: f64,
    schedule: ScheduleChoice,
    window: usize,
    width: usize,
    height: usize,
    ron: bool,
) -> framepack_cli::error::Result<()> {
    if width % 16 != 0 || height % 16 != 0 {
        return Err(CliError::argument(
            "size",
            format!("width and height must be multiples of 16 pixels, got {width}x{height}"),
        ));
    }
    let schedule = schedule.resolve();
    let plan = SectionPlan::from_seconds(seconds, window, schedule.order)?;
    let tokens = schedule.context_tokens(window, height / 8, width / 8)?;
    framepack_cli::say!(
        "{} section(s) of {} latents ({} frames sampled each), {:?} order; {} frames = {:.2} s at 30 fps",
        plan.sections,
        window,
        plan.frames_per_section(),
        plan.order,
        plan.total_frames(),
        plan.duration_seconds()
    );
    let groups: Vec<String> = tokens.groups.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    framepack_cli::say!(
        "tokens per section: noisy {} + context {} ({}) = {}",
        tokens.noisy,
        tokens.context(),
        groups.join(", "),
        tokens.total()
    );
    for info in plan.sections() {
        let layout = schedule.layout(&plan, info.index)?;
        framepack_cli::say!(
            "section {} (padding {}): latents {:?} -> frames {:?}, RoPE {}..={}",
            info.index + 1,
            info.padding,
            info.latents,
            info.frames,
            layout.indices_latents[0],
            layout.indices_latents[window - 1]
        );
        for g in &layout.groups {
            let label = if g.kernel == Kernel::X1 { "clean".to_string() } else { format!("{}", g.kernel) };
            let slots: Vec<String> = g.slots.iter().map(slot_name).collect();
            framepack_cli::say!("    {label:>10}: indices {:?} <- [{}]", g.indices, slots.join(" "));
        }
    }
    if ron {
        let text = ron::ser::to_string_pretty(&schedule, ron::ser::PrettyConfig::default())
            .map_err(|e| framepack::Error::Invalid { what: "schedule", reason: e.to_string() })?;
        framepack_cli::say!("{text}");
    }
    Ok(())
}

fn info(weights: PathBuf) -> framepack_cli::error::Result<()> {
    let paths = generate::bundle_paths(&weights, false)?;
    let report = paths.inspect();
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{report}");
    }
    match paths.inspect_tiny_decoder() {
        None => framepack_cli::say!("vae_tiny (optional tiny decoder): not present"),
        Some(framepack::bundle::Status::Present { summary }) => {
            framepack_cli::say!("vae_tiny (optional tiny decoder): {summary}")
        }
        Some(framepack::bundle::Status::Missing { what }) => {
            framepack_cli::say!("vae_tiny (optional tiny decoder): MISSING {what}")
        }
        Some(framepack::bundle::Status::Mismatched { reason }) => {
            framepack_cli::say!("vae_tiny (optional tiny decoder): MISMATCHED {reason}")
        }
    }
    let problems =
        report.components.iter().filter(|r| !matches!(r.status, framepack::bundle::Status::Present { .. })).count();
    if problems == 0 {
        framepack_cli::say!("complete: every component is present and matches its config");
        Ok(())
    } else {
        report.require(&framepack::bundle::BundlePart::ALL).map_err(|e| match e {
            framepack::Error::Bundle(first) => {
                CliError::argument("weights", format!("{problems} component(s) missing or mismatched; first: {first}"))
            }
            e => e.into(),
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("{} (see --help)", framepack_cli::error::one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Plan { seconds, schedule, window, width, height, ron } => {
            plan(seconds, schedule, window, width, height, ron)
        }
        Command::Info { weights } => info(weights),
        Command::Generate(args) => generate::run(args),
        Command::TrainNano(args) => train::run(args),
        Command::Worker(args) => remote::worker(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
