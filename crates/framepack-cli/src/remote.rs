//! `framepack worker` and `framepack generate --remote`: jobs over NATS JetStream.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use framepack::packing::FPS;
use framepack::pipeline::{Pipeline, Request};
use framepack_cli::error::{CliError, Result};
use framepack_cli::output::OrderedWriter;
use framepack_remote::{Client, Credentials, JobEvent, RemoteOptions, Tls, WorkerOptions};
use indicatif::{ProgressBar, ProgressDrawTarget};

use crate::generate::{GenerateArgs, Placement, fmt_duration, invalid, style};

/// How to authenticate to the NATS server and which namespace to use.
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS user name (the password comes from --nats-password or FRAMEPACK_NATS_PASSWORD).
    #[arg(long, value_name = "USER", requires = "nats_password")]
    nats_user: Option<String>,
    /// NATS password.
    #[arg(long, value_name = "PASSWORD", env = "FRAMEPACK_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS token (or FRAMEPACK_NATS_TOKEN).
    #[arg(long, value_name = "TOKEN", env = "FRAMEPACK_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// A NATS `.creds` file (JWT + nkey seed).
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`).
    #[arg(long, value_name = "FILE")]
    nats_nkey: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long)]
    tls: bool,
    /// PEM root certificates to trust (a private CA).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate (with --tls-key), for servers that verify clients.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Namespace of the streams, buckets and subjects (several deployments can share a server).
    #[arg(long, value_name = "NAME", default_value = framepack_remote::DEFAULT_PREFIX)]
    nats_prefix: String,
    /// Seconds a job waits for a lost connection to come back before it fails.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    disconnect_timeout: f64,
}

impl NatsArgs {
    fn options(&self, url: &str) -> Result<RemoteOptions> {
        let given =
            [self.nats_user.is_some(), self.nats_token.is_some(), self.nats_creds.is_some(), self.nats_nkey.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(invalid("nats", "give one of --nats-user, --nats-token, --nats-creds and --nats-nkey"));
        }
        let credentials = if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            Credentials::UserPassword { user: user.clone(), password: password.clone() }
        } else if let Some(t) = &self.nats_token {
            Credentials::Token(t.clone())
        } else if let Some(c) = &self.nats_creds {
            Credentials::CredentialsFile(c.clone())
        } else if let Some(path) = &self.nats_nkey {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| invalid("--nats-nkey", format!("cannot read {}: {e}", path.display())))?;
            Credentials::NkeySeed(seed.trim().to_string())
        } else {
            Credentials::None
        };
        if !(self.disconnect_timeout.is_finite() && self.disconnect_timeout > 0.0) {
            return Err(invalid(
                "--disconnect-timeout",
                format!("{} is not a positive number", self.disconnect_timeout),
            ));
        }
        Ok(RemoteOptions {
            credentials,
            tls: Tls {
                required: self.tls,
                root_certificates: self.tls_ca.clone(),
                client_certificate: self.tls_cert.clone().zip(self.tls_key.clone()),
            },
            prefix: self.nats_prefix.clone(),
            disconnect_timeout: Duration::from_secs_f64(self.disconnect_timeout),
            ..RemoteOptions::new(url)
        })
    }
}

/// Arguments of `framepack worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The NATS server (with JetStream, 2.10 or newer), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL", default_value = framepack_remote::DEFAULT_URL)]
    nats: String,
    /// The weights folder this worker runs (see `generate --help`).
    #[arg(long, value_name = "DIR", required_unless_present = "nano", conflicts_with = "nano")]
    weights: Option<PathBuf>,
    /// Run the embedded nano model.
    #[arg(long)]
    nano: bool,
    #[command(flatten)]
    place: Placement,
    /// The worker's name in events and in the server's connection list (default: worker-<pid>).
    #[arg(long)]
    name: Option<String>,
    /// Seconds without an acknowledgement before a job goes to another worker (the worker
    /// acknowledges after every sampler step and every third of this). Set by the first worker.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    ack_wait: f64,
    /// Deliveries of one job before the server gives up on it.
    #[arg(long, default_value_t = 5)]
    max_deliver: i64,
    /// Frames larger than this many bytes (PNG) go through the object store instead of the
    /// event message (default: what the server's max_payload allows).
    #[arg(long, value_name = "BYTES")]
    inline_limit: Option<usize>,
    /// Inference threads (default: one per core); give each of several workers on one machine
    /// its share.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    nats_args: NatsArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::argument("runtime", format!("cannot start the async runtime: {e}")))
}

