//! Imports point one way: down the layers ARCHITECTURE.md draws for a crate.
//! A module may use a module of a lower layer, never one of its own layer or
//! above (which is how import cycles start). `tests/tests/layering.rs` holds
//! the node and the operator to their pictures with [`upward_imports`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every import in the crate under `src` that does not point down `layers`
/// (lowest first, by top-level module), as "file uses crate::module"; items
/// of the crate root named in `open` may be used by any module. Panics on a
/// module that has no layer: a new module must be placed in the picture.
pub fn upward_imports(src: &Path, layers: &[&[&str]], open: &[&str]) -> Vec<String> {
    let layer = |module: &str| layers.iter().position(|l| l.contains(&module));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src).expect("under src");
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
            panic!("module {module} ({relative:?}) has no layer in the test and ARCHITECTURE.md")
        });
        // Doc links may point anywhere; code may not.
        let source: String = std::fs::read_to_string(file)
            .expect("reading a source file")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for target in crate_paths(&source) {
            if target == module || open.contains(&target.as_str()) {
                continue;
            }
            match layer(&target) {
                Some(l) if l < own => {}
                _ => upward.push(format!("{} uses crate::{target}", relative.display())),
            }
        }
    }
    upward
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading a src directory") {
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
pub fn crate_paths(source: &str) -> BTreeSet<String> {
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

/// Import cycles between sibling modules anywhere under `src` (say
/// `store/mvcc.rs` using `super::txn` while `store/txn.rs` uses
/// `crate::store::mvcc`), each as "parent: a -> b -> a (file uses path, …)".
/// [`upward_imports`] orders the crate's top-level modules; this keeps every
/// folder below them free of cycles too. A module's own `#[cfg(test)]` tail
/// is not read: its `super::` means the module itself.
pub fn sibling_cycles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_path(f.strip_prefix(src).expect("under src")))
        .collect();
    // Edges between children of one parent module: parent -> (from, to) -> evidence.
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<(String, String), String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(src).expect("under src");
        let here = module_path(relative);
        let text = std::fs::read_to_string(file).expect("reading a source file");
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for target in module_references(&code, &here) {
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(from), Some(to)) = (here.get(common), target.get(common)) else {
                continue; // a module using its own ancestor or descendant
            };
            let parent = here[..common].to_vec();
            let mut sibling = parent.clone();
            sibling.push(to.clone());
            if !modules.contains(&sibling) {
                continue; // an item of the parent module, not a sibling
            }
            graphs
                .entry(parent)
                .or_default()
                .entry((from.clone(), to.clone()))
                .or_insert_with(|| format!("{} uses {}", relative.display(), target.join("::")));
        }
    }
    let mut cycles = Vec::new();
    for (parent, edges) in &graphs {
        for component in strongly_connected(edges) {
            let evidence: Vec<&str> = edges
                .iter()
                .filter(|((a, b), _)| component.contains(a) && component.contains(b))
                .map(|(_, e)| e.as_str())
                .collect();
            cycles.push(format!(
                "{}: {} ({})",
                if parent.is_empty() {
                    "crate".to_string()
                } else {
                    parent.join("::")
                },
                component.iter().cloned().collect::<Vec<_>>().join(" <-> "),
                evidence.join("; ")
            ));
        }
    }
    cycles
}

/// The module a file under src defines: `store/apply/mod.rs` is
/// `[store, apply]`, `lib.rs` the crate root `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.trim_end_matches(".rs").to_string())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod")) {
        path.pop();
    }
    if path.len() == 1 && (path[0] == "lib" || path[0] == "main") {
        path.clear();
    }
    path
}

/// Every path the code of module `here` names through `crate::`, `super::`
/// or `self::`, resolved to an absolute module path (use groups expanded).
pub fn module_references(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let starts_word = at == 0 || !is_ident(bytes[at - 1] as char) && bytes[at - 1] != b'$';
        let root = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|r| starts_word && code[at..].starts_with(r));
        let Some(root) = root else {
            at += 1;
            continue;
        };
        let mut base: Vec<String> = match root {
            "crate::" => Vec::new(),
            "super::" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => here.to_vec(),
        };
        at += root.len();
        while code[at..].starts_with("super::") {
            base.pop();
            at += "super::".len();
        }
        let (paths, end) = use_tree(code, at);
        at = end.max(at + 1);
        for path in paths {
            let mut full = base.clone();
            full.extend(path.into_iter().filter(|s| s != "self"));
            found.push(full);
        }
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths of one use tree starting at `at` (`a::b`, `a::{b, c::{d}}`),
/// each cut at its first non-identifier, and where the tree ends.
fn use_tree(code: &str, mut at: usize) -> (Vec<Vec<String>>, usize) {
    at += code[at..].len() - code[at..].trim_start().len();
    if code[at..].starts_with('{') {
        let mut paths = Vec::new();
        at += 1;
        loop {
            let (entry, end) = use_tree(code, at);
            paths.extend(entry);
            // Past an `as` rename or anything else, to the next entry.
            at = end;
            while at < code.len() && !code[at..].starts_with([',', '}']) {
                at += code[at..].chars().next().map_or(1, char::len_utf8);
            }
            if at >= code.len() || code[at..].starts_with('}') {
                return (paths, (at + 1).min(code.len()));
            }
            at += 1;
        }
    }
    let len = code[at..]
        .find(|c: char| !is_ident(c))
        .unwrap_or(code.len() - at);
    let ident = code[at..at + len].to_string();
    at += len;
    if ident.is_empty() {
        return (Vec::new(), at);
    }
    if code[at..].starts_with("::") {
        let (rest, end) = use_tree(code, at + 2);
        if rest.is_empty() {
            return (vec![vec![ident]], end);
        }
        let paths = rest
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect();
        return (paths, end);
    }
    (vec![vec![ident]], at)
}

/// The strongly connected components of more than one node (Tarjan).
fn strongly_connected(edges: &BTreeMap<(String, String), String>) -> Vec<BTreeSet<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    struct Walk<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        for &u in &w.next[v] {
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v, low);
            } else if w.stack.contains(&u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = BTreeSet::new();
            while let Some(u) = w.stack.pop() {
                component.insert(u.to_string());
                if u == v {
                    break;
                }
            }
            if component.len() > 1 {
                w.out.push(component);
            }
        }
    }
    let mut walk = Walk {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for &v in next.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.out
}
