//! The bad-input catalogue (issue 7): every kind of malformed input a user can hand the runner, each with
//! the exit code and the words the error must contain. The README's "Bad input" section lists the same
//! cases; keep them in step.
//!
//! Inputs enter three ways: `config.json` (a `run`), a CSV given to `tables import`, and a CSV the
//! platform placed in `in/tables` for the transform. Every case also asserts: no panic, no secret in the
//! output, and a Storage table untouched by a rejected load.

mod common;

use common::binary::{Ran, kbc_runner};
use common::rows::{self, Rows};
use common::stack::{runtime, start_emulator};
use kbc_emulator::Emulator;
use std::fs;
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "kbc-bad-input-token-93c1f0";
const DST: &str = "out.c-bad.dst";
const DST_SEED_CSV: &str = "id,name,note\n1,ann,first\n2,ben,second\n";

fn start(rt: &tokio::runtime::Runtime, store: &Path) -> Emulator {
    let emu = rt.block_on(start_emulator(store, TOKEN)).unwrap();
    rt.block_on(emu.seed_table(DST, DST_SEED_CSV.as_bytes(), &["id".to_owned()]))
        .unwrap();
    emu
}

/// A run of the binary: never a panic, never the token in its output.
fn run(command: Command) -> Ran {
    let ran = common::binary::run(command);
    assert!(!ran.stderr.contains("panic"), "panicked: {}", ran.stderr);
    assert!(
        !ran.stdout.contains(TOKEN) && !ran.stderr.contains(TOKEN),
        "token leaked"
    );
    ran
}

/// Runs `body` for every case, so one run reports every mismatch; fails if any case failed.
fn each<T>(cases: impl IntoIterator<Item = T>, name: impl Fn(&T) -> String, body: impl Fn(T)) {
    let mut failed = Vec::new();
    for case in cases {
        let n = name(&case);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(case))).is_err() {
            failed.push(n);
        }
    }
    assert!(failed.is_empty(), "cases that failed: {failed:?}");
}

fn binary(tmp: &Path) -> Command {
    let mut c = kbc_runner();
    c.env("TMPDIR", tmp);
    c
}

/// Checks a failure: the exit code and that the message contains each of `words` (case-insensitive).
fn expect_failure(name: &str, ran: &Ran, code: i32, words: &[&str]) {
    assert_eq!(
        ran.code,
        Some(code),
        "{name}: exit code; stderr: {}",
        ran.stderr
    );
    let lower = ran.stderr.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "{name}: the error does not mention `{w}`: {}",
            ran.stderr
        );
    }
    // A message, not a dump (nor a copy of the data).
    assert!(
        ran.stderr.len() < 4000,
        "{name}: an error of {} bytes",
        ran.stderr.len()
    );
    assert!(
        ran.stderr.trim().lines().count() <= 5,
        "{name}: error too long: {}",
        ran.stderr
    );
}

// ---------------------------------------------------------------------------------------------------------
// CSV files given to `tables import`

/// What `tables import` must do with one kind of bad file.
struct ImportCase {
    name: &'static str,
    file: Vec<u8>,
    args: &'static [&'static str],
    /// None: the load succeeds and the table then holds `rows` (plus the seed for incremental loads).
    fails: Option<(i32, &'static [&'static str])>,
    rows: &'static str,
}

