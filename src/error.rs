//! Failures and the exit codes they map to (documented in the README).
//!
//! Unattended runs (CI, cron) branch on the exit code, so each class of failure has its own.

use std::fmt;

pub type Result<T> = std::result::Result<T, Failure>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Anything unexpected (I/O, a bug).
    Internal = 1,
    /// Invalid pipeline, registry or command line.
    Config = 2,
    /// Missing or bad data.
    Data = 3,
    /// Training produced a non-finite loss.
    Diverged = 4,
    /// A quality gate failed (the report is complete).
    GateFailed = 5,
    /// Another live run holds the run directory's lock (EX_TEMPFAIL: try again later).
    Locked = 75,
    /// Interrupted (Ctrl-C / SIGTERM).
    Interrupted = 130,
}

impl ExitCode {
    /// The code a process exited with (a Slurm job's), as ours; unknown codes are internal.
    pub fn from_code(code: i32) -> ExitCode {
        match code {
            2 => ExitCode::Config,
            3 => ExitCode::Data,
            4 => ExitCode::Diverged,
            5 => ExitCode::GateFailed,
            75 => ExitCode::Locked,
            130 | 143 => ExitCode::Interrupted,
            _ => ExitCode::Internal,
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
    pub fn config(m: impl Into<String>) -> Self {
        Failure::new(ExitCode::Config, m)
    }
    pub fn data(m: impl Into<String>) -> Self {
        Failure::new(ExitCode::Data, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Failure::new(ExitCode::Internal, m)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Failure>() {
            Ok(f) => f,
            Err(e) => Failure::internal(format!("{e:#}")),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::internal(e.to_string())
    }
}
