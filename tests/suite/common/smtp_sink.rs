//! A real SMTP server for tests: aiosmtpd, started by `tests/support/smtp_sink.py`, which
//! stores each message it accepts as `<n>.eml` in a scratch directory.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const USER: &str = "mailer";
pub const PASSWORD: &str = "s3cret-p@ss:word";

/// A scratch directory removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "smtp-notifier-test-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `smtp_sink.py`, killed on drop so a failing test leaves no server behind.
pub struct Sink {
    child: Child,
    pub port: u16,
    maildrop: ScratchDir,
}

#[derive(Default)]
pub struct SinkOptions {
    pub auth: bool,
    pub starttls: Option<(PathBuf, PathBuf)>,
    pub implicit_tls: Option<(PathBuf, PathBuf)>,
    pub stall_first_data: Option<Duration>,
    /// Listen on this port instead of a free one (to restart a sink where the last one was).
    pub port: Option<u16>,
    /// Refuse every recipient with a 550 reply that echoes the address in several spellings.
    pub reject_recipients: bool,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn require_aiosmtpd() {
    let status = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        _ => panic!(
            "these tests need a real SMTP server: `python3 -c 'import aiosmtpd'` failed. \
             Install it with `pip install aiosmtpd` (scripts/test-services.sh does)."
        ),
    }
}

/// A port nobody listens on right now: bind port 0, note the port, release it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sink {
    pub fn start(options: SinkOptions) -> Self {
        require_aiosmtpd();
        let maildrop = ScratchDir::new("maildrop");
        let port = options.port.unwrap_or_else(free_port);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(maildrop.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if options.auth {
            command.arg("--auth").arg(format!("{USER}:{PASSWORD}"));
        }
        if let Some((cert, key)) = &options.starttls {
            command.arg("--starttls").arg(cert).arg(key);
        }
        if let Some((cert, key)) = &options.implicit_tls {
            command.arg("--implicit-tls").arg(cert).arg(key);
        }
        if options.reject_recipients {
            command.arg("--reject-recipients");
        }
        if let Some(stall) = options.stall_first_data {
            command
                .arg("--stall-first-data")
                .arg(stall.as_secs_f64().to_string());
        }
        let child = command.spawn().expect("python3 runs");
        let mut sink = Sink {
            child,
            port,
            maildrop,
        };
        sink.wait_until_listening();
        sink
    }

    pub fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the SMTP sink exited ({status}) before listening:\n{stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink did not listen on port {} in time",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The messages stored so far, in arrival order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(self.maildrop.path())
            .unwrap()
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let number = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse()
                    .ok()?;
                Some((number, path))
            })
            .collect();
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| std::fs::read(path).unwrap())
            .collect()
    }

    /// The client port each message came from, in the order they were accepted: one port per
    /// connection, so equal ports mean a reused connection.
    pub fn peer_ports(&self) -> Vec<u16> {
        (1..=self.messages().len())
            .map(|n| {
                let peer = std::fs::read_to_string(self.maildrop.path().join(format!("{n}.peer")))
                    .unwrap();
                peer.split_whitespace().nth(1).unwrap().parse().unwrap()
            })
            .collect()
    }

    /// Where the sink stores messages (`<n>.eml`).
    pub fn maildrop(&self) -> &Path {
        self.maildrop.path()
    }

    pub fn url(&self, scheme_and_credentials: &str, query: &str) -> String {
        format!("{scheme_and_credentials}127.0.0.1:{}{query}", self.port)
    }
}
