//! The processes the soak runs and breaks: a private PostgreSQL cluster, the SMTP sink, the
//! Redis Sentinel set-up (through `scripts/redis-sentinel.sh`) and the service replicas.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn wait_for_port(port: u16, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within {limit:?}")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A throwaway PostgreSQL cluster on a spare port (never the shared 5432 one, which other
/// suites use: restarting it is one of the faults). Run as `postgres` when we are root.
pub struct Postgres {
    bin: PathBuf,
    base: PathBuf,
    pub port: u16,
    running: bool,
}

impl Postgres {
    pub fn start(work: &Path) -> Result<Self> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .context("no PostgreSQL under /usr/lib/postgresql; run scripts/test-services.sh")?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .collect();
        versions.sort();
        let bin = versions.pop().context("initdb and pg_ctl not found")?;
        let base = work.join("postgres");
        std::fs::create_dir_all(&base)?;
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&base)
                .status()?;
            anyhow::ensure!(status.success(), "chown {}", base.display());
        }
        let mut server = Self {
            bin,
            base,
            port: free_port()?,
            running: false,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    fn data(&self) -> String {
        self.base.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.base)
            .output()
            .with_context(|| format!("running {program}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    pub fn start_again(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.base.display()
        );
        let log = self.base.join("log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        self.running = true;
        wait_for_port(self.port, "PostgreSQL", Duration::from_secs(20))
    }

    pub fn stop(&mut self) -> Result<()> {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])?;
        self.running = false;
        Ok(())
    }

    /// One SQL query through `psql`, rows as `|`-separated fields.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U", "postgres", "-d", "postgres", "-At", "-F", "|", "-c", sql,
            ])
            .output()
            .context("running psql")?;
        anyhow::ensure!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('|').map(str::to_owned).collect())
            .collect())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// The aiosmtpd sink (`tests/support/smtp_sink.py`). Every start writes to a fresh directory:
/// the sink numbers messages from 1, so a restarted one would overwrite the last one's files.
pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    root: PathBuf,
    generation: usize,
}

impl SmtpSink {
    pub fn start(work: &Path) -> Result<Self> {
        let mut sink = Self {
            child: None,
            port: free_port()?,
            root: work.join("mail"),
            generation: 0,
        };
        sink.start_again()?;
        Ok(sink)
    }

    pub fn start_again(&mut self) -> Result<()> {
        self.generation += 1;
        let dir = self.root.join(self.generation.to_string());
        std::fs::create_dir_all(&dir)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("python3 with aiosmtpd (pip install aiosmtpd)")?;
        self.child = Some(child);
        wait_for_port(self.port, "the SMTP sink", Duration::from_secs(15))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every stored message so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        for generation in 1..=self.generation {
            let Ok(entries) = std::fs::read_dir(self.root.join(generation.to_string())) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "eml")
                    && let Ok(bytes) = std::fs::read(&path)
                {
                    messages.push(bytes);
                }
            }
        }
        messages
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Sentinel set-up started by `scripts/soak.sh` (same env vars as the script).
pub struct Sentinel {
    pub url: String,
}

impl Sentinel {
    fn script(action: &str) -> Result<String> {
        let output = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/redis-sentinel.sh"
            ))
            .arg(action)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "redis-sentinel.sh {action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    pub fn kill_master(&self) -> Result<String> {
        Self::script("kill-master")
    }

    pub fn master(&self) -> Result<String> {
        Self::script("master")
    }

    /// Brings back what is down (the killed node rejoins as a replica).
    pub fn heal(&self) -> Result<()> {
        Self::script("start").map(|_| ())
    }
}

/// One service process.
pub struct Replica {
    pub index: usize,
    pub port: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    bin: PathBuf,
    log: PathBuf,
}

impl Replica {
    pub fn new(index: usize, bin: &Path, work: &Path, env: Vec<(String, String)>) -> Result<Self> {
        Ok(Self {
            index,
            port: free_port()?,
            child: None,
            env,
            bin: bin.to_owned(),
            log: work.join(format!("replica-{index}.log")),
        })
    }

    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RECOVERY_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        wait_for_port(self.port, "a service replica", Duration::from_secs(60))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(self.pid()?)
    }

    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(25);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
