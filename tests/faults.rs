//! The fault matrix (issue 7): every fault the emulator can inject, against each of `tables export`,
//! `tables import` and a whole `run`, driving the built binary as a subprocess against an in-process
//! Storage API emulator (one per case, so fault rules and jobs never leak between cases).
//!
//! Each case asserts the contract peers break (peers-and-style.md §B.12, §C.5 items 5, 6, 12, 15):
//! - exit 0 after a recovered fault, 1 or 2 otherwise (never a panic's 101, never a hang);
//! - a failure names the table, and the Storage job when one failed or timed out;
//! - an ambiguous failure (the server may have applied the import) says so instead of repeating the POST;
//! - Storage holds exactly the expected rows: none lost, **none doubled**; a table created by a failed first
//!   load is gone;
//! - no partial or temporary file is visible at the export target, in `in/`, `out/` or `$TMPDIR`;
//! - `out/state.json` is the input state, unchanged, after a failed job;
//! - no token or `#` value appears in stdout, stderr or any file the run wrote;
//! - the injected fault actually fired (a case whose fault never triggers proves nothing and fails).
//!
//! `fault_matrix` runs the whole table and prints the counts quoted in the issue's closing note
//! (`cargo test --test faults -- --nocapture`; `FAULTS_ONLY=import/` runs the cases whose name contains
//! it). The SIGTERM tests and the unprivileged whole job are separate tests below.

mod common;

use common::binary::open_up;
use kbc_emulator::faults::JobFailure;
use kbc_emulator::{Emulator, FaultRule};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "kbc-faults-token-5b1e0c9d7a";
/// A `#` value the platform passes in `image_parameters`: never to be printed either.
const HASH_SECRET: &str = "kbc-faults-hash-value-e41f77";
const SRC: &str = "in.c-faults.src";
const DST: &str = "out.c-faults.dst";
const FRESH: &str = "out.c-faults.fresh";
/// A hard stop for one run: every wait in the binary has a deadline, so reaching this is a failure.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Job deadline given to every run, so "a job that never finishes" ends quickly.
const JOB_TIMEOUT_SECS: u64 = 3;

/// The source table: quotes, commas, a newline and non-ASCII, the values that break naive CSV handling.
const SRC_CSV: &str = "id,name,note\n\
1,alice,\"hello, world\"\n\
2,bob,\"say \"\"hi\"\"\"\n\
3,čeněk,\"multi\nline\"\n\
4,dora,\n\
5,eve,plain\n";
/// What the target table holds before a load.
const DST_SEED_CSV: &str = "id,name,note\n10,old,\"kept, as is\"\n11,older,x\n";
/// The file `tables import` loads (ids disjoint from the seed, so an upsert adds every row).
const LOAD_CSV: &str = "id,name,note\n\
20,new,\"a \"\"quoted\"\" value\"\n\
21,žluťoučký,\"line\nbreak\"\n\
22,last,\n";

type Row = Vec<String>;

fn rows(csv_text: &str) -> Vec<Row> {
    common::rows::table(csv_text.as_bytes()).1
}

fn header(csv_text: &str) -> Row {
    common::rows::table(csv_text.as_bytes()).0
}

/// Rows missing from `actual` and rows present more often than expected (doubled or spurious).
fn diff(expected: &[Row], actual: &[Row]) -> (usize, usize) {
    let mut want: BTreeMap<&Row, i64> = BTreeMap::new();
    for r in expected {
        *want.entry(r).or_default() += 1;
    }
    let mut extra = 0usize;
    for r in actual {
        match want.get_mut(r) {
            Some(n) if *n > 0 => *n -= 1,
            _ => extra += 1,
        }
    }
    let lost = want.values().map(|n| *n as usize).sum();
    (lost, extra)
}

// ---------------------------------------------------------------------------------------------------------
// Fault rules

fn status(method: &str, path: &str, status: u16, times: u32) -> FaultRule {
    FaultRule {
        method: Some(method.into()),
        path: Some(path.into()),
        times,
        status: Some(status),
        ..Default::default()
    }
}

fn retry_after(method: &str, path: &str, code: u16, times: u32) -> FaultRule {
    FaultRule {
        retry_after: Some(1),
        ..status(method, path, code, times)
    }
}

fn after_apply(method: &str, path: &str, code: u16) -> FaultRule {
    FaultRule {
        after_apply: true,
        ..status(method, path, code, 1)
    }
}

fn s3_error(method: &str, code: u16, s3_code: &str, times: u32) -> FaultRule {
    FaultRule {
        code: Some(s3_code.into()),
        message: Some(format!("injected {s3_code}")),
        ..status(method, "/kbc-sapi-files/*", code, times)
    }
}

fn cut(method: &str, path: &str, bytes: u64) -> FaultRule {
    FaultRule {
        method: Some(method.into()),
        path: Some(path.into()),
        cut_after_bytes: Some(bytes),
        ..Default::default()
    }
}

fn delay(method: &str, path: &str, ms: u64) -> FaultRule {
    FaultRule {
        method: Some(method.into()),
        path: Some(path.into()),
        delay_ms: Some(ms),
        ..Default::default()
    }
}

fn job_fail(operation: &str) -> FaultRule {
    FaultRule {
        job: Some(operation.into()),
        fail: Some(JobFailure {
            code: "storage.injected".into(),
            message: "Injected job failure".into(),
        }),
        ..Default::default()
    }
}

fn job_hang(operation: &str) -> FaultRule {
    FaultRule {
        job: Some(operation.into()),
        hang: true,
        ..Default::default()
    }
}

fn truncated_slice() -> FaultRule {
    FaultRule {
        job: Some("tableExport".into()),
        truncate_slice_bytes: Some(20),
        ..Default::default()
    }
}

const EXPORT_ASYNC: &str = "*/tables/*/export-async";
const IMPORT_ASYNC: &str = "*/tables/*/import-async";
const JOBS: &str = "*/jobs/*";
const SLICE: &str = "/kbc-sapi-files/*_part_*";
const MANIFEST: &str = "/kbc-sapi-files/*manifest";

