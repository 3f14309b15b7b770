//! The node's and the operator's imports point down the layers that
//! ARCHITECTURE.md draws (see `raftkv_tests::layering`).

use std::path::Path;

use raftkv_tests::layering::{crate_paths, module_references, sibling_cycles, upward_imports};

fn src(krate: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

fn assert_down(krate: &str, layers: &[&[&str]], open: &[&str]) {
    let upward = upward_imports(&src(krate), layers, open);
    assert!(
        upward.is_empty(),
        "{krate}: imports that do not point down the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_operator_imports_point_down_the_layers() {
    // The crate root's Error is open to every layer.
    assert_down(
        "operator",
        &[
            &["crd", "naming", "metrics", "leader_election"],
            &["membership", "volumes", "certificates", "cron"],
            &[
                "resources",
                "recovery",
                "snapshots",
                "rollout",
                "maintenance",
            ],
            &["status", "members"],
            &["controller"],
        ],
        &["Error", "kube_err"],
    );
}

#[test]
fn the_node_imports_point_down_the_layers() {
    assert_down(
        "node",
        &[
            &["proto", "metrics", "restart", "tls"],
            &["errors", "raft"],
            &["store", "config"],
            &[
                "epoch",
                "removal",
                "incarnation",
                "backup",
                "recovery",
                "auth",
                "lease",
                "watch",
            ],
            &["transport"],
            &["node"],
            &["http", "cli"],
            &["api"],
            &["server"],
        ],
        &[],
    );
}

#[test]
fn crate_paths_reads_groups_and_nested_groups() {
    let source = "use crate::crd::X;\nuse crate::{a::{b, c}, d,\n e};\nlet y = crate::f::g();";
    let found: Vec<String> = crate_paths(source).into_iter().collect();
    assert_eq!(found, ["a", "crd", "d", "e", "f"]);
}

#[test]
fn no_folder_of_the_node_or_the_operator_has_an_import_cycle() {
    for krate in ["node", "operator"] {
        let cycles = sibling_cycles(&src(krate));
        assert!(
            cycles.is_empty(),
            "{krate}: sibling modules that import each other:\n{}",
            cycles.join("\n")
        );
    }
}

#[test]
fn sibling_cycles_finds_a_cycle_through_super_and_crate_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("apply")).unwrap();
    let write = |path: &str, text: &str| std::fs::write(dir.path().join(path), text).unwrap();
    write("lib.rs", "pub mod store;");
    write(
        "store/mod.rs",
        "pub mod apply; pub mod mvcc; pub mod txn; pub struct Db;",
    );
    write("store/mvcc.rs", "use super::{txn::Txn, Db};");
    write(
        "store/txn.rs",
        "use super::Db;\n#[cfg(test)]\nmod tests { use super::mvcc; }",
    );
    write("store/apply/mod.rs", "pub mod kv;");
    write("store/apply/kv.rs", "use crate::store::{apply, mvcc};");
    assert!(sibling_cycles(dir.path()).is_empty(), "no cycle yet");

    write(
        "store/txn.rs",
        "pub fn t() { crate::store::apply::kv::put(); }",
    );
    let cycles = sibling_cycles(dir.path());
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("store: apply <-> mvcc <-> txn ("),
        "{cycles:?}"
    );
}

#[test]
fn module_references_resolves_super_self_and_groups() {
    let here = ["store".to_string(), "apply".to_string()];
    let code =
        "use super::super::raft::{self, Member as M, log::{Entry}};\nlet x = self::kv::put();";
    let found: Vec<String> = module_references(code, &here)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "raft",
            "raft::Member",
            "raft::log::Entry",
            "store::apply::kv::put"
        ]
    );
}
