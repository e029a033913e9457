//! Helpers shared by the CLI integration tests: a fresh temp folder, running the built binary,
//! and checking its success or its one-line error.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh, empty folder `simlearn-<suite>-<pid>-<name>` under the temp dir.
pub fn dir(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `simlearn` binary with `args`.
pub fn simlearn(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simlearn"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

/// Its stdout, after asserting that it succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Its stdout as JSON, after asserting that it succeeded.
pub fn json_ok(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// A one-line error on stderr and a non-zero exit.
pub fn fails_with(out: &Output, needles: &[&str]) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} lacks {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
