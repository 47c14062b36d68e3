//! The offline example, end to end: `kbc-runner run --data-dir data --local-stack DIR` on a copy of the
//! repository's `data/` folder, twice, as the README tells a newcomer to do. The first run exports every
//! row and creates the output table; the second exports only the rows the "source system" changed in
//! between (adaptive) and upserts them.

mod common;

use common::binary::Ran;
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of the example: only what git tracks (config and seed tables), no outputs of earlier runs.
fn example_copy(root: &Path) -> PathBuf {
    let data = root.join("data");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(repo.join("config.json"), data.join("config.json")).unwrap();
    copy_dir(&repo.join("local-stack"), &data.join("local-stack"));
    data
}

fn run(data: &Path, stack: &Path) -> String {
    let mut command = common::binary::kbc_runner();
    command
        .args(["run", "--data-dir"])
        .arg(data)
        .arg("--local-stack")
        .arg(stack);
    let Ran {
        code,
        stdout,
        stderr,
    } = common::binary::run(command);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "stderr must stay empty on success:\n{stderr}"
    );
    stdout
}

/// The CSV rows of a file, header first, data rows sorted.
fn rows(path: &Path) -> Vec<String> {
    common::rows::header_and_sorted_lines(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn example_runs_twice_offline_and_second_run_is_incremental() {
    let root = tempfile::tempdir().unwrap();
    let data = example_copy(root.path());
    let stack = root.path().join("stack");

    let first = run(&data, &stack);
    assert!(
        first.contains("adaptive, no state yet, exporting the whole table"),
        "{first}"
    );
    assert!(
        first.contains("export in.c-shop.order_lines: 7 rows"),
        "{first}"
    );
    assert!(
        first.contains("created table out.c-shop.order_summary"),
        "{first}"
    );
    assert!(
        first.contains("import out.c-shop.order_summary: 4 rows"),
        "{first}"
    );
    let summary = rows(&data.join("out/tables/order_summary.csv"));
    assert_eq!(summary.len(), 5, "{summary:?}");
    assert!(
        summary.contains(
            &"\"O-1004\",\"C1\",\"Alice Novak\",\"CZ\",\"2026-11-04\",\"1\",\"2\",\"17.00\""
                .to_owned()
        ),
        "{summary:?}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("out/state.json")).unwrap())
            .unwrap();
    let date =
        state["kbc_runner"]["input_tables"]["in.c-shop.order_lines"]["last_import_date"].as_str();
    assert!(date.is_some_and(|d| !d.is_empty()), "{state}");

    let second = run(&data, &stack);
    assert!(
        second.contains("source system changed in.c-shop.order_lines"),
        "{second}"
    );
    assert!(second.contains("adaptive, rows changed since"), "{second}");
    assert!(
        second.contains("export in.c-shop.order_lines: 3 rows"),
        "{second}"
    );
    // Only the changed orders went through the transform and the incremental load ...
    let summary = rows(&data.join("out/tables/order_summary.csv"));
    assert_eq!(
        summary,
        [
            "\"order_id\",\"customer_id\",\"customer_name\",\"country\",\"order_date\",\"lines\",\"items\",\"revenue\"",
            "\"O-1004\",\"C1\",\"Alice Novak\",\"CZ\",\"2026-11-04\",\"2\",\"4\",\"32.40\"",
            "\"O-1005\",\"C4\",\"Dieter Braun\",\"DE\",\"2026-11-05\",\"1\",\"5\",\"124.50\"",
        ]
    );
    // ... and the table holds the old orders plus the upserted ones.
    assert!(second.contains("table has 5 rows"), "{second}");

    // A third run finds nothing new.
    let third = run(&data, &stack);
    assert!(
        third.contains("export in.c-shop.order_lines: 0 rows"),
        "{third}"
    );
    assert!(third.contains("table has 5 rows"), "{third}");
}
