//! The workspace engine (`parameters.engine: workspace`) when things go wrong mid-run, against the emulator's
//! workspaces and Query Service: SIGTERM while a query runs (the query job is cancelled and the workspace
//! deleted), and a workspace that cannot be created (nothing else happens). The happy paths and SQL errors
//! are datadir cases in tests/functional (`job-workspace-*`).

mod common;

use common::stack::Stack;
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "workspace-engine-token-7d2e";

fn stats(stack: &Stack) -> Value {
    let url = format!("{}/_emulator/stats", stack.url());
    stack.runtime.block_on(async {
        reqwest::Client::new()
            .get(&url)
            .header("X-StorageApi-Token", TOKEN)
            .send()
            .await
            .expect("stats answer")
            .json::<Value>()
            .await
            .expect("stats are JSON")
    })
}

/// A data folder whose one code runs `script`, and the command that runs it against `stack`.
fn job(stack: &Stack, dir: &Path, script: &str) -> std::process::Command {
    let config = json!({
        "storage": {
            "input": {"tables": [{"source": "in.c-shop.orders", "destination": "orders.csv"}]},
            "output": {"tables": [{"source": "out.csv", "destination": "out.c-report.out"}]}
        },
        "parameters": {
            "engine": "workspace",
            "blocks": [{"name": "B", "codes": [{"name": "C", "script": [script]}]}]
        }
    });
    for sub in ["in/tables", "out/tables"] {
        fs::create_dir_all(dir.join("data").join(sub)).unwrap();
    }
    fs::write(dir.join("data/config.json"), config.to_string()).unwrap();
    stack.seed("in.c-shop.orders", "id,amount\n1,10\n2,5\n", &["id"]);
    let mut command = common::binary::kbc_runner();
    command
        .env("KBC_DATADIR", format!("{}/", dir.join("data").display()))
        .env("KBC_URL", stack.url())
        .env("KBC_TOKEN", TOKEN)
        .env("TMPDIR", dir)
        .stdout(fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(fs::File::create(dir.join("stderr.txt")).unwrap())
        .stdin(Stdio::null());
    command
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn sigterm_mid_query_cancels_the_query_and_deletes_the_workspace() {
    let stack = Stack::start(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    // Minutes of work for DuckDB behind the emulator's Query Service, unless it is interrupted.
    let slow = r#"CREATE TABLE "out" AS SELECT count(*) AS "n" FROM range(1000000000000)"#;
    let mut child = job(&stack, dir.path(), slow).spawn().unwrap();
    let start = Instant::now();
    while stats(&stack)["queryJobs"].as_u64().unwrap_or(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no query job was submitted; stdout: {}",
            fs::read_to_string(dir.path().join("stdout.txt")).unwrap_or_default()
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let sent = Instant::now();
    let code = wait(&mut child, Duration::from_secs(60));
    let stdout = fs::read_to_string(dir.path().join("stdout.txt")).unwrap_or_default();
    let stderr = fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "took {:?} after SIGTERM",
        sent.elapsed()
    );
    assert!(
        stdout.contains("cancelled query job"),
        "the query job was not cancelled; stdout: {stdout}"
    );
    assert!(stderr.contains("SIGTERM"), "stderr: {stderr}");
    assert_eq!(stats(&stack)["workspaces"], 0, "stdout: {stdout}");
    assert_eq!(stack.dump("out.c-report.out"), None, "nothing was imported");
}

#[test]
fn a_workspace_that_cannot_be_created_fails_the_run_and_moves_nothing() {
    let stack = Stack::start(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    stack.fault(json!({
        "method": "POST", "path": "/v2/storage/workspaces", "times": 100,
        "status": 400, "code": "storage.workspaces.validation",
        "message": "Workspace limit reached for this project"
    }));
    let before = stats(&stack);
    let mut child = job(
        &stack,
        dir.path(),
        r#"CREATE TABLE "out" AS SELECT 1 AS "a""#,
    )
    .spawn()
    .unwrap();
    let code = wait(&mut child, Duration::from_secs(60));
    let stderr = fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("creating a snowflake workspace")
            && stderr.contains("Workspace limit reached"),
        "stderr: {stderr}"
    );
    let after = stats(&stack);
    assert_eq!(after["workspaces"], 0);
    assert_eq!(after["queryJobs"], before["queryJobs"]);
    assert_eq!(
        after["fileTransfers"]["uploads"], before["fileTransfers"]["uploads"],
        "no file went up"
    );
    assert_eq!(stack.dump("out.c-report.out"), None);
}
