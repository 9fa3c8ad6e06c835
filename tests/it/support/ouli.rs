//! The real `ouli` binary: started with a config, ready once it printed
//! its ready line per endpoint (`ouli listening endpoint=<i> addr=<a>
//! mode=<m>`), stopped with SIGTERM. A test that fails leaves no process
//! behind: dropping an [`Ouli`] kills a child still running.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const OULI: &str = env!("CARGO_BIN_EXE_ouli");

/// How long a start may take to print its ready lines: far more than it
/// needs, so that only a hung start fails on it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SIGTERM may take before the process is killed: more than any
/// `shutdown_timeout_ms` the tests set.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the process's stderr (its log) goes.
#[derive(Clone, Debug)]
pub enum Log {
    /// Nowhere.
    Null,
    /// A file, created (emptied) at start.
    Create(PathBuf),
    /// A file, appended to (a second run in a dir adds to the first's).
    Append(PathBuf),
    /// A pipe read by a thread: handed over by [`Ouli::stop`], so that a
    /// file size limit on the process never applies to its log.
    Collect,
}

/// How to start the binary. [`Start::new`] gives the layout most tests use
/// (config `<dir>/ouli.yaml`, recordings in `<dir>/recordings`, the log
/// appended to `<dir>/ouli-<mode>.log`, beside the recording dir and never
/// in it); each method changes one thing.
#[derive(Clone, Debug)]
pub struct Start {
    program: PathBuf,
    mode: String,
    config: PathBuf,
    yaml: Option<String>,
    recording_dir: PathBuf,
    create_recording_dir: bool,
    global_args: Vec<OsString>,
    mode_args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    log: Log,
    stdout_copy: Option<PathBuf>,
    shell_prefix: Option<String>,
    endpoints: usize,
    current_dir: Option<PathBuf>,
}

impl Start {
    /// `ouli <mode>` in `dir` with `yaml` as its config.
    pub fn new(mode: &str, dir: &Path, yaml: &str) -> Start {
        Start {
            program: PathBuf::from(OULI),
            mode: mode.to_owned(),
            config: dir.join("ouli.yaml"),
            yaml: Some(yaml.to_owned()),
            recording_dir: dir.join("recordings"),
            create_recording_dir: false,
            global_args: Vec::new(),
            mode_args: Vec::new(),
            envs: Vec::new(),
            log: Log::Append(dir.join(format!("ouli-{mode}.log"))),
            stdout_copy: None,
            shell_prefix: None,
            endpoints: 1,
            current_dir: None,
        }
    }

    /// `ouli <mode>` with a config file already written (nothing is written).
    pub fn with_config_file(mode: &str, config: &Path, recording_dir: &Path) -> Start {
        let mut start = Start::new(mode, Path::new("."), "");
        start.config = config.to_owned();
        start.yaml = None;
        start.recording_dir = recording_dir.to_owned();
        start.log = Log::Null;
        start
    }

    /// Run this file instead of the built binary (a copy, a link).
    pub fn program(mut self, program: &Path) -> Start {
        self.program = program.to_owned();
        self
    }

    /// Write the config to `path` instead.
    pub fn config_at(mut self, path: &Path) -> Start {
        self.config = path.to_owned();
        self
    }

    pub fn recording_dir(mut self, dir: &Path) -> Start {
        self.recording_dir = dir.to_owned();
        self
    }

    /// Create the recording dir before start (replay wants it to exist).
    pub fn create_recording_dir(mut self) -> Start {
        self.create_recording_dir = true;
        self
    }

    /// An argument before the mode (`--log-level debug`).
    pub fn global_arg(mut self, arg: &str) -> Start {
        self.global_args.push(arg.into());
        self
    }

