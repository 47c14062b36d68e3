//! The job when Storage misbehaves: faults injected into the in-process emulator, the built binary run
//! against it. What must hold whatever fails: the previous state is written back, nothing half-done is
//! left in Storage (no rows deleted for a load whose data never arrived), and a stuck job ends within
//! `job_timeout_seconds` with a message saying so.

use kbc_emulator::{Emulator, EmulatorConfig, FaultRule};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "pipeline-faults-token-7d2e";

struct Stack {
    runtime: tokio::runtime::Runtime,
    emulator: Emulator,
    _store: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = tempfile::tempdir().unwrap();
        let emulator = runtime
            .block_on(Emulator::start(EmulatorConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                store: store.path().to_owned(),
                tokens: vec![TOKEN.to_owned()],
            }))
            .unwrap();
        Stack {
            runtime,
            emulator,
            _store: store,
        }
    }

    fn seed(&self, table_id: &str, csv: &str, pk: &[&str]) {
        let pk: Vec<String> = pk.iter().map(|s| s.to_string()).collect();
        self.runtime
            .block_on(self.emulator.seed_table(table_id, csv.as_bytes(), &pk))
            .unwrap();
    }

    fn fault(&self, rule: serde_json::Value) {
        let rule: FaultRule = serde_json::from_value(rule).unwrap();
        self.emulator.add_fault(rule).unwrap();
    }

    /// Header and sorted rows, or None when the table does not exist.
    fn dump(&self, table_id: &str) -> Option<Vec<String>> {
        let text = self
            .runtime
            .block_on(self.emulator.dump_table(table_id))
            .unwrap()?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let mut rows: Vec<String> = reader
            .records()
            .map(|r| r.unwrap().iter().collect::<Vec<_>>().join(","))
            .collect();
        let header = rows.remove(0);
        rows.sort();
        rows.insert(0, header);
        Some(rows)
    }

    /// Runs the binary on a data folder holding `config` and `state`; returns (exit code, stdout, stderr).
    fn run(&self, data: &Path, config: serde_json::Value, state: &str) -> (i32, String, String) {
        std::fs::create_dir_all(data.join("in")).unwrap();
        std::fs::write(data.join("config.json"), config.to_string()).unwrap();
        std::fs::write(data.join("in/state.json"), state).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KBC_DATADIR", data)
            .env("KBC_URL", self.emulator.url())
            .env("KBC_TOKEN", TOKEN)
            .env("AWS_ENDPOINT_URL_S3", self.emulator.url())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn read_state(data: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data.join("out/state.json")).unwrap()).unwrap()
}

/// An export job that fails: the job fails as a whole, nothing is imported, the old state is kept.
#[test]
fn failed_export_keeps_state_and_imports_nothing() {
    let stack = Stack::start();
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
    let (code, stdout, stderr) = stack.run(dir.path(), config, r#"{"cursor": 7}"#);
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("export in.c-a.src"), "{stderr}");
    assert!(stderr.contains("disk on fire"), "{stderr}");
    assert_eq!(read_state(dir.path()), serde_json::json!({"cursor": 7}));
    assert_eq!(stack.dump("out.c-a.dst"), None);
}

/// The upload of the new rows fails for good: the rows `delete_where` would remove are still there.
#[test]
fn failed_upload_deletes_nothing() {
    let stack = Stack::start();
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
    let (code, stdout, stderr) = stack.run(dir.path(), config, "{}");
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("uploading"), "{stderr}");
    assert_eq!(
        stack.dump("out.c-a.daily").unwrap(),
        ["day,v", "2026-01-01,1", "2026-01-02,2"]
    );
    assert_eq!(read_state(dir.path()), serde_json::json!({}));
}

/// A load job that never finishes: the run ends after `job_timeout_seconds`, saying which job.
#[test]
fn stuck_import_job_times_out() {
    let stack = Stack::start();
    stack.fault(serde_json::json!({"job": "tableImport", "hang": true, "times": 10}));
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t"}]}},
        "parameters": {"steps": ["transform", "import"], "job_timeout_seconds": 2, "blocks": [{"name": "b", "codes": [{"name": "c",
            "script": ["CREATE TABLE t AS SELECT 1 AS x"]}]}]}
    });
    let started = Instant::now();
    let (code, stdout, stderr) = stack.run(dir.path(), config, "{}");
    let took = started.elapsed();
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains("import t.csv → out.c-a.t"), "{stderr}");
    assert!(stderr.contains("tableImport"), "{stderr}");
    // The table was created for this load and is empty: it is dropped again.
    assert_eq!(stack.dump("out.c-a.t"), None, "{stdout}");
}
