//! The crate's layers import in one direction only (see `src/lib.rs`):
//! `model` <- `build` <- `client` <- `reconcile` <- `runtime`. This test
//! reads the sources and fails on an import against that direction, and on
//! a pure layer that could reach the API server.

use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["model", "build", "client", "reconcile", "runtime"];

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

/// The layers that `crate::<layer>` paths in `text` name.
fn layers_named(text: &str) -> Vec<&'static str> {
    LAYERS
        .into_iter()
        .filter(|layer| text.contains(&format!("crate::{layer}::")))
        .collect()
}

#[test]
fn layers_import_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "{layer} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable source");
            for named in layers_named(&text) {
                let named_rank = LAYERS.iter().position(|l| *l == named).unwrap_or(0);
                if named_rank > rank {
                    wrong.push(format!("{} imports {named}", file.display()));
                }
            }
            if rank <= 1 {
                for reach in ["kube::Client", "Api<", ".await", "tokio::"] {
                    if text.contains(reach) {
                        wrong.push(format!("{} ({layer}) uses {reach}", file.display()));
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
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
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
