//! Where the executables under test live.
//!
//! The tests never build anything themselves: on stable cargo an integration test
//! cannot ask for another package's binary, so `raftkv` is built beforehand and
//! found next to the test executable. `etcdctl` is Debian's, installed by the
//! project's test command; a missing one is a broken setup, so it fails loudly
//! rather than skipping the tests that need it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The `raftkv` binary: `$RAFTKV_BIN` if set, else `<dir of the test exe>/../raftkv`.
///
/// Test executables live in `target/<profile>/deps/`, the binary in `target/<profile>/`.
pub fn raftkv_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RAFTKV_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("RAFTKV_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the running test executable")?;
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile_dir| profile_dir.join("raftkv"))
        .with_context(|| format!("test executable {} has no grandparent dir", exe.display()))?;
    if !candidate.is_file() {
        bail!(
            "raftkv binary not found at {}: run `cargo build -p raftkv-node --bin raftkv` first \
             (with the same CARGO_TARGET_DIR and profile as the tests), or set RAFTKV_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// The `etcdctl` binary: `/usr/bin/etcdctl`, else the first `etcdctl` on `PATH`.
pub fn etcdctl_bin() -> Result<PathBuf> {
    let debian = PathBuf::from("/usr/bin/etcdctl");
    if debian.is_file() {
        return Ok(debian);
    }
    if let Some(found) = on_path("etcdctl") {
        return Ok(found);
    }
    bail!(
        "etcdctl not found in /usr/bin or on PATH: install Debian's `etcd-client` package \
         (apt-get install -y etcd-client); the README's test command installs it, \
         so its absence means the test setup is broken"
    )
}

/// The `helm` (3.x) binary: the copy `.ci/chart-checks` installs in
/// `$RAFTKV_TOOLS_DIR` (default `~/.cache/raftkv/tools`), else `helm` on `PATH`.
pub fn helm_bin() -> Result<PathBuf> {
    let tools = std::env::var_os("RAFTKV_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/raftkv/tools")));
    if let Some(cached) = tools.map(|t| t.join("helm-v3.17/helm")) {
        if cached.is_file() {
            return Ok(cached);
        }
    }
    if let Some(found) = on_path("helm") {
        return Ok(found);
    }
    bail!(
        "helm not found in ~/.cache/raftkv/tools/helm-v3.17 or on PATH: `.ci/chart-checks` \
         installs it (the README's test command runs it before the tests)"
    )
}

/// The first file named `name` in a `PATH` directory.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
