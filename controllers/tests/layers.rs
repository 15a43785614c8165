//! The layers import in one direction only: `model` <- `build` (the crate
//! `nestor-model`, which has no client: the compiler keeps the API server
//! out of its reach) <- `client` <- `reconcile` <- `runtime` (this crate).
//! The crates' boundary holds the first line; this test reads the sources
//! and fails on an import against the direction inside each crate.

use std::path::{Path, PathBuf};

/// Each crate's layers, lowest first, and where its sources are.
const CRATES: [(&str, &[&str]); 2] = [
    ("model/src", &["model", "build"]),
    ("src", &["client", "reconcile", "runtime"]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn layers_import_in_one_direction() {
    let mut wrong = Vec::new();
    for (dir, layers) in CRATES {
        for (rank, layer) in layers.iter().enumerate() {
            let mut files = Vec::new();
            sources(&root().join(dir).join(layer), &mut files);
            assert!(!files.is_empty(), "{layer} has no sources");
            for file in files {
                let text = std::fs::read_to_string(&file).expect("a readable source");
                for higher in &layers[rank + 1..] {
                    let named = [format!("crate::{higher}::"), format!("crate::{higher}::{{")];
                    if named.iter().any(|n| text.contains(n.as_str()))
                        || text.contains(&format!("use crate::{higher};"))
                    {
                        wrong.push(format!("{} imports {higher}", file.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_long_without_a_reason() {
    let mut files = Vec::new();
    for (dir, _) in CRATES {
        sources(&root().join(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source");
        let lines = text.lines().count();
        let explained = text.lines().take(30).any(|l| l.contains("Longer than"));
        assert!(
            lines <= 650 || explained,
            "{} has {lines} lines and does not say at its top why",
            file.display()
        );
    }
}