// ---------------------------------------------------------------------------------------------------------
// Cases

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `tables export SRC -o FILE`.
    Export,
    /// `tables export SRC -o FILE.gz --gzip` (its own code path: gzip while writing).
    ExportGzip,
    /// `tables export SRC --keep-slices DIR` (header-less slices, no merge).
    ExportSlices,
    /// `tables export SRC -o FILE` of a 300k-row source: two slices, assembled in manifest order.
    ExportBig,
    /// `tables import DST load.csv` (full load).
    ImportFull,
    /// `tables import DST load.csv --incremental` into a table without a primary key (appends: the
    /// doubling trap).
    ImportIncr,
    /// The same into a table with primary key `id` (upsert).
    ImportIncrPk,
    /// `tables import FRESH load.csv --create --primary-key id`: the table does not exist yet.
    ImportCreate,
    /// A full load of a ~10 MiB file, large enough for a multipart upload.
    ImportBig,
    /// `run`: export SRC, `CREATE TABLE result AS SELECT * FROM src`, incremental load into DST (no PK).
    Job,
    /// `run` whose output goes to FRESH, a table the job creates.
    JobNewTable,
}

impl Op {
    /// The table a load writes to (None for an export).
    fn target(self) -> Option<&'static str> {
        match self {
            Op::Export | Op::ExportGzip | Op::ExportSlices | Op::ExportBig => None,
            Op::ImportCreate | Op::JobNewTable => Some(FRESH),
            _ => Some(DST),
        }
    }
}

/// What Storage must hold after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// The load happened exactly once.
    Applied,
    /// Nothing changed (a table the run would have created does not exist).
    Unchanged,
}

struct Case {
    name: &'static str,
    op: Op,
    faults: Vec<FaultRule>,
    /// Exit 0 expected (the fault is recoverable).
    recovers: bool,
    storage: Storage,
    /// The failure is ambiguous: the message must say the operation may have been applied.
    ambiguous: bool,
    /// The table the failure message must name.
    names: &'static str,
}

fn recovers(name: &'static str, op: Op, faults: Vec<FaultRule>) -> Case {
    Case {
        name,
        op,
        faults,
        recovers: true,
        storage: Storage::Applied,
        ambiguous: false,
        names: op.target().unwrap_or(SRC),
    }
}

fn fails(name: &'static str, op: Op, faults: Vec<FaultRule>) -> Case {
    Case {
        recovers: false,
        storage: Storage::Unchanged,
        ..recovers(name, op, faults)
    }
}

fn ambiguous(name: &'static str, op: Op, faults: Vec<FaultRule>, storage: Storage) -> Case {
    Case {
        recovers: false,
        storage,
        ambiguous: true,
        ..recovers(name, op, faults)
    }
}

/// Job cases whose fault hits the export: the message names the source table.
fn on_source(mut case: Case) -> Case {
    case.names = SRC;
    case
}

