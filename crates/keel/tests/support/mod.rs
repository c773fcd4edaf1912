//! Running the `keel` binary, shared by the CLI tests that check its verdicts.

use std::process::{Command, Output};

/// keel's output, help wrapped at one width whatever terminal runs the tests.
pub fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel")).args(args).env("COLUMNS", "100").output().unwrap()
}

/// The output of a run that must succeed.
pub fn stdout_of(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The error message of a run that must fail with status 1 (bad arguments or failure).
pub fn failure_of(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected a failure: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).to_string()
}
