//! The shape of the code, checked: the top-level modules of every crate import each other
//! without a cycle, and the layers point one way (the loader and the input formats know
//! no front end; the front ends know no command). Reads the sources as text: `crate::x`
//! outside comments and test modules is an import of `x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the crate at `src` and the top-level modules it imports.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if ["lib", "main", "bin"].contains(&top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        edges.entry(top.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    edges
}

/// A path of imports from `from` back to itself, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == from {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_itself_back_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut crates = vec![root.join("src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        crates.push(entry.unwrap().path().join("src"));
    }
    for src in crates {
        let edges = imports(&src);
        for module in edges.keys() {
            assert_eq!(
                cycle(&edges, module),
                None,
                "an import cycle in {}",
                src.display()
            );
        }
    }
}

#[test]
fn the_loader_and_the_input_formats_know_no_front_end_and_front_ends_no_command() {
    let edges = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let uses = |module: &str, other: &str| edges.get(module).is_some_and(|e| e.contains(other));
    for layer in ["load", "formats", "sync", "run", "output", "event"] {
        for front_end in ["airbyte", "singer", "command", "cli"] {
            assert!(!uses(layer, front_end), "{layer} imports {front_end}");
        }
    }
    for front_end in ["airbyte", "singer"] {
        assert!(!uses(front_end, "command"), "{front_end} imports command");
        assert!(!uses(front_end, "cli"), "{front_end} imports cli");
    }
    assert!(
        !uses("airbyte", "singer") && !uses("singer", "airbyte"),
        "one front end imports the other"
    );
}
