//! The shape of the source tree (docs/architecture.md): the modules of `src/` form layers whose
//! imports only point down, no source file grows past the size a reader takes in at once, and
//! every section of docs/protocol.md that the code and the tests cite exists.
//!
//! This reads the sources as text. A module is one file (`a/b.rs` or `a/b/mod.rs` is `a::b`);
//! its edges are the `crate::`, `super::` and `self::` paths in its code (comments and test
//! modules left out), each resolved to the deepest module it names. A path that names an item
//! of an enclosing module (`super::Limits`) is an edge to that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest production source file, in lines (docs/architecture.md, "House rules").
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` are the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Test-only files: unit tests kept beside their module, and their helpers.
fn is_test_file(file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy();
    let in_tests_dir = file
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "tests");
    in_tests_dir || name == "tests.rs" || name.ends_with("_tests.rs") || name == "testutil.rs"
}

/// The code of a file without comments, string literals and its `#[cfg(test)]` items: a
/// `mod x;` line after the attribute is left out, and an inline `mod tests { .. }` ends the
/// production code of the file (test modules come last, as rustfmt and the house style have).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_cfg_test = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            after_cfg_test = true;
            continue;
        }
        if after_cfg_test {
            if trimmed.starts_with("#[") || trimmed.is_empty() {
                continue;
            }
            after_cfg_test = false;
            if trimmed.ends_with('{') {
                break;
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(&strip_strings(code));
        out.push('\n');
    }
    out
}

fn strip_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            continue;
        }
        out.push(c);
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand_into(&tree, "", &mut out);
    out
}

fn expand_into(tree: &str, prefix: &str, out: &mut Vec<String>) {
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or(tree);
            out.push(format!("{prefix}{path}"));
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut items = Vec::new();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            for item in items.into_iter().filter(|i| !i.is_empty()) {
                expand_into(item, &format!("{prefix}{head}"), out);
            }
        }
    }
}

/// Every path in the code that starts at `crate`, `super` or `self`.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` statements, braces expanded.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            rest = after;
            continue;
        }
        let end = after.find(';').unwrap_or(after.len());
        paths.extend(expand_use(&after[..end]));
        rest = &after[end..];
    }
    // Paths written inline (`crate::a::b::f()`).
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            if at > 0 && bytes[at - 1] == b':' {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            paths.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    paths
}

/// Paths in the code that start with the name of one of `children` (`resolve::Endpoint` in
/// `upstream/mod.rs`), outside `use` statements, which [`paths_in`] already expands.
fn child_paths_in(code: &str, children: &[String]) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for child in children {
        let needle = format!("{child}::");
        let mut from = 0;
        while let Some(i) = code[from..].find(&needle) {
            let at = from + i;
            from = at + needle.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':')
            {
                continue;
            }
            paths.push(child.clone());
        }
    }
    paths
}

