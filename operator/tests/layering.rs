//! Imports point one way: down the layers ARCHITECTURE.md draws for the
//! operator. A module may use a module of a lower layer, never one of its own
//! layer or above (which is how import cycles start). The crate root's
//! `Error` is open to all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The operator's modules, lowest layer first (ARCHITECTURE.md).
const LAYERS: &[&[&str]] = &[
    &["crd", "naming", "metrics"],
    &["resources", "membership"],
    &["recovery", "snapshots"],
    &["status", "members"],
    &["controller"],
];

/// Items of the crate root any module may use.
const ROOT_ITEMS: &[&str] = &["Error", "kube_err"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading operator/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segment of every `crate::...` path in `source`, braces
/// (`crate::{a, b::c}`) included.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group, up to its matching brace.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(segment(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(segment(rest));
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

fn segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
            .expect("a module name");
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| {
            panic!("module {module} ({relative:?}) has no layer in this test and ARCHITECTURE.md")
        });
        // Doc links may point anywhere; code may not.
        let source: String = std::fs::read_to_string(file)
            .expect("reading a source file")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for target in crate_paths(&source) {
            if target == module || ROOT_ITEMS.contains(&target.as_str()) {
                continue;
            }
            match layer(&target) {
                Some(l) if l < own => {}
                _ => upward.push(format!("{} uses crate::{target}", relative.display())),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn crate_paths_reads_groups_and_nested_groups() {
    let source = "use crate::crd::X;\nuse crate::{a::{b, c}, d,\n e};\nlet y = crate::f::g();";
    let found: Vec<String> = crate_paths(source).into_iter().collect();
    assert_eq!(found, ["a", "crd", "d", "e", "f"]);
}