fn remote_err(e: framepack_remote::RemoteError) -> CliError {
    CliError::argument("remote", e.to_string())
}

/// `framepack worker`: serves jobs until Ctrl-C (a running job then goes back to the queue).
pub fn worker(args: WorkerArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| format!("worker-{}", std::process::id()));
    if !(args.ack_wait.is_finite() && args.ack_wait >= 1.0) {
        return Err(invalid("--ack-wait", format!("{} is not a number of seconds ≥ 1", args.ack_wait)));
    }
    let paths = match &args.weights {
        Some(w) => crate::generate::bundle_paths(w, false)?,
        None => framepack_nano::bundle(),
    };
    // Fail now, not at the first job, when the folder is wrong.
    paths.inspect().require(&framepack::bundle::BundlePart::ALL)?;
    let (dtype, residency) = (args.place.dtype()?, args.place.residency()?);
    let device = args.place.device.clone();
    let load: framepack_remote::Loader = Box::new(move || {
        let device = device.open()?;
        Pipeline::load_with(&paths, &device, dtype, residency)
    });
    let opts = WorkerOptions {
        remote: args.nats_args.options(&args.nats)?,
        name: name.clone(),
        ack_wait: Duration::from_secs_f64(args.ack_wait),
        max_deliver: args.max_deliver,
        inline_limit: args.inline_limit,
        threads: args.threads,
        ..WorkerOptions::default()
    };
    let url = args.nats.clone();
    let model = args.weights.as_ref().map_or("the nano model".to_string(), |w| w.display().to_string());
    eprintln!("{name}: connecting to {url}");
    runtime()?
        .block_on(framepack_remote::worker::run(
            opts,
            load,
            move || framepack_cli::say!("{name}: ready for jobs on {url} ({model})"),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        ))
        .map_err(remote_err)
}

/// `framepack generate --remote URL`: the same output as a local run.
pub fn generate(args: &GenerateArgs, url: &str, request: &Request, started: Instant) -> Result<()> {
    let opts = args.nats.options(url)?;
    runtime()?.block_on(async {
        let client = Client::connect(&opts).await.map_err(remote_err)?;
        let job = client.submit(request).await.map_err(remote_err)?;
        let mut events = client.events(&job).await.map_err(remote_err)?;
        let bar = ProgressBar::with_draw_target(
            None,
            if args.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
        );
        bar.set_style(style("steps    [{bar:30}] {pos}/{len}  {msg}"));
        bar.set_message(format!("job {job} queued on {url}"));
        let mut writer: Option<OrderedWriter> = None;
        let mut total = 0;
        while let Some(ev) = events.next().await {
            match ev.map_err(remote_err)? {
                JobEvent::Started { worker, sections, total_frames, width, height } => {
                    total = total_frames;
                    bar.set_length((sections * args.steps) as u64);
                    bar.suspend(|| {
                        framepack_cli::say!(
                            "job {job} on {worker}: {sections} section(s), {width}x{height}: {total_frames} frames = {:.2} s at 30 fps",
                            total_frames as f64 / FPS
                        )
                    });
                    writer = Some(OrderedWriter::create(&args.out, width as usize, height as usize, FPS as u32, total_frames)?);
                }
                JobEvent::Restarted { attempt, worker } => {
                    bar.suspend(|| framepack_cli::say!("job {job} started over on {worker} (delivery {attempt})"));
                }
                JobEvent::Progress { section, sections, step, steps, eta, .. } => {
                    bar.set_position((section * steps + step) as u64);
                    bar.set_message(format!("section {}/{sections} step {step}/{steps}  ETA {}", section + 1, fmt_duration(eta)));
                }
                JobEvent::Frame { index, frame } => {
                    let w = writer.as_mut().ok_or_else(|| invalid("remote", "a frame came before the job started"))?;
                    w.push_frame(index, frame)?;
                }
                JobEvent::Section { index, sections, frames } => {
                    bar.suspend(|| framepack_cli::say!("section {}/{sections}: final frames {frames:?}", index + 1));
                }
                JobEvent::Finished => break,
                JobEvent::Failed { kind, message } => {
                    return Err(invalid("remote", format!("the worker failed the job ({kind:?}): {message}")));
                }
                JobEvent::Cancelled => return Err(invalid("remote", format!("job {job} was cancelled"))),
            }
        }
        bar.finish_and_clear();
        writer.ok_or_else(|| invalid("remote", "the job ended before it started"))?.finish()?;
        framepack_cli::say!(
            "wrote {total} frames ({:.2} s) to {} in {:.1} s",
            total as f64 / FPS,
            args.out.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}