/// Resolves a path written in `module` to the deepest known module it names.
fn resolve(path: &str, module: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segs.first()? {
        &"crate" => Vec::new(),
        &"self" => module.to_vec(),
        &"super" => {
            let mut b = module.to_vec();
            b.pop();
            while segs.get(1) == Some(&"super") {
                segs.remove(1);
                b.pop();
            }
            b
        }
        // A path relative to the module (edition 2018): `child::Item` names a child module.
        first => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            segs.insert(0, "self");
            module.to_vec()
        }
    };
    for seg in &segs[1..] {
        let mut next = base.clone();
        next.push(seg.to_string());
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

struct Tree {
    /// Module -> modules it uses.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    /// Every source file (tests included) and its line count.
    lines: Vec<(PathBuf, usize)>,
}

fn read_tree() -> Tree {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        lines.push((file.clone(), text.lines().count()));
    }
    files.retain(|f| !is_test_file(f) && f.file_name().unwrap() != "main.rs");
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let module = module_of(&src, file);
        let children: Vec<String> = modules
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let code = code_of(&text);
        let mut paths = paths_in(&code);
        paths.extend(child_paths_in(&code, &children));
        let used: BTreeSet<Vec<String>> = paths
            .iter()
            .filter_map(|p| resolve(p, &module, &modules))
            // Paths into the module itself, and `crate::` alone, are no edge. A parent's
            // `pub mod child;` is a declaration and no edge either (it is not a path); a
            // parent that names its child's items does use it.
            .filter(|m| *m != module && !m.is_empty())
            .collect();
        edges.insert(module, used);
    }
    Tree { edges, lines }
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The cycles among modules, each as the list of modules on it (Tarjan's strongly connected
/// components of more than one module).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a [String], usize>,
        low: BTreeMap<&'a [String], usize>,
        stack: Vec<&'a [String]>,
        on_stack: BTreeSet<&'a [String]>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a [String]) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                let w: &'a [String] = s.edges.get_key_value(w).map_or(&[][..], |(k, _)| k);
                if w.is_empty() {
                    continue;
                }
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on_stack.remove(w);
                component.push(name(w));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_slice()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn src_modules_have_no_import_cycle() {
    let tree = read_tree();
    assert!(
        tree.edges.len() > 20,
        "the scan found too few modules: {:?}",
        tree.edges.keys().collect::<Vec<_>>()
    );
    let found = cycles(&tree.edges);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&String> = c.iter().collect();
            let arrows: Vec<String> = tree
                .edges
                .iter()
                .filter(|(from, _)| members.contains(&name(from)))
                .flat_map(|(from, to)| {
                    to.iter()
                        .filter(|t| members.contains(&name(t)))
                        .map(move |t| format!("{} -> {}", name(from), name(t)))
                })
                .collect();
            format!(
                "cycle through {}:\n    {}",
                c.join(", "),
                arrows.join("\n    ")
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles in src/:\n{}",
        report.join("\n")
    );
}

#[test]
fn top_level_modules_use_only_those_declared_before_them_in_lib_rs() {
    // src/lib.rs lists the layers bottom-up; docs/architecture.md has the same order.
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.split(';').next().unwrap_or_default().trim().to_string())
        .collect();
    assert!(order.len() > 5, "no module list found in src/lib.rs");
    let rank = |m: &str| order.iter().position(|o| o == m);
    let tree = read_tree();
    let mut upward = Vec::new();
    for (from, targets) in &tree.edges {
        for to in targets {
            let (Some(f), Some(t)) = (from.first(), to.first()) else {
                continue;
            };
            if f == t {
                continue;
            }
            if let (Some(rf), Some(rt)) = (rank(f), rank(t)) {
                if rt > rf {
                    upward.push(format!("{} -> {}", name(from), name(to)));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that use a layer listed after them in src/lib.rs: {upward:#?}"
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The check itself: two modules that use each other are reported.
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let c = vec!["c".to_string()];
    let mut edges = BTreeMap::new();
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([a.clone(), c.clone()]));
    edges.insert(c.clone(), BTreeSet::new());
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
    edges.get_mut(&b).unwrap().remove(&a);
    assert!(cycles(&edges).is_empty());
}

#[test]
fn use_trees_and_inline_paths_are_read() {
    let code = "use super::{ns::OuterScope, scan::{Scan, Observer}};\nfn f() { crate::metrics::METRICS.x(); }\n";
    let paths = paths_in(code);
    assert!(
        paths.contains(&"super::ns::OuterScope".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"super::scan::Observer".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"crate::metrics::METRICS".to_string()),
        "{paths:?}"
    );
}

#[test]
fn no_source_file_is_over_the_size_limit() {
    let tree = read_tree();
    let long: Vec<String> = tree
        .lines
        .iter()
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split these by job (limit {MAX_LINES} lines): {long:?}"
    );
}

/// The sections of docs/protocol.md cited in src/ and tests/ (`docs/protocol.md §N`).
fn cited_sections() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    let mut cited = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for marker in ["protocol.md §"] {
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if !n.is_empty() {
                    cited.insert(n);
                }
            }
        }
    }
    cited
}

#[test]
fn every_cited_protocol_section_exists() {
    let doc =
        std::fs::read_to_string(root().join("docs/protocol.md")).expect("docs/protocol.md exists");
    let headings: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|h| h.split('.').next())
        .map(|n| n.trim().to_string())
        .collect();
    let cited = cited_sections();
    assert!(!cited.is_empty(), "no citation found: the scan is broken");
    let missing: Vec<&String> = cited.iter().filter(|n| !headings.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "cited but not in docs/protocol.md: §{missing:?}"
    );
}

#[test]
fn the_repository_links_only_inside_itself() {
    // Every relative link of the top-level documents and docs/ points at a file or folder of
    // this repository; web links are for the outside world (RFCs, localhost pages).
    let root = root().canonicalize().expect("repository root");
    let mut docs = vec![
        root.join("README.md"),
        root.join("CONTRIBUTING.md"),
        root.join("CHANGELOG.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut broken = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("readable doc");
        assert!(
            !text.contains("../shared"),
            "{} names ../shared",
            doc.display()
        );
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            // A reader may have only one folder of the repository at hand (docs/ on a web
            // page, say): links never climb out of the folder they are written in.
            if target.starts_with("../") {
                broken.push(format!("{}: {target}", doc.display()));
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let resolved = doc.parent().unwrap().join(path);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                _ => broken.push(format!("{}: {target}", doc.display())),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that leave the repository or lead nowhere: {broken:#?}"
    );
}