fn matrix() -> Vec<Case> {
    use Op::*;
    vec![
        // ---- export
        recovers(
            "export/500-burst-on-table-detail",
            Export,
            vec![status("GET", "*/tables/in.c-faults.src", 500, 2)],
        ),
        recovers(
            "export/502-504-burst-on-job-poll",
            Export,
            vec![status("GET", JOBS, 502, 1), status("GET", JOBS, 504, 1)],
        ),
        recovers(
            "export/429-retry-after-on-export-async",
            Export,
            vec![retry_after("POST", EXPORT_ASYNC, 429, 1)],
        ),
        recovers(
            "export/503-retry-after-on-export-async",
            Export,
            vec![retry_after("POST", EXPORT_ASYNC, 503, 2)],
        ),
        recovers(
            "export/500-burst-on-file-detail",
            Export,
            vec![status("GET", "*/files/*", 500, 2)],
        ),
        recovers(
            "export/reset-mid-manifest",
            Export,
            vec![cut("GET", MANIFEST, 10)],
        ),
        recovers(
            "export/reset-mid-slice",
            Export,
            vec![cut("GET", SLICE, 25)],
        ),
        recovers(
            "export/500-burst-on-slice",
            Export,
            vec![status("GET", SLICE, 500, 2)],
        ),
        recovers(
            "export/503-retry-after-on-slice",
            Export,
            vec![retry_after("GET", SLICE, 503, 1)],
        ),
        recovers("export/slow-slice", Export, vec![delay("GET", SLICE, 1500)]),
        fails(
            "export/truncated-gzip-slice",
            Export,
            vec![truncated_slice()],
        ),
        fails("export/job-errors", Export, vec![job_fail("tableExport")]),
        fails(
            "export/job-never-finishes",
            Export,
            vec![job_hang("tableExport")],
        ),
        fails(
            "export/expired-file-credentials",
            Export,
            vec![s3_error("GET", 400, "ExpiredToken", 100)],
        ),
        fails(
            "export/501-on-job-poll-not-retried",
            Export,
            vec![status("GET", JOBS, 501, 100)],
        ),
        recovers(
            "export-gzip/reset-mid-slice",
            ExportGzip,
            vec![cut("GET", SLICE, 25)],
        ),
        fails(
            "export-gzip/truncated-gzip-slice",
            ExportGzip,
            vec![truncated_slice()],
        ),
        fails(
            "export-gzip/job-errors",
            ExportGzip,
            vec![job_fail("tableExport")],
        ),
        recovers(
            "export-slices/reset-mid-slice",
            ExportSlices,
            vec![cut("GET", SLICE, 25)],
        ),
        fails(
            "export-slices/truncated-gzip-slice",
            ExportSlices,
            vec![truncated_slice()],
        ),
        fails(
            "export-slices/expired-file-credentials",
            ExportSlices,
            vec![s3_error("GET", 400, "ExpiredToken", 100)],
        ),
        recovers(
            "export/408-on-table-detail",
            Export,
            vec![status("GET", "*/tables/in.c-faults.src", 408, 1)],
        ),
        recovers(
            "export/503-maintenance-without-retry-after-on-job-poll",
            Export,
            vec![status("GET", JOBS, 503, 2)],
        ),
        // An export job only reads: after a 500 the request is sent again, like a GET (F11).
        recovers(
            "export/500-on-export-async-retried",
            Export,
            vec![status("POST", EXPORT_ASYNC, 500, 1)],
        ),
        // Two slices: the second one fails; the merged file must still have every row exactly once.
        recovers(
            "export-sliced/reset-mid-second-slice",
            ExportBig,
            vec![FaultRule {
                skip: 1,
                ..cut("GET", SLICE, 1000)
            }],
        ),
        fails(
            "export-sliced/second-slice-credentials-expired",
            ExportBig,
            vec![FaultRule {
                skip: 1,
                ..s3_error("GET", 400, "ExpiredToken", 100)
            }],
        ),
        // ---- import
        recovers(
            "import/429-retry-after-on-import-async",
            ImportIncr,
            vec![retry_after("POST", IMPORT_ASYNC, 429, 1)],
        ),
        recovers(
            "import/503-retry-after-on-import-async",
            ImportIncr,
            vec![retry_after("POST", IMPORT_ASYNC, 503, 2)],
        ),
        recovers(
            "import/500-burst-on-job-poll",
            ImportIncr,
            vec![status("GET", JOBS, 500, 3)],
        ),
        recovers(
            "import/503-on-files-prepare",
            ImportIncr,
            vec![retry_after("POST", "*/files/prepare", 503, 1)],
        ),
        recovers(
            "import/500-on-s3-put",
            ImportFull,
            vec![status("PUT", "/kbc-sapi-files/*", 500, 1)],
        ),
        recovers(
            "import/failed-s3-part-upload-retried",
            ImportBig,
            vec![FaultRule {
                skip: 1,
                ..status("PUT", "/kbc-sapi-files/*", 500, 1)
            }],
        ),
        recovers(
            "import/reset-mid-job-poll",
            ImportIncr,
            vec![cut("GET", JOBS, 5)],
        ),
        fails(
            "import/s3-part-upload-keeps-failing",
            ImportBig,
            vec![s3_error("PUT", 403, "AccessDenied", 1000)],
        ),
        fails(
            "import/expired-file-credentials",
            ImportIncr,
            vec![s3_error("PUT", 400, "ExpiredToken", 100)],
        ),
        fails(
            "import/job-errors",
            ImportIncr,
            vec![job_fail("tableImport")],
        ),
        fails(
            "import/job-never-finishes",
            ImportIncr,
            vec![job_hang("tableImport")],
        ),
        fails(
            "import/job-errors-full-load",
            ImportFull,
            vec![job_fail("tableImport")],
        ),
        fails(
            "import/create-job-errors-table-gone",
            ImportCreate,
            vec![job_fail("tableCreate")],
        ),
        // As in the job: the table the command created is dropped again when its first load fails.
        fails(
            "import/create-then-load-fails-table-dropped",
            ImportCreate,
            vec![job_fail("tableImport")],
        ),
        ambiguous(
            "import/500-before-apply-not-repeated",
            ImportIncr,
            vec![status("POST", IMPORT_ASYNC, 500, 1)],
            Storage::Unchanged,
        ),
        ambiguous(
            "import/500-after-apply-not-repeated",
            ImportIncr,
            vec![after_apply("POST", IMPORT_ASYNC, 500)],
            Storage::Applied,
        ),
        // A proxy's 503 (Envoy: "upstream connect error or disconnect/reset before headers") can come
        // after the backend took the request; only Keboola's maintenance 503 proves it did not.
        ambiguous(
            "import/proxy-503-after-apply-not-repeated",
            ImportIncr,
            vec![FaultRule {
                code: Some("upstream_reset".into()),
                message: Some("upstream connect error or disconnect/reset before headers".into()),
                ..after_apply("POST", IMPORT_ASYNC, 503)
            }],
            Storage::Applied,
        ),
        // A new table is created empty, then loaded like any other: the ambiguous step is the load.
        ambiguous(
            "import/create-then-load-500-after-apply-not-repeated",
            ImportCreate,
            vec![after_apply("POST", IMPORT_ASYNC, 500)],
            Storage::Applied,
        ),
        ambiguous(
            "import/504-after-apply-not-repeated",
            ImportIncr,
            vec![after_apply("POST", IMPORT_ASYNC, 504)],
            Storage::Applied,
        ),
        ambiguous(
            "import/502-after-apply-pk-table",
            ImportIncrPk,
            vec![after_apply("POST", IMPORT_ASYNC, 502)],
            Storage::Applied,
        ),
        ambiguous(
            "import/reset-after-import-queued",
            ImportIncr,
            vec![cut("POST", IMPORT_ASYNC, 0)],
            Storage::Applied,
        ),
        // ---- whole job
        recovers(
            "job/503-retry-after-on-export-async",
            Job,
            vec![retry_after("POST", EXPORT_ASYNC, 503, 1)],
        ),
        recovers("job/reset-mid-slice", Job, vec![cut("GET", SLICE, 25)]),
        recovers(
            "job/500-burst-on-job-poll",
            Job,
            vec![status("GET", JOBS, 500, 2)],
        ),
        recovers(
            "job/429-on-import-async",
            Job,
            vec![retry_after("POST", IMPORT_ASYNC, 429, 1)],
        ),
        on_source(fails(
            "job/export-job-errors",
            Job,
            vec![job_fail("tableExport")],
        )),
        on_source(fails(
            "job/truncated-gzip-slice",
            Job,
            vec![truncated_slice()],
        )),
        on_source(fails(
            "job/export-job-never-finishes",
            Job,
            vec![job_hang("tableExport")],
        )),
        fails("job/import-job-errors", Job, vec![job_fail("tableImport")]),
        fails(
            "job/import-job-never-finishes",
            Job,
            vec![job_hang("tableImport")],
        ),
        fails(
            "job/expired-credentials-on-upload",
            Job,
            vec![s3_error("PUT", 400, "ExpiredToken", 100)],
        ),
        fails(
            "job/new-table-create-fails",
            JobNewTable,
            vec![job_fail("tableCreate")],
        ),
        // The run creates the table, then its load fails: the empty table it made must be dropped.
        fails(
            "job/new-table-load-fails-table-dropped",
            JobNewTable,
            vec![job_fail("tableImport")],
        ),
        ambiguous(
            "job/500-after-import-applied",
            Job,
            vec![after_apply("POST", IMPORT_ASYNC, 500)],
            Storage::Applied,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Running one case

/// What one case found.
#[derive(Default)]
struct Outcome {
    recovered: bool,
    lost: usize,
    doubled: usize,
    leaked: usize,
    panicked: bool,
    problems: Vec<String>,
}

struct Stack {
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            rt: common::stack::runtime(),
        }
    }

    fn emulator(&self, store: &Path) -> Emulator {
        self.rt
            .block_on(common::stack::start_emulator(store, TOKEN))
            .expect("the emulator starts")
    }

    fn seed(&self, emu: &Emulator, table: &str, csv: &str, pk: &[&str]) {
        let pk: Vec<String> = pk.iter().map(|s| (*s).to_owned()).collect();
        self.rt
            .block_on(emu.seed_table(table, csv.as_bytes(), &pk))
            .expect("seeding works");
    }

    fn dump(&self, emu: &Emulator, table: &str) -> Option<String> {
        self.rt.block_on(emu.dump_table(table)).expect("dump works")
    }

    /// The rules of `added` still active exactly as added (not one matching request or job consumed).
    fn unfired_faults(&self, emu: &Emulator, added: &[FaultRule]) -> Vec<String> {
        let url = format!("{}/_emulator/faults", emu.url());
        let active: Vec<serde_json::Value> = self.rt.block_on(async {
            reqwest::Client::new()
                .get(url)
                .header("X-StorageApi-Token", TOKEN)
                .send()
                .await
                .expect("faults list")
                .json()
                .await
                .expect("faults JSON")
        });
        added
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .filter(|r| active.contains(r))
            .map(|r| r.to_string())
            .collect()
    }

    /// Ids of the jobs that did not succeed (failed, or still waiting after a timeout).
    fn unsuccessful_jobs(&self, emu: &Emulator) -> Vec<u64> {
        let url = format!("{}/v2/storage/jobs?limit=1000", emu.url());
        let jobs: serde_json::Value = self.rt.block_on(async {
            reqwest::Client::new()
                .get(url)
                .header("X-StorageApi-Token", TOKEN)
                .send()
                .await
                .expect("jobs list")
                .json()
                .await
                .expect("jobs JSON")
        });
        jobs.as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["status"] != "success")
            .filter_map(|j| j["id"].as_u64())
            .collect()
    }
}

