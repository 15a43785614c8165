//! The layers import in one direction only: `model` <- `build` (the crate
//! `nestor-model`, which has no client: the compiler keeps the API server
//! out of its reach) <- `client` <- `reconcile` <- `runtime` (this crate).
//! The crates' boundary holds the first line; this test reads the sources
//! (grouped, relative and inline paths alike) and fails on an import
//! against the direction inside each crate, on files that import each
//! other around a circle in any crate, and on the model reading a clock
//! or an RNG.

use std::path::{Path, PathBuf};

/// Each crate's layers, lowest first, and where its sources are.
const CRATES: [(&str, &[&str]); 2] = [
    ("model/src", &["model", "build"]),
    ("src", &["client", "reconcile", "runtime"]),
];

/// The workspace's other crates, whose files are checked for circles too.
const OTHER_LIBRARIES: [&str; 5] = [
    "../crds/src",
    "../node/src",
    "../operator/src",
    "../operator/backup/src",
    "../e2e/src",
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
        let src = root().join(dir);
        for (rank, layer) in layers.iter().enumerate() {
            let mut files = Vec::new();
            sources(&src.join(layer), &mut files);
            assert!(!files.is_empty(), "{layer} has no sources");
            for file in files {
                let text = std::fs::read_to_string(&file).expect("a readable source");
                let module = module_of(&src, &file);
                for path in references(&text, &module) {
                    if let Some(higher) = path
                        .first()
                        .filter(|p| layers[rank + 1..].contains(&p.as_str()))
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

/// A source file's module path inside its crate: `client/apply.rs` is
/// `client::apply`, `build/mod.rs` is `build`, and a `foo_tests.rs` that
/// `foo.rs` includes with `#[path]` is part of `foo`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file
        .strip_prefix(src)
        .expect("a file under its source root");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.strip_suffix("_tests").unwrap_or(&last);
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The paths a source names through `crate::`, `super::`, `self::` or a
/// child module declared in it, resolved against the crate root, with
/// grouped imports (`use crate::a::{b, c::d}`) expanded. Comments are
/// skipped.
fn references(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary && (chars[i].is_alphabetic() || chars[i] == '_') {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let follows_path = chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':');
            let base: Option<Vec<String>> = match word.as_str() {
                "crate" => Some(Vec::new()),
                "super" if !module.is_empty() => Some(module[..module.len() - 1].to_vec()),
                "self" => Some(module.to_vec()),
                w if children.iter().any(|c| c == w) => {
                    let mut m = module.to_vec();
                    m.push(w.to_string());
                    Some(m)
                }
                _ => None,
            };
            if let (true, Some(base)) = (follows_path, base) {
                i += 2;
                tree(&chars, &mut i, base, &mut found);
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Reads one use-tree (`a::b`, `a::{b, c::d}`, `a::*`) at `i`.
fn tree(chars: &[char], i: &mut usize, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
        match chars.get(*i) {
            Some('{') => {
                *i += 1;
                loop {
                    let at = *i;
                    tree(chars, i, path.clone(), out);
                    while chars
                        .get(*i)
                        .is_some_and(|c| c.is_whitespace() || *c == ',')
                    {
                        *i += 1;
                    }
                    // The group ends, or holds what is not a path: stop.
                    if chars.get(*i) == Some(&'}') || *i >= chars.len() || *i == at {
                        *i += 1;
                        return;
                    }
                }
            }
            Some(c) if c.is_alphabetic() || *c == '_' => {
                let start = *i;
                while chars
                    .get(*i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    *i += 1;
                }
                let word: String = chars[start..*i].iter().collect();
                if word == "super" {
                    path.pop();
                } else if word != "self" {
                    path.push(word);
                }
                if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
                    *i += 2;
                } else {
                    out.push(path);
                    return;
                }
            }
            other => {
                if other == Some(&'*') {
                    *i += 1;
                }
                out.push(path);
                return;
            }
        }
    }
}

/// The files of each crate form no circle: if `a.rs` names `b.rs`, nothing
/// `b.rs` names leads back to `a.rs`. (A module's own tests count as part
/// of it.)
#[test]
fn no_source_files_import_each_other_in_a_circle() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut circles = Vec::new();
    let libraries = CRATES.iter().map(|(dir, _)| *dir).chain(OTHER_LIBRARIES);
    for dir in libraries {
        let src = root().join(dir);
        let mut files = Vec::new();
        sources(&src, &mut files);
        // Binaries under `bin/` are crates of their own.
        files.retain(|f| !f.strip_prefix(&src).is_ok_and(|r| r.starts_with("bin")));
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            let text = std::fs::read_to_string(file).expect("a readable source");
            for mut path in references(&text, &module) {
                while !path.is_empty() && !modules.contains(&path) {
                    path.pop();
                }
                // A module's own children, its ancestors and itself are
                // where it is declared, not a circle.
                if path.is_empty() || path == module || module.starts_with(&path) {
                    continue;
                }
                edges.entry(module.clone()).or_default().insert(path);
            }
        }
        for start in edges.keys() {
            // A depth-first walk from each module looking for itself.
            let mut stack = vec![(start.clone(), vec![start.join("::")])];
            let mut seen = BTreeSet::new();
            while let Some((at, trail)) = stack.pop() {
                for next in edges.get(&at).into_iter().flatten() {
                    if next == start {
                        circles.push(format!(
                            "{dir}: {} -> {}",
                            trail.join(" -> "),
                            start.join("::")
                        ));
                    } else if seen.insert(next.clone()) {
                        let mut t = trail.clone();
                        t.push(next.join("::"));
                        stack.push((next.clone(), t));
                    }
                }
            }
        }
    }
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

#[test]
fn references_read_grouped_relative_and_inline_paths() {
    let text = "mod child;\nuse crate::{a, b::{c, d::*}};\n// crate::commented::out\n\
                fn f() { super::x::y(); self::z(); child::w(); other::v(); }";
    let module = ["m".to_string(), "n".to_string()];
    let found: Vec<String> = references(text, &module)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        found,
        ["a", "b::c", "b::d", "m::x::y", "m::n::z", "m::n::child::w"]
    );
}

/// The builders and the model read no clock and no RNG of their own: the
/// time and randomness come in as arguments (`build::mint::Mint`, a `now`).
/// Only the mint seeds its generator from the operating system. Tests may
/// read the clock.
#[test]
fn the_model_reads_no_clock_and_no_rng() {
    const EFFECTS: [&str; 7] = [
        "Timestamp::now",
        "now_utc",
        "Instant::now",
        "SystemTime::now",
        "rand::rng()",
        "rand::random",
        "from_os_rng",
    ];
    let src = root().join("model/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let is_mint = file.ends_with("build/mint.rs");
        if file.to_string_lossy().ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for effect in EFFECTS {
            if code.contains(effect) && !(is_mint && effect == "from_os_rng") {
                found.push(format!("{} reads {effect}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
