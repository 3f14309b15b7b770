//! The kind end-to-end suite (tests/e2e/run.sh) as a cargo test.
//!
//! The script decides for itself whether it can run: without docker, kind,
//! kubectl, helm and etcdctl, or without a Docker engine that answers, it prints
//! one line naming what is missing and exits 0, and this test passes as skipped
//! (run with `-- --nocapture` to see the line).

use std::path::Path;
use std::process::Command;

#[test]
fn kind_e2e() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{} failed ({}); the diagnostics directory is named in its output above",
        script.display(),
        output.status
    );
}