/// The source table of a case: the small tricky one, or 300k rows (the emulator slices every 250k).
fn src_csv(op: Op) -> &'static str {
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if op != Op::ExportBig {
        return SRC_CSV;
    }
    BIG.get_or_init(|| {
        let mut s = String::from("id,name,note\n");
        for i in 0..300_000u32 {
            s.push_str(&format!("{i},n{i},\"a, \"\"b\"\" {i}\"\n"));
        }
        s
    })
}

fn big_csv() -> String {
    // ~10 MiB: above the client's 8 MiB multipart threshold, so the upload goes in parts.
    let mut s = String::from("id,name,note\n");
    let filler = "x".repeat(70);
    let mut i = 0u64;
    while s.len() < 10 << 20 {
        s.push_str(&format!("{i},row-{i},\"{filler}, {i}\"\n"));
        i += 1;
    }
    s
}

fn job_config(
    output: &str,
    incremental: bool,
    url: &str,
    job_timeout_secs: u64,
) -> serde_json::Value {
    serde_json::json!({
        "storage": {
            "input": {"tables": [{"source": SRC, "destination": "src.csv"}]},
            "output": {"tables": [{
                "source": "result.csv",
                "destination": output,
                "incremental": incremental
            }]}
        },
        "image_parameters": {"#vendor_key": HASH_SECRET},
        "parameters": {
            "#storage_token": TOKEN,
            "storage_url": url,
            "job_timeout_seconds": job_timeout_secs,
            "blocks": [{"name": "Copy", "codes": [{"name": "All rows", "script": [
                "CREATE TABLE result AS SELECT id, name, note FROM src"
            ]}]}]
        }
    })
}

const IN_STATE: &str = r#"{"cursor": 41, "nested": {"kept": true}}"#;

/// Everything a case needs on disk, and the command to run.
struct Prepared {
    work: tempfile::TempDir,
    command: Command,
    /// The load's own rows (what `Applied` adds).
    load: String,
}

fn prepare(stack: &Stack, emu: &Emulator, op: Op, job_timeout_secs: u64) -> Prepared {
    let work = tempfile::tempdir().unwrap();
    let files = work.path().join("files");
    let tmp = work.path().join("tmp");
    fs::create_dir_all(&files).unwrap();
    fs::create_dir_all(&tmp).unwrap();
    stack.seed(emu, SRC, src_csv(op), &[]);
    match op {
        Op::ImportIncrPk => stack.seed(emu, DST, DST_SEED_CSV, &["id"]),
        Op::ImportCreate | Op::JobNewTable => {}
        _ => stack.seed(emu, DST, DST_SEED_CSV, &[]),
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_kbc-runner"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", &tmp)
        .env("AWS_ENDPOINT_URL_S3", emu.url())
        .stdin(Stdio::null());
    let load = match op {
        Op::ImportBig => big_csv(),
        Op::Job | Op::JobNewTable => SRC_CSV.to_owned(),
        _ => LOAD_CSV.to_owned(),
    };
    let timeout = job_timeout_secs.to_string();
    match op {
        Op::Export | Op::ExportGzip | Op::ExportSlices | Op::ExportBig => {
            command
                .env("KBC_URL", emu.url())
                .env("KBC_TOKEN", TOKEN)
                .args(["tables", "export", SRC, "--job-timeout", &timeout]);
            match op {
                Op::Export | Op::ExportBig => command.arg("-o").arg(files.join(EXPORT_TARGET)),
                Op::ExportGzip => command.arg("--gzip").arg("-o").arg(files.join(EXPORT_GZ)),
                _ => command.arg("--keep-slices").arg(files.join(EXPORT_SLICES)),
            };
        }
        Op::Job | Op::JobNewTable => {
            let data = work.path().join("data");
            for d in ["in/tables", "in/files", "out/tables", "out/files"] {
                fs::create_dir_all(data.join(d)).unwrap();
            }
            let (output, incremental) = if op == Op::Job {
                (DST, true)
            } else {
                (FRESH, false)
            };
            let config = job_config(output, incremental, &emu.url(), job_timeout_secs);
            fs::write(
                data.join("config.json"),
                serde_json::to_vec_pretty(&config).unwrap(),
            )
            .unwrap();
            fs::write(data.join("in/state.json"), IN_STATE).unwrap();
            command.env("KBC_DATADIR", format!("{}/", data.display()));
        }
        _ => {
            let target = op.target().unwrap();
            let file = files.join("load.csv");
            fs::write(&file, &load).unwrap();
            command
                .env("KBC_URL", emu.url())
                .env("KBC_TOKEN", TOKEN)
                .args(["tables", "import", target])
                .arg(&file)
                .args(["--job-timeout", &timeout]);
            match op {
                Op::ImportIncr | Op::ImportIncrPk => {
                    command.arg("--incremental");
                }
                Op::ImportCreate => {
                    command.args(["--create", "--primary-key", "id"]);
                }
                _ => {}
            }
        }
    }
    Prepared {
        work,
        command,
        load,
    }
}

