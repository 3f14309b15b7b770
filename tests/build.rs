//! Builds the LD_PRELOAD shim behind the harness's power cuts
//! (`src/fault/power_cut_shim.c`, see `src/fault/power_cut.rs`) with the C
//! compiler RocksDB's build already needs, and tells the harness where it is.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/fault/power_cut_shim.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("libpower_cut_shim.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(source)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {compiler:?}: {e}"));
    assert!(status.success(), "{compiler} could not build {source}");
    println!("cargo:rustc-env=POWER_CUT_SHIM={}", out.display());
}