    /// An argument after the subcommand's own (`--tls-ca-out FILE`).
    pub fn mode_arg(mut self, arg: impl Into<OsString>) -> Start {
        self.mode_args.push(arg.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Start {
        self.envs.push((name.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, name: &str) -> Start {
        self.envs.push((name.into(), None));
        self
    }

    pub fn log(mut self, log: Log) -> Start {
        self.log = log;
        self
    }

    /// Everything stdout carries (the ready lines included) copied to `path`.
    pub fn stdout_to(mut self, path: &Path) -> Start {
        self.stdout_copy = Some(path.to_owned());
        self
    }

    /// Run under `sh -c '<prefix> exec ouli …'` (a `ulimit`, a `trap`): the
    /// shell execs the binary, so its pid is ouli's.
    pub fn shell_prefix(mut self, prefix: &str) -> Start {
        self.shell_prefix = Some(prefix.to_owned());
        self
    }

    /// How many ready lines to wait for (one per configured endpoint).
    pub fn endpoints(mut self, endpoints: usize) -> Start {
        self.endpoints = endpoints;
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Start {
        self.current_dir = Some(dir.to_owned());
        self
    }

    /// Starts it and waits for its ready lines; panics (with its log) when
    /// they do not come.
    pub fn spawn(self) -> Ouli {
        let what = format!("{} {}", self.program.display(), self.mode);
        self.try_spawn().unwrap_or_else(|failed| {
            panic!(
                "{what}: ready line {:?} ({:?}); log: {}",
                failed.line, failed.status, failed.log
            )
        })
    }

    /// [`Start::spawn`], or what it printed instead of a ready line, how it
    /// ended (it is killed if still running) and its log.
    pub fn try_spawn(self) -> Result<Ouli, Failed> {
        if let Some(yaml) = &self.yaml {
            std::fs::write(&self.config, yaml).unwrap();
        }
        if self.create_recording_dir {
            std::fs::create_dir_all(&self.recording_dir).unwrap();
        }
        let mut command = match &self.shell_prefix {
            Some(prefix) => {
                let mut shell = Command::new("/bin/sh");
                shell
                    .arg("-c")
                    .arg(format!("{prefix} exec \"$0\" \"$@\""))
                    .arg(&self.program);
                shell
            }
            None => Command::new(&self.program),
        };
        command
            .args(&self.global_args)
            .arg(&self.mode)
            .arg("--config")
            .arg(&self.config)
            .arg("--recording-dir")
            .arg(&self.recording_dir)
            .args(&self.mode_args);
        for (name, value) in &self.envs {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let stderr = match &self.log {
            Log::Null => Stdio::null(),
            Log::Create(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            Log::Append(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            Log::Collect => Stdio::piped(),
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.program.display()));
        let collected = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            })
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut copy = self
            .stdout_copy
            .as_ref()
            .map(|path| std::fs::File::create(path).unwrap());
        // Reads stdout to its end: the ready lines go to the channel, the
        // whole of it to the copy and back on join.
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(copy) = copy.as_mut() {
                    let _ = copy.write_all(line.as_bytes());
                }
                all.push_str(&line);
                let _ = ready_tx.send(line);
            }
            all
        });
        let mut ouli = Ouli {
            child,
            mode: self.mode.clone(),
            addr: String::new(),
            addrs: Vec::new(),
            ready_lines: Vec::new(),
            recording_dir: self.recording_dir.clone(),
            log: self.log.clone(),
            collected,
            stdout: Some(stdout),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        for endpoint in 0..self.endpoints {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = ready_rx.recv_timeout(wait).unwrap_or_default();
            let prefix = format!("ouli listening endpoint={endpoint} addr=");
            // `mode=` is the last field but for a TLS listener's
            // `tls=on [ca=FILE]`.
            let mode = format!("mode={}", self.mode);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mode_at = fields.iter().position(|field| *field == mode);
            let tail_ok = mode_at.is_some_and(|at| {
                fields[at + 1..]
                    .iter()
                    .all(|field| *field == "tls=on" || field.starts_with("ca="))
            });
            if !(line.starts_with(&prefix) && tail_ok) {
                let _ = ouli.child.kill();
                let status = ouli.child.wait().unwrap();
                return Err(Failed {
                    line,
                    status,
                    log: ouli.take_log(),
                });
            }
            let addr = line[prefix.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            ouli.addrs.push(addr);
            ouli.ready_lines.push(line.trim_end().to_owned());
        }
        ouli.addr = ouli.addrs.first().cloned().unwrap_or_default();
        Ok(ouli)
    }
}

/// A start that printed no ready line.
#[derive(Debug)]
pub struct Failed {
    /// What came instead (empty: nothing before the end).
    pub line: String,
    pub status: ExitStatus,
    pub log: String,
}

/// A running `ouli`.
pub struct Ouli {
    pub child: Child,
    pub mode: String,
    /// The first endpoint's address (`127.0.0.1:PORT`).
    pub addr: String,
    /// Every endpoint's address, in endpoint order.
    pub addrs: Vec<String>,
    pub recording_dir: PathBuf,
    /// Each endpoint's ready line, as printed.
    pub ready_lines: Vec<String>,
    log: Log,
    collected: Option<std::thread::JoinHandle<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// What a stopped `ouli` left: its exit status, its stdout (the ready lines
/// included) and its log.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub log: String,
}

impl Stopped {
    /// It exited 0; panics with its log otherwise.
    pub fn assert_success(&self) -> &Stopped {
        assert!(
            self.status.success(),
            "exit {:?}; log: {}",
            self.status,
            self.log
        );
        self
    }
}

impl Ouli {
    /// [`Start::new`] as it is.
    pub fn start(mode: &str, dir: &Path, yaml: &str) -> Ouli {
        Start::new(mode, dir, yaml).spawn()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log written so far (a file log only; a collected one comes with
    /// [`Ouli::stop`]).
    pub fn log(&self) -> String {
        match &self.log {
            Log::Create(path) | Log::Append(path) => {
                std::fs::read_to_string(path).unwrap_or_default()
            }
            Log::Null | Log::Collect => String::new(),
        }
    }

    pub fn log_path(&self) -> Option<&Path> {
        match &self.log {
            Log::Create(path) | Log::Append(path) => Some(path),
            Log::Null | Log::Collect => None,
        }
    }

    /// Still up: health answers (a real client), and the process runs.
    pub async fn assert_serving(&mut self) {
        super::client::assert_healthy(&self.addr).await;
        assert!(matches!(self.child.try_wait(), Ok(None)), "process exited");
    }

    /// Still up, asked over a bare socket (for a test without a runtime).
    pub fn assert_serving_raw(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "ouli exited");
        let answer = super::raw::exchange(
            &self.addr,
            b"GET /__ouli/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    /// `Ok` while the process runs, else how it ended.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the server exited: {status}")),
            Err(error) => Err(format!("the server cannot be waited on: {error}")),
        }
    }

    /// SIGTERM (every recording is closed), then waits up to
    /// [`STOP_TIMEOUT`]; past it, SIGKILL and a panic.
    pub fn stop(mut self) -> Stopped {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let log = self.take_log();
                panic!(
                    "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; log: {log}",
                    self.mode
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.finish(status)
    }

    /// SIGKILL (no recording is closed), and what it left.
    pub fn kill9(mut self) -> Stopped {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Stopped {
        let stdout = self
            .stdout
            .take()
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default();
        Stopped {
            status,
            stdout,
            log: self.take_log(),
        }
    }

    /// The log, from its file or (once the process is gone) its pipe.
    fn take_log(&mut self) -> String {
        match self.collected.take() {
            Some(thread) => thread.join().unwrap_or_default(),
            None => self.log(),
        }
    }
}

/// A test that fails (or never stops it) leaves no process running.
impl Drop for Ouli {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