/// Runs a command with stdout and stderr to files (no pipe can fill up), killing it after `limit`.
fn run_bounded(
    mut command: Command,
    dir: &Path,
    limit: Duration,
) -> (Option<i32>, String, String, Duration) {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    command
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let started = Instant::now();
    let mut child = command.spawn().expect("the binary starts");
    let code = wait_until(&mut child, started + limit);
    let elapsed = started.elapsed();
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    (
        code.unwrap_or(None),
        read(&out_path),
        read(&err_path),
        elapsed,
    )
}

/// `Some(code)` when the child exited by itself before `deadline` (`code` is None after a signal),
/// `None` when it had to be killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<Option<i32>> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const EXPORT_TARGET: &str = "export.csv";
const EXPORT_GZ: &str = "export.csv.gz";
const EXPORT_SLICES: &str = "slices";

/// The rows of an export target: one CSV with the header once, gzipped or not, or a folder of header-less
/// slices.
fn read_export(op: Op, target: &Path) -> Result<Vec<Row>, String> {
    let text = match op {
        Op::ExportSlices => {
            let mut text = String::from("id,name,note\n");
            for p in files_below(target) {
                let slice = fs::read_to_string(target.join(&p)).map_err(|e| e.to_string())?;
                if slice.starts_with("\"id\"") {
                    return Err(format!("slice {} has a header", p.display()));
                }
                text.push_str(&slice);
            }
            return Ok(rows(&text));
        }
        Op::ExportGzip => {
            use std::io::Read;
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(fs::File::open(target).map_err(|e| e.to_string())?)
                .read_to_string(&mut text)
                .map_err(|e| format!("not a gzip of UTF-8 CSV: {e}"))?;
            text
        }
        _ => fs::read_to_string(target).map_err(|e| e.to_string())?,
    };
    if header(&text) != ["id", "name", "note"] {
        return Err(format!("export header is {:?}", header(&text)));
    }
    Ok(rows(&text))
}

/// Every file below `dir`, relative to it.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_owned());
        }
    }
    out.sort();
    out
}

fn looks_temporary(path: &Path) -> bool {
    path.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name.starts_with('.')
            || name.ends_with('~')
            || name.ends_with(".tmp")
            || name.ends_with(".part")
            || name.contains(".tmp-")
            || name.contains("partial")
    })
}