fn import_cases() -> Vec<ImportCase> {
    let huge = "h".repeat(2 << 20);
    let huge_csv = format!("id,name,note\n3,huge,{huge}\n");
    vec![
        ImportCase {
            name: "ragged-rows",
            file: b"id,name,note\n3,cid,x\n4,dan\n".to_vec(),
            args: &["--incremental"],
            fails: Some((1, &["line 3"])),
            rows: "",
        },
        ImportCase {
            name: "wrong-delimiter",
            file: b"id;name;note\n3;cid;x\n".to_vec(),
            args: &["--incremental"],
            fails: Some((1, &["missing columns", "delimiter"])),
            rows: "",
        },
        ImportCase {
            name: "semicolon-with-delimiter-option",
            file: b"id;name;note\n3;cid;x\n".to_vec(),
            args: &["--incremental", "--delimiter", ";"],
            fails: None,
            rows: "id,name,note\n3,cid,x\n",
        },
        ImportCase {
            name: "utf8-bom",
            file: b"\xEF\xBB\xBFid,name,note\n2,ben,changed\n3,cid,new\n".to_vec(),
            args: &["--incremental"],
            fails: None,
            // The BOM is not part of the first column's name: `id` still matches the key, 2 is upserted.
            rows: "id,name,note\n2,ben,changed\n3,cid,new\n",
        },
        ImportCase {
            name: "duplicate-header",
            file: b"id,name,name\n3,cid,x\n".to_vec(),
            args: &["--incremental"],
            fails: Some((1, &["\"name\"", "more than once"])),
            rows: "",
        },
        ImportCase {
            name: "empty-file",
            file: Vec::new(),
            args: &["--incremental"],
            fails: Some((1, &["no header"])),
            rows: "",
        },
        ImportCase {
            name: "non-utf8",
            file: b"id,name,note\n3,caf\xE9,x\n".to_vec(),
            args: &["--incremental"],
            fails: Some((1, &["line 2", "utf-8"])),
            rows: "",
        },
        ImportCase {
            name: "huge-field",
            file: huge_csv.into_bytes(),
            args: &["--incremental"],
            fails: None,
            rows: "",
        },
    ]
}

#[test]
fn bad_csv_files_for_tables_import() {
    let rt = runtime();
    each(
        import_cases(),
        |c| c.name.to_owned(),
        |case| {
            let store = tempfile::tempdir().unwrap();
            let emu = start(&rt, store.path());
            let work = tempfile::tempdir().unwrap();
            let file = work.path().join("load.csv");
            fs::write(&file, &case.file).unwrap();
            let mut c = binary(work.path());
            c.env("KBC_URL", emu.url())
                .env("KBC_TOKEN", TOKEN)
                .env("AWS_ENDPOINT_URL_S3", emu.url())
                .args(["tables", "import", DST])
                .arg(&file)
                .args(case.args);
            let ran = run(c);
            let table = rt.block_on(emu.dump_table(DST)).unwrap().unwrap();
            let table = table_rows(&table);
            match case.fails {
                Some((code, words)) => {
                    expect_failure(case.name, &ran, code, words);
                    assert_eq!(
                        table,
                        table_rows(DST_SEED_CSV),
                        "{}: a rejected file changed the table",
                        case.name
                    );
                    assert!(ran.stderr.contains(DST), "{}: names the table", case.name);
                }
                None => {
                    assert_eq!(ran.code, Some(0), "{}: {}", case.name, ran.stderr);
                    let mut want = table_rows(DST_SEED_CSV);
                    if case.name == "huge-field" {
                        // The 2 MiB value arrives whole.
                        assert!(
                            table.iter().any(|r| r[0] == "3" && r[2].len() == 2 << 20),
                            "huge field not stored intact"
                        );
                        return;
                    }
                    let new = table_rows(case.rows);
                    want.retain(|r| !new.iter().any(|n| n[0] == r[0]));
                    want.extend(new);
                    want.sort();
                    assert_eq!(table, want, "{}", case.name);
                    assert_eq!(
                        rt.block_on(emu.dump_table(DST))
                            .unwrap()
                            .unwrap()
                            .lines()
                            .next(),
                        Some("\"id\",\"name\",\"note\""),
                        "{}: columns changed",
                        case.name
                    );
                }
            }
            rt.block_on(emu.shutdown());
        },
    );
}

fn table_rows(csv_text: &str) -> Rows {
    rows::table(csv_text.as_bytes()).1
}

// ---------------------------------------------------------------------------------------------------------
// Command-line and config.json mistakes

