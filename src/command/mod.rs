//! The commands, one module each: a thin function from typed arguments (parsed by clap in
//! [`crate::cli`] for `source-loop`, in [`tap`] for `tap-loop`) to an [`ExitStatus`].
//! Every command loads its input files through [`inputs`] (one loader, one typed error)
//! and ends with one of the statuses below, the same for both binaries (README: Exit
//! codes).
//!
//! A command reports its own errors the way its output expects (an Airbyte TRACE on
//! stdout and a line on stderr; a `tap-loop: …` line for Meltano; a `source-loop sync: …`
//! line), then returns the status; `main` only maps it to the process's exit code.

pub mod check;
pub mod discover;
pub mod inputs;
pub mod read;
pub mod reconcile;
pub mod serve;
pub mod spec;
pub mod sync;
pub mod tap;

use std::io;
use std::process::ExitCode;

use crate::event::FailureType;

/// How a command ended: the process's exit code, one table for every command and both
/// binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done (every stream completed; reconcile within tolerance; serve stopped by a
    /// signal), or the reader of stdout went away (`read | head` is not an error).
    Success,
    /// 1: the work started and failed (a stream, the API, the database, the journal):
    /// the error says what; the state saved so far resumes it.
    Failure,
    /// 2: nothing was done: a usage error or an input the user must fix (an option, the
    /// config, catalog or state file, the `--into` URL or the target's table layout).
    /// clap's own usage errors exit 2 as well.
    Usage,
    /// 3: reconcile found the journal and the API apart beyond the tolerance.
    DriftBeyondTolerance,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::DriftBeyondTolerance => 3,
        }
    }

    /// The status of an error that ended a command: a config error is the user's to fix
    /// before anything can run (2); any other is a failure to retry or report (1).
    pub fn of_error(failure: FailureType) -> ExitStatus {
        match failure {
            FailureType::Config => ExitStatus::Usage,
            FailureType::Transient | FailureType::System => ExitStatus::Failure,
        }
    }

    /// The status of a read that wrote to stdout: 0 when every stream completed, or
    /// when the reader closed stdout; 1 when a stream failed or stdout failed otherwise
    /// (the error is returned to be reported).
    pub fn of_stdout_read(all_ok: bool, output: io::Result<()>) -> (ExitStatus, Option<io::Error>) {
        match output {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => (ExitStatus::Success, None),
            Err(e) => (ExitStatus::Failure, Some(e)),
            Ok(()) if all_ok => (ExitStatus::Success, None),
            Ok(()) => (ExitStatus::Failure, None),
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// The status of writing a short command's output to stdout: a reader that went away is
/// not an error; any other failure is reported on stderr.
pub(crate) fn printed(result: io::Result<()>) -> ExitStatus {
    match result {
        Ok(()) => ExitStatus::Success,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitStatus::Success,
        Err(e) => {
            crate::output::error_line(&format!("cannot write to stdout: {e}"));
            ExitStatus::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_code_and_config_errors_before_a_run_are_usage() {
        let all = [
            ExitStatus::Success,
            ExitStatus::Failure,
            ExitStatus::Usage,
            ExitStatus::DriftBeyondTolerance,
        ];
        let codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
        assert_eq!(ExitStatus::of_error(FailureType::Config), ExitStatus::Usage);
        assert_eq!(
            ExitStatus::of_error(FailureType::Transient),
            ExitStatus::Failure
        );
        let gone = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(
            ExitStatus::of_stdout_read(false, Err(gone)).0,
            ExitStatus::Success
        );
        assert_eq!(
            ExitStatus::of_stdout_read(false, Ok(())).0,
            ExitStatus::Failure
        );
    }
}
