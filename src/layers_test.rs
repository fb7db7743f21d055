//! The folders of `src/` depend on each other in one direction: this test reads the sources and
//! fails on a cycle between folders, or on a core folder that uses the nginx shell.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// `crate::NAME` uses in the code (not the comments) of every file under `dir`.
fn uses(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            uses(&path, out);
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
}

#[test]
fn folders_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut used = BTreeSet::new();
        uses(&path, &mut used);
        used.remove(&name);
        graph.insert(name, used);
    }
    assert!(graph.contains_key("shell") && graph.contains_key("balance"));
    for (folder, used) in &graph {
        if folder != "shell" {
            assert!(
                !used.contains("shell"),
                "core folder {folder} uses the shell"
            );
        }
    }
    // No cycle: repeatedly remove folders that use no remaining folder.
    let mut left = graph.clone();
    while !left.is_empty() {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, used)| used.iter().all(|u| !left.contains_key(u)))
            .map(|(f, _)| f.clone())
            .collect();
        assert!(!leaves.is_empty(), "folders that use each other: {left:?}");
        for f in leaves {
            left.remove(&f);
        }
    }
}