fn mentions_id(text: &str, id: u64) -> bool {
    let id = id.to_string();
    text.match_indices(&id).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + id.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

fn run_case(stack: &Stack, case: &Case) -> Outcome {
    let mut o = Outcome::default();
    let store = tempfile::tempdir().unwrap();
    let emu = stack.emulator(store.path());
    let Prepared {
        work,
        command,
        load,
    } = prepare(stack, &emu, case.op, JOB_TIMEOUT_SECS);
    for rule in &case.faults {
        emu.add_fault(rule.clone()).expect("a valid fault rule");
    }
    let (code, stdout, stderr, elapsed) = run_bounded(command, work.path(), RUN_LIMIT);
    let untouched = stack.unfired_faults(&emu, &case.faults);
    emu.clear_faults();
    let mut problem = |p: String| o.problems.push(p);
    // A fault that never fired proves nothing: the case would pass trivially.
    for rule in untouched {
        problem(format!("the fault never fired: {rule}"));
    }

    // Exit code, panics, hangs.
    let panicked = code == Some(101) || stderr.contains("panic");
    if panicked {
        problem("the binary panicked".into());
    }
    match code {
        None => problem(format!("no exit code: killed or hung after {elapsed:.1?}")),
        Some(0) if case.recovers => {}
        Some(1 | 2) if !case.recovers => {}
        Some(c) => problem(format!(
            "exit code {c}, expected {}",
            if case.recovers { "0" } else { "1 or 2" }
        )),
    }
    let recovered = code == Some(0);

    // The message: names the table, the failed job, and says when the outcome is unknown.
    if !recovered {
        if !stderr.contains(case.names) {
            problem(format!("the error does not name table {}", case.names));
        }
        // A job that failed or never finished must be named (a truncated slice comes from a job that
        // succeeded, so it has none to name).
        if case.faults.iter().any(|f| f.fail.is_some() || f.hang) {
            let jobs = stack.unsuccessful_jobs(&emu);
            if !jobs.iter().any(|id| mentions_id(&stderr, *id)) {
                problem(format!(
                    "the error does not name the failed job (one of {jobs:?})"
                ));
            }
        }
        if case.ambiguous && !stderr.to_lowercase().contains("may have") {
            problem("an ambiguous failure does not say the operation may have been applied".into());
        }
    }

    // Storage: the source is never touched; the target holds the load exactly once, or nothing new.
    let (mut lost, mut doubled) = (0, 0);
    let src_now = stack.dump(&emu, SRC).map(|t| rows(&t)).unwrap_or_default();
    let (l, d) = diff(&rows(src_csv(case.op)), &src_now);
    lost += l;
    doubled += d;
    if let Some(target) = case.op.target() {
        let before: Option<Vec<Row>> = match case.op {
            Op::ImportCreate | Op::JobNewTable => None,
            _ => Some(rows(DST_SEED_CSV)),
        };
        let applied_once = || -> Vec<Row> {
            let mut all = match case.op {
                Op::ImportIncr | Op::ImportIncrPk | Op::Job => rows(DST_SEED_CSV),
                _ => Vec::new(),
            };
            all.extend(rows(&load));
            all
        };
        let storage = if recovered {
            Storage::Applied
        } else {
            case.storage
        };
        let expected = match storage {
            Storage::Applied => Some(applied_once()),
            Storage::Unchanged => before,
        };
        match (expected, stack.dump(&emu, target)) {
            (None, None) => {}
            (None, Some(_)) => problem(format!(
                "table {target} created by the failed first load still exists"
            )),
            (Some(want), None) => {
                lost += want.len();
                problem(format!("table {target} is gone"));
            }
            (Some(want), Some(have)) => {
                if header(&have) != ["id", "name", "note"] {
                    problem(format!("table {target} has columns {:?}", header(&have)));
                }
                let (l, d) = diff(&want, &rows(&have));
                lost += l;
                doubled += d;
                if l + d > 0 {
                    problem(format!(
                        "table {target}: {l} rows lost, {d} doubled or spurious"
                    ));
                }
            }
        }
    }

    // Files: the export target is complete or absent; nothing partial or temporary anywhere.
    let files = work.path().join("files");
    let data = work.path().join("data");
    match case.op {
        Op::Export | Op::ExportGzip | Op::ExportSlices | Op::ExportBig => {
            let name = match case.op {
                Op::Export | Op::ExportBig => EXPORT_TARGET,
                Op::ExportGzip => EXPORT_GZ,
                _ => EXPORT_SLICES,
            };
            let target = files.join(name);
            if recovered {
                match read_export(case.op, &target) {
                    Ok(got) => {
                        let (l, d) = diff(&rows(src_csv(case.op)), &got);
                        lost += l;
                        doubled += d;
                        if l + d > 0 {
                            problem(format!("export: {l} rows lost, {d} doubled or spurious"));
                        }
                    }
                    Err(e) => problem(format!("export after exit 0: {e}")),
                }
            } else if target.exists() {
                problem("a failed export left a file at the target".into());
            }
            let left: Vec<_> = files_below(&files)
                .into_iter()
                .filter(|p| !p.starts_with(name))
                .collect();
            if !left.is_empty() {
                problem(format!("files left next to the export target: {left:?}"));
            }
        }
        Op::Job | Op::JobNewTable => {
            for p in files_below(&data) {
                if looks_temporary(&p) {
                    problem(format!(
                        "temporary file left in the data folder: {}",
                        p.display()
                    ));
                }
            }
            let input = data.join("in/tables/src.csv");
            let manifest = data.join("in/tables/src.csv.manifest");
            if input.is_file() {
                // Present means complete: a partial download must never be visible.
                let text = fs::read_to_string(&input).unwrap_or_default();
                let (l, d) = diff(&rows(SRC_CSV), &rows(&text));
                if l + d > 0 {
                    problem(format!(
                        "in/tables/src.csv is partial: {l} rows missing, {d} extra"
                    ));
                }
                if !manifest.is_file() {
                    problem("in/tables/src.csv has no manifest".into());
                }
            } else if manifest.exists() {
                problem("a manifest for a missing in/tables/src.csv".into());
            } else if recovered {
                problem("in/tables/src.csv is missing after a successful job".into());
            }
            let state: Option<serde_json::Value> = fs::read(data.join("out/state.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let in_state: serde_json::Value = serde_json::from_str(IN_STATE).unwrap();
            match state {
                None => problem("out/state.json is missing or invalid".into()),
                Some(s) if !recovered && s != in_state => {
                    problem(format!("out/state.json changed after a failed job: {s}"))
                }
                Some(s) if recovered && (s["cursor"] != 41 || s["nested"]["kept"] != true) => {
                    problem(format!("out/state.json lost the component's state: {s}"))
                }
                Some(_) => {}
            }
        }
        _ => {
            let left: Vec<_> = files_below(&files)
                .into_iter()
                .filter(|p| p != Path::new("load.csv"))
                .collect();
            if !left.is_empty() {
                problem(format!("an import left files next to its input: {left:?}"));
            }
        }
    }
    let tmp_left = files_below(&work.path().join("tmp"));
    if !tmp_left.is_empty() {
        problem(format!("temporary files left in TMPDIR: {tmp_left:?}"));
    }

    // Secrets: the token (also the `#storage_token` value) and a `#` value, in output or any file written.
    let mut places = vec![
        ("stdout".to_owned(), stdout.clone()),
        ("stderr".to_owned(), stderr.clone()),
    ];
    for dir in [&files, &data] {
        for p in files_below(dir) {
            let full = dir.join(&p);
            if full.is_file() && p != Path::new("config.json") {
                let text =
                    String::from_utf8_lossy(&fs::read(&full).unwrap_or_default()).into_owned();
                places.push((p.display().to_string(), text));
            }
        }
    }
    for (name, text) in &places {
        for (what, secret) in [("the token", TOKEN), ("a # value", HASH_SECRET)] {
            if text.contains(secret) {
                o.leaked += 1;
                o.problems.push(format!("{what} appears in {name}"));
            }
        }
    }
    if !o.problems.is_empty() {
        o.problems.push(format!(
            "(exit {code:?} after {elapsed:.1?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout),
            tail(&stderr)
        ));
    }
    o.recovered = recovered;
    o.lost = lost;
    o.doubled = doubled;
    o.panicked = panicked;
    stack.rt.block_on(emu.shutdown());
    o
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(3000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

#[test]
fn fault_matrix() {
    let stack = Stack::new();
    let cases = matrix();
    let only = std::env::var("FAULTS_ONLY").ok();
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(&str, Outcome)>> = Mutex::new(Vec::new());
    // Cases are independent (one emulator each); a small bound keeps a 2-core machine responsive.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = run_case(&stack, case);
                    results.lock().unwrap().push((case.name, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(name, _)| *name);

    let tried = results.len();
    let recovered = results.iter().filter(|(_, o)| o.recovered).count();
    let clean = results
        .iter()
        .filter(|(_, o)| !o.recovered && o.problems.is_empty())
        .count();
    let lost: usize = results.iter().map(|(_, o)| o.lost).sum();
    let doubled: usize = results.iter().map(|(_, o)| o.doubled).sum();
    let leaked: usize = results.iter().map(|(_, o)| o.leaked).sum();
    let panics = results.iter().filter(|(_, o)| o.panicked).count();
    let broken: Vec<_> = results
        .iter()
        .filter(|(_, o)| !o.problems.is_empty())
        .collect();
    for (name, o) in &results {
        let verdict = if !o.problems.is_empty() {
            "FAILED"
        } else if o.recovered {
            "recovered"
        } else {
            "failed cleanly"
        };
        println!("{verdict:>15}  {name}");
    }
    for (name, o) in &broken {
        println!("\n=== {name}\n{}", o.problems.join("\n"));
    }
    println!(
        "\nfault matrix: {tried} faults tried, {recovered} recovered, {clean} failed cleanly, \
         {} broken; rows lost {lost}, rows doubled {doubled}, secrets leaked {leaked}, panics {panics}",
        broken.len()
    );
    assert!(tried > 0, "no case selected");
    assert_eq!(lost, 0, "rows lost");
    assert_eq!(doubled, 0, "rows doubled");
    assert_eq!(leaked, 0, "secrets leaked");
    assert_eq!(panics, 0, "panics");
    let names: Vec<_> = broken.iter().map(|(n, _)| *n).collect();
    assert!(
        broken.is_empty(),
        "cases that broke the contract: {names:?}"
    );
}

/// The harness itself must be able to fail: a doubled row and a lost row are counted.
#[test]
fn diff_counts_lost_and_doubled_rows() {
    let want = rows("a\n1\n2\n");
    assert_eq!(diff(&want, &rows("a\n1\n2\n")), (0, 0));
    assert_eq!(diff(&want, &rows("a\n1\n2\n2\n")), (0, 1));
    assert_eq!(diff(&want, &rows("a\n1\n")), (1, 0));
    assert!(mentions_id("job 12 failed", 12));
    assert!(!mentions_id("job 123 failed", 12));
    assert!(looks_temporary(Path::new("in/tables/.src.csv.tmp")));
    assert!(!looks_temporary(Path::new("in/tables/src.csv")));
}

// ---------------------------------------------------------------------------------------------------------
// SIGTERM: containers are stopped with SIGTERM; the run must stop promptly and leave nothing half-done.

/// How long a SIGTERMed run may take to exit.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// A run stopped by SIGTERM, with everything needed to inspect what it left.
struct Stopped {
    work: tempfile::TempDir,
    code: Option<i32>,
    stderr: String,
    took: Duration,
    stack: Stack,
    emu: Emulator,
    _store: tempfile::TempDir,
}

/// Starts `op` with `faults` that keep it busy, sends SIGTERM after `after`, and waits for the exit.
fn terminate_during(op: Op, faults: Vec<FaultRule>, after: Duration) -> Stopped {
    let stack = Stack::new();
    let store = tempfile::tempdir().unwrap();
    let emu = stack.emulator(store.path());
    // The faults, not a job deadline, must be what keeps the run busy.
    let Prepared {
        work, mut command, ..
    } = prepare(&stack, &emu, op, 600);
    for rule in faults {
        emu.add_fault(rule).unwrap();
    }
    command
        .stdout(fs::File::create(work.path().join("stdout.txt")).unwrap())
        .stderr(fs::File::create(work.path().join("stderr.txt")).unwrap());
    let mut child = command.spawn().unwrap();
    std::thread::sleep(after);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before SIGTERM; stderr: {}",
        fs::read_to_string(work.path().join("stderr.txt")).unwrap_or_default()
    );
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    let code = wait_until(&mut child, sent + Duration::from_secs(30));
    let took = sent.elapsed();
    let stderr = fs::read_to_string(work.path().join("stderr.txt")).unwrap_or_default();
    let code = match code {
        Some(c) => c,
        None => panic!("still running 30 s after SIGTERM; stderr: {stderr}"),
    };
    Stopped {
        work,
        code,
        stderr,
        took,
        stack,
        emu,
        _store: store,
    }
}

fn assert_stopped(code: Option<i32>, stderr: &str, took: Duration) {
    println!("stopped {took:.2?} after SIGTERM, exit {code:?}");
    assert!(took < STOP_LIMIT, "took {took:?} to stop after SIGTERM");
    assert!(
        matches!(code, Some(1 | 2)),
        "exit {code:?} after SIGTERM (expected 1 or 2: a handled stop); stderr: {stderr}"
    );
    assert!(!stderr.contains("panic"), "{stderr}");
    assert!(!stderr.contains(TOKEN));
}

#[test]
fn sigterm_during_export_waiting_for_a_job() {
    let Stopped {
        work,
        code,
        stderr,
        took,
        ..
    } = terminate_during(
        Op::Export,
        vec![job_hang("tableExport")],
        Duration::from_millis(1500),
    );
    assert_stopped(code, &stderr, took);
    let left = files_below(&work.path().join("files"));
    assert!(left.is_empty(), "files left at the export target: {left:?}");
    assert!(files_below(&work.path().join("tmp")).is_empty());
}

#[test]
fn sigterm_during_export_mid_slice() {
    // The slice answers only after 60 s: the run is inside the download when the signal comes.
    let Stopped {
        work,
        code,
        stderr,
        took,
        ..
    } = terminate_during(
        Op::Export,
        vec![delay("GET", SLICE, 60_000)],
        Duration::from_millis(2500),
    );
    assert_stopped(code, &stderr, took);
    let left = files_below(&work.path().join("files"));
    assert!(left.is_empty(), "files left at the export target: {left:?}");
    assert!(files_below(&work.path().join("tmp")).is_empty());
}

#[test]
fn sigterm_during_import() {
    let Stopped {
        code,
        stderr,
        took,
        stack,
        emu,
        _store,
        ..
    } = terminate_during(
        Op::ImportIncr,
        vec![job_hang("tableImport")],
        Duration::from_millis(1500),
    );
    assert_stopped(code, &stderr, took);
    // The hung job never ran: the table is as it was.
    let have = stack.dump(&emu, DST).expect("table still exists");
    assert_eq!(diff(&rows(DST_SEED_CSV), &rows(&have)), (0, 0));
}

#[test]
fn sigterm_during_job_export() {
    let Stopped {
        work,
        code,
        stderr,
        took,
        ..
    } = terminate_during(
        Op::Job,
        vec![delay("GET", SLICE, 60_000)],
        Duration::from_millis(2500),
    );
    assert_stopped(code, &stderr, took);
    let data = work.path().join("data");
    for p in files_below(&data) {
        assert!(!looks_temporary(&p), "temporary file left: {}", p.display());
    }
    assert!(
        !data.join("in/tables/src.csv").exists(),
        "a partial input table is visible"
    );
    assert!(
        !data.join("in/tables/src.csv.manifest").exists(),
        "a manifest for an unfinished export"
    );
    assert!(
        files_below(&data.join("out/tables")).is_empty(),
        "outputs of an interrupted job"
    );
    assert_state_unmoved_if_written(&data);
}

/// An interrupted job may leave the state file unwritten; if it wrote one, the state did not move.
fn assert_state_unmoved_if_written(data: &Path) {
    if let Ok(state) = fs::read(data.join("out/state.json")) {
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        assert_eq!(
            state,
            serde_json::from_str::<serde_json::Value>(IN_STATE).unwrap()
        );
    }
}

#[test]
fn sigterm_during_job_import() {
    let Stopped {
        work,
        code,
        stderr,
        took,
        stack,
        emu,
        _store,
    } = terminate_during(
        Op::Job,
        vec![job_hang("tableImport")],
        Duration::from_millis(3000),
    );
    assert_stopped(code, &stderr, took);
    let data = work.path().join("data");
    for p in files_below(&data) {
        assert!(!looks_temporary(&p), "temporary file left: {}", p.display());
    }
    // The signal came while the (hung) import job was being waited for.
    assert!(
        !stack.unsuccessful_jobs(&emu).is_empty(),
        "no import job was pending when SIGTERM came"
    );
    // The load never ran: the target is as it was, and the state did not move.
    let have = stack.dump(&emu, DST).expect("table still exists");
    assert_eq!(diff(&rows(DST_SEED_CSV), &rows(&have)), (0, 0));
    assert_state_unmoved_if_written(&data);
}

#[test]
fn sigterm_during_transform() {
    // A query that runs for minutes on one thread: the signal must not wait for DuckDB.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    for d in ["in/tables", "in/files", "out/tables", "out/files"] {
        fs::create_dir_all(data.join(d)).unwrap();
    }
    fs::create_dir_all(work.path().join("tmp")).unwrap();
    fs::write(data.join("in/state.json"), IN_STATE).unwrap();
    let config = serde_json::json!({
        "storage": {"output": {"tables": [{"source": "r.csv", "destination": "out.c-x.r"}]}},
        "parameters": {"steps": ["transform"], "threads": 1, "blocks": [{"name": "b", "codes": [
            {"name": "slow", "script": [
                "CREATE TABLE r AS SELECT sum(i * i % 7) AS s FROM range(100000000000) t(i)"
            ]}
        ]}]}
    });
    fs::write(data.join("config.json"), config.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", work.path().join("tmp"))
        .env("KBC_DATADIR", format!("{}/", data.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(work.path().join("stdout.txt")).unwrap())
        .stderr(fs::File::create(work.path().join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the query ended early");
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let sent = Instant::now();
    let code = wait_until(&mut child, sent + Duration::from_secs(30));
    let took = sent.elapsed();
    let stderr = fs::read_to_string(work.path().join("stderr.txt")).unwrap_or_default();
    assert_stopped(code.flatten(), &stderr, took);
    assert!(
        files_below(&data.join("out/tables")).is_empty(),
        "outputs of an interrupted transform"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("out/state.json")).unwrap()).unwrap();
    assert_eq!(
        state,
        serde_json::from_str::<serde_json::Value>(IN_STATE).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------------------
// A whole job as an unprivileged uid, with only the data folder and /tmp writable.

#[test]
fn whole_job_as_unprivileged_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to switch to an unprivileged uid");
        return;
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv (util-linux) is needed for this test");
    let stack = Stack::new();
    let store = tempfile::tempdir().unwrap();
    let emu = stack.emulator(store.path());
    let Prepared { work, .. } = prepare(&stack, &emu, Op::Job, JOB_TIMEOUT_SECS);
    // The build folder may not be reachable by another user: copy the binary next to the data.
    let bin = work.path().join("kbc-runner");
    fs::copy(env!("CARGO_BIN_EXE_kbc-runner"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let data = work.path().join("data");
    open_up(&data);
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", "/tmp")
        .env("AWS_ENDPOINT_URL_S3", emu.url())
        .env("KBC_DATADIR", format!("{}/", data.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let have = stack.dump(&emu, DST).unwrap();
    let mut want = rows(DST_SEED_CSV);
    want.extend(rows(SRC_CSV));
    assert_eq!(diff(&want, &rows(&have)), (0, 0), "{have}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(data.join("out/state.json")).unwrap().uid(),
        65534
    );
    assert_eq!(
        fs::metadata(data.join("in/tables/src.csv")).unwrap().uid(),
        65534
    );
    // Only the data folder was writable: nothing appeared next to it.
    let mut siblings: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["data", "files", "kbc-runner", "tmp"]);
}
