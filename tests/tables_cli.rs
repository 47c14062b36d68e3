//! `kbc-runner tables ...` as a user runs it: the built binary against a small Storage API double.
//! Checks exit codes (1 for the user's mistakes), that data goes to stdout and everything else to stderr,
//! and that the token never shows.

mod common;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use common::{fake_stack, put_sliced_export, serve};
use std::process::{Command, Output};

const TOKEN: &str = "cli-test-token-9876543210";

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = common::binary::kbc_runner();
    cmd.arg("tables").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn stack() -> String {
    let router = Router::new().fallback(|uri: Uri, headers: axum::http::HeaderMap| async move {
        if headers.get("X-StorageApi-Token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
            return (StatusCode::UNAUTHORIZED, r#"{"error":"Invalid access token","code":"storage.tokenInvalid"}"#)
                .into_response();
        }
        match uri.path() {
            "/v2/storage/tables/in.c-main.t/data-preview" => {
                assert!(uri.query().unwrap_or("").contains("limit=2"));
                (StatusCode::OK, "\"id\",\"name\"\n\"1\",\"a\"\n\"2\",\"b\"\n").into_response()
            }
            "/v2/storage/buckets/in.c-main/tables" => (
                StatusCode::OK,
                r#"[{"id":"in.c-main.t","name":"t","rowsCount":2,"dataSizeBytes":1024,"primaryKey":["id"],"columns":["id","name"]}]"#,
            )
                .into_response(),
            _ => (StatusCode::NOT_FOUND, r#"{"error":"not found","code":"storage.tables.notFound"}"#).into_response(),
        }
    });
    serve(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_and_bad_ids_are_user_errors() {
    let out = run(&["list"], &[("KBC_URL", "http://127.0.0.1:9")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("KBC_TOKEN"), "{}", stderr(&out));
    let out = run(
        &["detail", "not-a-table"],
        &[("KBC_URL", "http://127.0.0.1:9"), ("KBC_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a table id"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["export", "in.c-main.t", "-o", "/nonexistent-folder/t.csv"],
        &[("KBC_URL", "http://127.0.0.1:9"), ("KBC_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("folder /nonexistent-folder does not exist"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_list_print_data_on_stdout() {
    let base = stack().await;
    // The older variable names work too.
    let out = run(
        &["preview", "in.c-main.t", "--limit", "2"],
        &[("KEBOOLA_STACK_URL", &base), ("KEBOOLA_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\"id\",\"name\"\n\"1\",\"a\"\n\"2\",\"b\"\n"
    );
    let out = run(
        &["list", "in.c-main", "--json"],
        &[("KBC_URL", &base), ("KBC_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tables[0]["id"], "in.c-main.t");
    assert_eq!(tables[0]["bucketId"], "in.c-main");
    assert_eq!(tables[0]["rowsCount"], 2);
}

/// `kbc-runner tables list | head -1`: the reader leaving early ends the command with success, quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_failure() {
    let base = stack().await;
    for args in [
        &["list", "in.c-main"][..],
        &["preview", "in.c-main.t", "--limit", "2"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // every write to stdout now fails with EPIPE
        let mut cmd = common::binary::kbc_runner();
        cmd.arg("tables")
            .args(args)
            .env("KBC_URL", &base)
            .env("KBC_TOKEN", TOKEN)
            .stdout(writer);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("error"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_and_missing_table_are_plain_user_errors() {
    let base = stack().await;
    let out = run(
        &[
            "detail",
            "in.c-main.t",
            "--url",
            &base,
            "--token",
            "wrong-token-123456",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the Storage API token is invalid or expired"),
        "{err}"
    );
    assert!(!err.contains("wrong-token-123456"), "{err}");
    let out = run(
        &[
            "detail",
            "in.c-main.missing",
            "--url",
            &base,
            "--token",
            TOKEN,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("table in.c-main.missing does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(TOKEN));
    let out = run(
        &[
            "import",
            "in.c-main.missing",
            "/nonexistent.csv",
            "--url",
            &base,
            "--token",
            TOKEN,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_merges_slices_with_one_header_on_stdout_and_in_files() {
    let (fake, base) = fake_stack().await;
    put_sliced_export(&fake, &[b"\"1\",\"a\"\n", b"\"2\",\"b\nc \xc5\xbe\"\n"]);
    let s3 = fake.s3.lock().unwrap().clone();
    let env = [
        ("KBC_URL", base.as_str()),
        ("KBC_TOKEN", TOKEN),
        ("AWS_ENDPOINT_URL_S3", s3.as_str()),
    ];
    let out = run(&["export", "in.c-main.t"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout.clone()).unwrap(),
        "\"id\",\"text\"\n\"1\",\"a\"\n\"2\",\"b\nc ž\"\n"
    );
    assert!(
        stderr(&out).contains("exported in.c-main.t to stdout: 2 rows"),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("t.csv.gz");
    let out = run(
        &[
            "export",
            "in.c-main.t",
            "-o",
            gz.to_str().unwrap(),
            "--gzip",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = common::gunzip(&std::fs::read(&gz).unwrap());
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "\"id\",\"text\"\n\"1\",\"a\"\n\"2\",\"b\nc ž\"\n"
    );
}

/// A 1 M-row sliced, gzipped export through the CLI, with its peak memory measured by `/usr/bin/time -v`.
/// Run with `KBC_RUNNER_BIG_TESTS=1 cargo test --test tables_cli -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "large: set KBC_RUNNER_BIG_TESTS=1 and pass --ignored"]
async fn export_of_a_million_rows_stays_under_100_mb() {
    if std::env::var_os("KBC_RUNNER_BIG_TESTS").is_none() {
        eprintln!("KBC_RUNNER_BIG_TESTS is not set; skipping");
        return;
    }
    const ROWS: usize = 1_000_000;
    const SLICES: usize = 16;
    let (fake, base) = fake_stack().await;
    let mut slices: Vec<Vec<u8>> = vec![Vec::new(); SLICES];
    for i in 0..ROWS {
        let text = match i % 4 {
            0 => format!("row {i} with \"\"quotes\"\""),
            1 => format!("row {i}\nacross lines"),
            2 => format!("řádek {i} žluťoučký 🐎"),
            _ => format!("plain, {i}"),
        };
        slices[i * SLICES / ROWS].extend_from_slice(format!("\"{i}\",\"{text}\"\n").as_bytes());
    }
    let refs: Vec<&[u8]> = slices.iter().map(|s| s.as_slice()).collect();
    put_sliced_export(&fake, &refs);
    drop(slices);
    let s3 = fake.s3.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.csv");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(env!("CARGO_BIN_EXE_kbc-runner"))
        .args(["tables", "export", "in.c-main.t", "-o"])
        .arg(&dest)
        .env("KBC_URL", &base)
        .env("KBC_TOKEN", TOKEN)
        .env("AWS_ENDPOINT_URL_S3", &s3);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rss_kb: u64 = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .map(|v| v.trim().parse().unwrap())
        .expect("no RSS line from /usr/bin/time");
    let size = std::fs::metadata(&dest).unwrap().len();
    eprintln!("1M-row export: {size} bytes, peak RSS {} MB", rss_kb / 1024);
    let mut reader = csv::Reader::from_path(&dest).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["id", "text"]);
    let mut count = 0;
    for (i, r) in reader.records().enumerate() {
        let r = r.unwrap();
        assert_eq!(r[0].parse::<usize>().unwrap(), i);
        count += 1;
    }
    assert_eq!(count, ROWS);
    assert!(rss_kb < 100 * 1024, "peak RSS {rss_kb} kB");
}