#[test]
fn invalid_table_ids_on_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    for (args, words) in [
        (
            &["tables", "export", "orders"][..],
            &["orders", "table id"][..],
        ),
        (&["tables", "export", "in.c-main"][..], &["in.c-main"][..]),
        (
            &["tables", "detail", "in.c-main.a.b"][..],
            &["in.c-main.a.b"][..],
        ),
    ] {
        let mut c = binary(work.path());
        // Unreachable on purpose: a malformed id must be refused before any request.
        c.env("KBC_URL", "http://127.0.0.1:9")
            .env("KBC_TOKEN", TOKEN)
            .args(args);
        let ran = run(c);
        expect_failure(&args.join(" "), &ran, 1, words);
    }
    let mut c = binary(work.path());
    c.env("KBC_URL", "http://127.0.0.1:9")
        .env("KBC_TOKEN", TOKEN)
        .args(["tables", "import", "in.c-main.t", "/nonexistent/load.csv"]);
    let ran = run(c);
    expect_failure("missing import file", &ran, 1, &["/nonexistent/load.csv"]);
}

/// A config case: `config.json` text, then the exit code and the words of the message.
fn run_config(config: &[u8], emu: Option<&Emulator>) -> Ran {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    for d in ["in/tables", "in/files", "out/tables", "out/files"] {
        fs::create_dir_all(data.join(d)).unwrap();
    }
    fs::write(data.join("config.json"), config).unwrap();
    let mut c = binary(work.path());
    c.env("KBC_DATADIR", format!("{}/", data.display()));
    if let Some(emu) = emu {
        c.env("KBC_URL", emu.url())
            .env("KBC_TOKEN", TOKEN)
            .env("AWS_ENDPOINT_URL_S3", emu.url());
    }
    let ran = run(c);
    let leftovers: Vec<_> = fs::read_dir(data.join("out/tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        ran.code == Some(0) || leftovers.is_empty(),
        "a rejected config produced outputs: {leftovers:?}"
    );
    ran
}

#[test]
fn bad_config_files() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        ("malformed JSON", b"{\"parameters\": {,}}", &["config.json", "line 1"]),
        ("not UTF-8", b"{\"parameters\": {\"x\": \"\xff\"}}", &["config.json"]),
        ("empty file", b"", &["config.json"]),
        ("an array", b"[]", &["config.json"]),
        (
            "wrong type",
            br#"{"parameters": {"concurrency": "four"}}"#,
            &["parameters.concurrency"],
        ),
        (
            "negative number",
            br#"{"parameters": {"concurrency": -1}}"#,
            &["parameters.concurrency"],
        ),
        (
            "a string boolean that is neither true nor false",
            br#"{"parameters": {"dtypes_infer": "yes"}}"#,
            &["parameters.dtypes_infer"],
        ),
        (
            "invalid output table id",
            br#"{"storage": {"output": {"tables": [{"source": "r.csv", "destination": "out.c-main"}]}}}"#,
            &["out.c-main", "table id"],
        ),
        (
            "a delimiter of two UTF-8 bytes",
            r#"{"storage": {"output": {"tables": [{"source": "r.csv", "destination": "out.c-main.r",
                "delimiter": "§"}]}}}"#
                .as_bytes(),
            &["delimiter `§`", "2 bytes in UTF-8"],
        ),
        (
            "secret in a wrong-type value",
            br##"{"parameters": {"#storage_token": 12345678901}}"##,
            &["#storage_token"],
        ),
    ];
    each(
        cases,
        |c| c.0.to_owned(),
        |(name, config, words)| {
            let ran = run_config(config, None);
            expect_failure(name, &ran, 1, words);
            assert!(
                !ran.stderr.contains("12345678901"),
                "{name}: a # value leaked"
            );
        },
    );
}

#[test]
fn invalid_input_table_id_in_config() {
    let rt = runtime();
    let store = tempfile::tempdir().unwrap();
    let emu = start(&rt, store.path());
    let config =
        br#"{"storage": {"input": {"tables": [{"source": "orders", "destination": "orders.csv"}]}},
                     "parameters": {"steps": ["export"]}}"#;
    let ran = run_config(config, Some(&emu));
    expect_failure("invalid input table id", &ran, 1, &["orders"]);
}

