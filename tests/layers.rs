//! The architecture's rules, checked on the source text (ARCHITECTURE.md, "Invariants"):
//! - inside the runner, a module only uses modules of a lower layer: `main` → `cli` → `pipeline` →
//!   `error` → {`interface`, `logging`} → `secrets` → the libraries {`kbc_storage`, `kbc_emulator`} and
//!   `shutdown` (the Common Interface speaks the client's vocabulary: table ids, dialects, secrets);
//! - the storage client and the emulator share no code: neither crate depends on the other, and
//!   neither names the other in its source;
//! - the storage client builds without DuckDB, axum, the emulator or the runner.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The runner's top-level modules (and the two library crates), lowest layer first.
const LAYERS: &[&[&str]] = &[
    &["kbc_storage", "kbc_emulator", "shutdown"],
    &["secrets"],
    &["interface", "logging"],
    &["error"],
    &["pipeline"],
    &["cli"],
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layers.rs"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules a source file names: `crate::x` paths and the two library crates.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `kbc_storage::` and friends end in "crate::" only by accident of spelling; skip those.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.insert(name);
        }
    }
    for lib in ["kbc_storage", "kbc_emulator"] {
        if text.contains(&format!("{lib}::")) {
            names.insert(lib.to_owned());
        }
    }
    names
}

/// The top-level module a file of `src/` belongs to (`src/pipeline/export.rs` → `pipeline`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(root().join("src")).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn runner_modules_only_use_lower_layers() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut wrong = Vec::new();
    let mut edges = 0;
    for file in &files {
        let module = module_of(file);
        if module == "main" || module == "lib" {
            continue; // the binary and the crate root sit above everything
        }
        let text = std::fs::read_to_string(file).unwrap();
        for used in named_modules(&text) {
            // Macros exported at the crate root (`crate::user_bail!`) belong to `error`.
            let used = if used == "user_bail" {
                "error".to_owned()
            } else {
                used
            };
            if used == module {
                continue;
            }
            edges += 1;
            if rank(&used) >= rank(&module) {
                wrong.push(format!(
                    "{} ({module}) uses {used}",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        edges > 10,
        "the scan found only {edges} edges: is it reading the source?"
    );
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

/// The `[dependencies]` names of a crate's manifest (normal and dev).
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_deps = false;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line.ends_with("dependencies]");
        } else if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            names.insert(name.trim().to_owned());
        }
    }
    names
}

#[test]
fn storage_client_and_emulator_share_no_code() {
    let storage = dependencies(&root().join("crates/kbc-storage/Cargo.toml"));
    let emulator = dependencies(&root().join("crates/kbc-emulator/Cargo.toml"));
    assert!(
        storage.contains("reqwest") && emulator.contains("axum"),
        "manifests not read"
    );
    for forbidden in ["kbc-emulator", "kbc-runner", "duckdb", "axum"] {
        assert!(
            !storage.contains(forbidden),
            "kbc-storage depends on {forbidden}"
        );
    }
    // DuckDB is allowed here: it is the engine of the emulator's workspaces and Query Service.
    for forbidden in ["kbc-storage", "kbc-runner"] {
        assert!(
            !emulator.contains(forbidden),
            "kbc-emulator depends on {forbidden}"
        );
    }
    for (dir, other) in [
        ("crates/kbc-storage/src", "kbc_emulator"),
        ("crates/kbc-emulator/src", "kbc_storage"),
    ] {
        let mut files = Vec::new();
        rust_files(&root().join(dir), &mut files);
        assert!(!files.is_empty());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !named_modules(&text).contains(other),
                "{} names {other}",
                file.display()
            );
        }
    }
}

#[test]
fn the_scanner_sees_paths_and_ignores_lookalikes() {
    let names = named_modules(
        "use crate::pipeline::x; let a = kbc_storage::Client::new(); // my_crate::cli\ncrate::error::UserError",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["error", "kbc_storage", "pipeline"]
    );
}
