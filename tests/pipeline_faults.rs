//! The job when Storage misbehaves: faults injected into the in-process emulator, the built binary run
//! against it. What must hold whatever fails: the previous state is written back, nothing half-done is
//! left in Storage (no rows deleted for a load whose data never arrived), and a stuck job ends within
//! `job_timeout_seconds` with a message saying so.

mod common;

use common::binary::kbc_runner;
use common::rows;
use common::stack::Stack;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "pipeline-faults-token-7d2e";

/// Header and sorted rows (fields joined by commas), or None when the table does not exist.
fn dump(stack: &Stack, table_id: &str) -> Option<Vec<String>> {
    let (header, rows) = rows::table(Stack::dump(stack, table_id)?.as_bytes());
    let mut lines: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    lines.sort();
    lines.insert(0, header.join(","));
    Some(lines)
}

/// Runs the binary on a data folder holding `config` and `state`; returns (exit code, stdout, stderr).
fn run(
    stack: &Stack,
    data: &Path,
    config: serde_json::Value,
    state: &str,
) -> (i32, String, String) {
    std::fs::create_dir_all(data.join("in")).unwrap();
    std::fs::write(data.join("config.json"), config.to_string()).unwrap();
    std::fs::write(data.join("in/state.json"), state).unwrap();
    let mut command = kbc_runner();
    command
        .env("KBC_DATADIR", data)
        .env("KBC_URL", stack.url())
        .env("KBC_TOKEN", TOKEN)
        .env("AWS_ENDPOINT_URL_S3", stack.url());
    let ran = common::binary::run(command);
    (ran.code.unwrap_or(-1), ran.stdout, ran.stderr)
}

fn read_state(data: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data.join("out/state.json")).unwrap()).unwrap()
}

/// An export job that fails: the job fails as a whole, nothing is imported, the old state is kept.
#[test]
fn failed_export_keeps_state_and_imports_nothing() {
    let stack = Stack::start(TOKEN);
    stack.seed("in.c-a.src", "id,v\n1,a\n2,b\n", &["id"]);
    stack.fault(serde_json::json!({"job": "tableExport", "fail": {"code": "internal", "message": "disk on fire"}}));
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "storage": {
            "input": {"tables": [{"source": "in.c-a.src", "destination": "src.csv", "changed_since": "adaptive"}]},
            "output": {"tables": [{"source": "dst.csv", "destination": "out.c-a.dst"}]}
        },
        "parameters": {"blocks": [{"name": "b", "codes": [{"name": "c", "script": ["CREATE TABLE dst AS SELECT * FROM src"]}]}]}
    });
    let (code, stdout, stderr) = run(&stack, dir.path(), config, r#"{"cursor": 7}"#);
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("export in.c-a.src"), "{stderr}");
    assert!(stderr.contains("disk on fire"), "{stderr}");
    assert_eq!(read_state(dir.path()), serde_json::json!({"cursor": 7}));
    assert_eq!(dump(&stack, "out.c-a.dst"), None);
}

/// The upload of the new rows fails for good: the rows `delete_where` would remove are still there.
#[test]
fn failed_upload_deletes_nothing() {
    let stack = Stack::start(TOKEN);
    stack.seed("out.c-a.daily", "day,v\n2026-01-01,1\n2026-01-02,2\n", &[]);
    // Every S3 write fails (more times than the client retries).
    stack.fault(serde_json::json!({"method": "PUT", "path": "/kbc-sapi-files/*", "status": 500, "times": 1000}));
    stack.fault(serde_json::json!({"method": "POST", "path": "/kbc-sapi-files/*", "status": 500, "times": 1000}));
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "storage": {"output": {"tables": [{
            "source": "daily.csv", "destination": "out.c-a.daily", "incremental": true,
            "delete_where_column": "day", "delete_where_values": ["2026-01-02"]
        }]}},
        "parameters": {"steps": ["transform", "import"], "job_timeout_seconds": 30, "blocks": [{"name": "b", "codes": [{"name": "c",
            "script": ["CREATE TABLE daily AS SELECT '2026-01-02' AS day, '9' AS v"]}]}]}
    });
    let (code, stdout, stderr) = run(&stack, dir.path(), config, "{}");
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("uploading"), "{stderr}");
    assert_eq!(
        dump(&stack, "out.c-a.daily").unwrap(),
        ["day,v", "2026-01-01,1", "2026-01-02,2"]
    );
    assert_eq!(read_state(dir.path()), serde_json::json!({}));
}

/// A load job that never finishes: the run ends after `job_timeout_seconds`, saying which job.
#[test]
fn stuck_import_job_times_out() {
    let stack = Stack::start(TOKEN);
    stack.fault(serde_json::json!({"job": "tableImport", "hang": true, "times": 10}));
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t"}]}},
        "parameters": {"steps": ["transform", "import"], "job_timeout_seconds": 2, "blocks": [{"name": "b", "codes": [{"name": "c",
            "script": ["CREATE TABLE t AS SELECT 1 AS x"]}]}]}
    });
    let started = Instant::now();
    let (code, stdout, stderr) = run(&stack, dir.path(), config, "{}");
    let took = started.elapsed();
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains("import t.csv → out.c-a.t"), "{stderr}");
    assert!(stderr.contains("tableImport"), "{stderr}");
    // The table was created for this load and is empty: it is dropped again.
    assert_eq!(dump(&stack, "out.c-a.t"), None, "{stdout}");
}