// ---------------------------------------------------------------------------------------------------------
// CSV files the platform placed in in/tables (transform only)

/// A file placed in `in/tables/t.csv`, and the words of the error (None: the run succeeds).
type DataCase = (&'static str, Vec<u8>, Option<&'static [&'static str]>);

/// A CSV whose first row has one value of `bytes` bytes.
fn one_huge_value(bytes: usize) -> Vec<u8> {
    let mut csv = b"id,name\n1,".to_vec();
    csv.resize(csv.len() + bytes, b'h');
    csv.extend_from_slice(b"\n2,b\n");
    csv
}

#[test]
fn bad_csv_files_in_the_data_folder() {
    let cases: Vec<DataCase> = vec![
        (
            "ragged rows",
            b"id,name\n1,a\n2\n".to_vec(),
            Some(&["t.csv", "dialect"]),
        ),
        (
            "non-UTF-8",
            b"id,name\n1,caf\xe9\n".to_vec(),
            Some(&["t.csv", "utf-8"]),
        ),
        ("empty file", Vec::new(), Some(&["t.csv", "empty"])),
        ("duplicate header", b"id,id\n1,2\n".to_vec(), None),
        ("BOM", b"\xEF\xBB\xBFid,name\n1,a\n".to_vec(), None),
        // Storage values go up to 16 MB: a 3 MiB one is data, not an error.
        ("huge field", one_huge_value(3 << 20), None),
        // Past the limit the error names the file and the limit, without quoting the row.
        (
            "too long a row",
            one_huge_value(17 << 20),
            Some(&["t.csv", "maximum line size"]),
        ),
    ];
    each(
        cases,
        |c| c.0.to_owned(),
        |(name, csv_bytes, failure)| {
            let work = tempfile::tempdir().unwrap();
            let data = work.path().join("data");
            for d in ["in/tables", "in/files", "out/tables", "out/files"] {
                fs::create_dir_all(data.join(d)).unwrap();
            }
            fs::write(data.join("in/tables/t.csv"), &csv_bytes).unwrap();
            fs::write(
            data.join("config.json"),
            br#"{"storage": {"output": {"tables": [{"source": "r.csv", "destination": "out.c-x.r"}]}},
                 "parameters": {"steps": ["transform"], "blocks": [{"name": "b", "codes": [{"name": "c",
                 "script": ["CREATE TABLE r AS SELECT * FROM t"]}]}]}}"#,
        )
        .unwrap();
            let mut c = binary(work.path());
            c.env("KBC_DATADIR", format!("{}/", data.display()));
            let ran = run(c);
            match failure {
                Some(words) => {
                    expect_failure(name, &ran, 1, words);
                    assert!(
                        !data.join("out/tables/r.csv.manifest").exists(),
                        "{name}: a manifest after a failed transform"
                    );
                }
                None => {
                    assert_eq!(ran.code, Some(0), "{name}: {}", ran.stderr);
                    let out = fs::read(data.join("out/tables/r.csv")).unwrap();
                    let mut reader = csv::Reader::from_reader(out.as_slice());
                    let header: Vec<String> = reader
                        .headers()
                        .unwrap()
                        .iter()
                        .map(str::to_owned)
                        .collect();
                    assert!(
                        !header[0].contains('\u{feff}'),
                        "{name}: BOM kept in {header:?}"
                    );
                    assert_eq!(header[0], "id", "{name}");
                    let rows: Vec<csv::StringRecord> =
                        reader.records().map(|r| r.unwrap()).collect();
                    let input = csv::Reader::from_reader(csv_bytes.as_slice())
                        .records()
                        .count();
                    assert_eq!(rows.len(), input, "{name}: rows");
                    if name == "huge field" {
                        assert_eq!(rows[0][1].len(), 3 << 20, "{name}: the value arrives whole");
                    }
                }
            }
        },
    );
}
