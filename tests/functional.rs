//! Datadir functional tests, after Keboola's convention (keboola/datadir-tests): every folder in
//! `tests/functional/` is one case that runs the built binary on a copy of its `source/data` and compares
//! the exit code, stdout/stderr patterns, the produced `out/` folder and, when the case seeds Storage, the
//! Storage tables afterwards. The semantics are documented in `tests/functional/README.md`.
//!
//! Cases in `tests/functional/_must-fail/` carry a deliberately wrong expectation; the harness must report
//! each of them as a failure, which proves it can fail.

mod common;

use common::rows::try_table;
use common::stack::Stack;
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "functional-test-token-5f1c2a9e";
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functional");
    let mut trials = Vec::new();
    for case in case_dirs(&root) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let same = case.clone();
        trials.push(Trial::test(name.clone(), move || run_case(&same, false)));
        // The platform hands over config.json with every mapping default filled in: the same case with
        // that config must give the same result.
        trials.push(Trial::test(format!("normalised::{name}"), move || {
            run_case(&case, true)
        }));
    }
    for case in case_dirs(&root.join("_must-fail")) {
        let name = format!(
            "harness-detects::{}",
            case.file_name().unwrap().to_string_lossy()
        );
        trials.push(Trial::test(name, move || match run_case(&case, false) {
            Ok(()) => Err("the harness accepted a case whose expectation is wrong".into()),
            Err(_) => Ok(()),
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Case folders, sorted; folders starting with `_` or `.` are not cases.
fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        p.is_dir() && !name.starts_with('_') && !name.starts_with('.')
    });
    dirs.sort();
    dirs
}

/// The steps of a case: the case itself, or its `NN-name/` subfolders in order (a chained case).
fn steps(case: &Path) -> Vec<PathBuf> {
    let mut chained: Vec<PathBuf> = fs::read_dir(case)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    chained.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        p.is_dir()
            && name.len() > 3
            && name[..2].chars().all(|c| c.is_ascii_digit())
            && &name[2..3] == "-"
    });
    chained.sort();
    if chained.is_empty() {
        vec![case.to_owned()]
    } else {
        chained
    }
}

/// Runs a case; `normalise`: with each step's config.json normalised as the platform writes it.
fn run_case(case: &Path, normalise: bool) -> Result<(), Failed> {
    let steps = steps(case);
    let needs_storage = steps
        .iter()
        .any(|s| s.join("source/storage").is_dir() || s.join("expected/storage").is_dir());
    let stack = if needs_storage {
        Some(Stack::try_start(TOKEN)?)
    } else {
        None
    };
    let mut previous_state: Option<Vec<u8>> = None;
    for step in &steps {
        let label = step
            .strip_prefix(case)
            .unwrap_or(step)
            .display()
            .to_string();
        previous_state =
            run_step(step, stack.as_ref(), previous_state, normalise).map_err(|e| {
                Failed::from(if label.is_empty() {
                    e
                } else {
                    format!("step {label}: {e}")
                })
            })?;
    }
    Ok(())
}

/// Runs one step; returns the produced `out/state.json` for the next step of a chain.
fn run_step(
    step: &Path,
    stack: Option<&Stack>,
    previous_state: Option<Vec<u8>>,
    normalise: bool,
) -> Result<Option<Vec<u8>>, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = work.path().join("data");
    let source = step.join("source/data");
    if source.is_dir() {
        copy_tree(&source, &data).map_err(|e| format!("copying {}: {e}", source.display()))?;
    } else {
        fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    }
    if normalise {
        normalise_config(&data.join("config.json"))?;
    }
    if let Some(state) = previous_state {
        let in_state = data.join("in/state.json");
        if !in_state.exists() {
            fs::create_dir_all(data.join("in")).map_err(|e| e.to_string())?;
            fs::write(&in_state, state).map_err(|e| e.to_string())?;
        }
    }
    // The platform creates these; git keeps no empty folders. Skipped where a case replaced one by a file.
    for dir in ["in/tables", "in/files", "out/tables", "out/files"] {
        let _ = fs::create_dir_all(data.join(dir));
    }

    if let Some(stack) = stack {
        let seed = step.join("source/storage");
        if seed.is_dir() {
            stack
                .runtime
                .block_on(stack.emulator.seed_dir(&seed))
                .map_err(|e| format!("seeding Storage from {}: {e:#}", seed.display()))?;
        }
    }

    let mut command = common::binary::kbc_runner();
    command
        .env("KBC_DATADIR", format!("{}/", data.display()))
        .env("TMPDIR", work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(stack) = stack {
        // The emulator serves file storage at its own URL, the way users point AWS SDKs at it.
        command
            .env("KBC_URL", stack.emulator.url())
            .env("KBC_TOKEN", TOKEN)
            .env("AWS_ENDPOINT_URL_S3", stack.emulator.url());
    }
    for (key, value) in read_env_file(&step.join("env"), stack)? {
        command.env(key, value);
    }
    let expected_stats = read_optional(&step.join("expected/storage/stats.json"))?;
    let stats_before = match (&expected_stats, stack) {
        (Some(_), Some(stack)) => Some(emulator_stats(stack)?),
        (Some(_), None) => return Err("expected/storage/stats.json needs a Storage stack".into()),
        _ => None,
    };
    let (code, stdout, stderr) = run_with_timeout(command)?;

    let context = || format!("\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let expected_code = read_expected_code(step)?;
    if code != Some(expected_code) {
        return Err(format!(
            "exit code {code:?}, expected {expected_code}{}",
            context()
        ));
    }
    if code == Some(101) {
        return Err(format!(
            "the binary panicked with exit code 101{}",
            context()
        ));
    }
    if let Some(pattern) = read_optional(&step.join("expected-stdout"))?
        && !matches_pattern(pattern.trim(), stdout.trim())
    {
        return Err(format!(
            "stdout does not match expected-stdout:\n{pattern}{}",
            context()
        ));
    }
    match read_optional(&step.join("expected-stderr"))? {
        Some(pattern) if !matches_pattern(pattern.trim(), stderr.trim()) => {
            return Err(format!(
                "stderr does not match expected-stderr:\n{pattern}{}",
                context()
            ));
        }
        None if expected_code == 0 && !stderr.trim().is_empty() => {
            return Err(format!(
                "a successful run wrote to stderr (the platform shows it as an error){}",
                context()
            ));
        }
        _ => {}
    }

    check_no_secrets(step, &data, &stdout, &stderr)?;

    let expected_out = step.join("expected/data/out");
    if expected_out.is_dir() {
        compare_trees(&expected_out, &data.join("out"))?;
    }
    let expected_tables = step.join("expected/storage/tables");
    if expected_tables.is_dir() {
        let stack = stack.ok_or("expected/storage needs a Storage stack")?;
        compare_storage(stack, &expected_tables)?;
    }
    if let (Some(expected), Some(before), Some(stack)) = (expected_stats, stats_before, stack) {
        compare_stats(&expected, &before, &emulator_stats(stack)?)?;
    }
    Ok(fs::read(data.join("out/state.json")).ok())
}

/// The emulator's counters (`GET /_emulator/stats`).
fn emulator_stats(stack: &Stack) -> Result<serde_json::Value, String> {
    let url = format!("{}/_emulator/stats", stack.emulator.url());
    stack.runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(&url)
            .header("X-StorageApi-Token", TOKEN)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        response
            .json::<serde_json::Value>()
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    })
}

/// `expected/storage/stats.json` against what this step did: the file transfers it caused (counters
/// after minus before) and the workspaces that exist after it. Only the keys the file lists are compared.
fn compare_stats(
    expected: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> Result<(), String> {
    let expected: serde_json::Value =
        serde_json::from_str(expected).map_err(|e| format!("expected/storage/stats.json: {e}"))?;
    let mut actual = serde_json::json!({ "workspaces": after["workspaces"] });
    for key in ["uploads", "downloads", "bytesUp", "bytesDown"] {
        let n = |v: &serde_json::Value| v["fileTransfers"][key].as_u64().unwrap_or(0);
        actual["fileTransfers"][key] = n(after).saturating_sub(n(before)).into();
    }
    let subset = |e: &serde_json::Value, a: &serde_json::Value| -> Vec<String> {
        let mut wrong = Vec::new();
        for (k, v) in e.as_object().into_iter().flatten() {
            match v.as_object() {
                Some(inner) => {
                    for (k2, v2) in inner {
                        if &a[k][k2] != v2 {
                            wrong.push(format!("{k}.{k2}: expected {v2}, got {}", a[k][k2]));
                        }
                    }
                }
                None if &a[k] != v => wrong.push(format!("{k}: expected {v}, got {}", a[k])),
                None => {}
            }
        }
        wrong
    };
    let wrong = subset(&expected, &actual);
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("emulator stats differ: {}", wrong.join("; ")))
    }
}

/// Rewrites config.json the way the platform delivers it: every input- and output-mapping item with all
/// the defaults its configuration tree fills in (keboola/platform-libraries input-mapping
/// `Configuration/Table.php`, output-mapping `Configuration/Table`), and empty `storage`, `parameters`,
/// `authorization` and `image_parameters` objects. Existing values are kept; new keys go last, so line
/// numbers in error messages stay the same. A file that is not a JSON object is left alone.
fn normalise_config(path: &Path) -> Result<(), String> {
    use serde_json::{Value, json};
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(&text) else {
        return Ok(());
    };
    fn fill(item: &mut Value, defaults: &Value) {
        if let (Value::Object(item), Value::Object(defaults)) = (item, defaults) {
            for (key, value) in defaults {
                item.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    let input_defaults = json!({
        "columns": [], "column_types": [], "where_values": [], "where_operator": "eq",
        "overwrite": false, "use_view": false, "keep_internal_timestamp_column": true
    });
    let output_defaults = json!({
        "primary_key": [], "distribution_key": [], "columns": [], "incremental": false,
        "delete_where_values": [], "delete_where_operator": "eq", "delimiter": ",", "enclosure": "\"",
        "metadata": [], "column_metadata": [], "write_always": false, "tags": [], "schema": []
    });
    for key in ["storage", "parameters", "authorization", "image_parameters"] {
        root.entry(key).or_insert_with(|| json!({}));
    }
    root.entry("action").or_insert_with(|| json!("run"));
    for (side, defaults) in [("input", &input_defaults), ("output", &output_defaults)] {
        let tables = root
            .get_mut("storage")
            .and_then(|s| s.get_mut(side))
            .and_then(|s| s.get_mut("tables"))
            .and_then(Value::as_array_mut);
        for item in tables.into_iter().flatten() {
            fill(item, defaults);
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(root)).map_err(|e| e.to_string())?;
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `KEY=VALUE` lines; `{{url}}` and `{{token}}` are replaced with the emulator's URL and token.
fn read_env_file(path: &Path, stack: Option<&Stack>) -> Result<Vec<(String, String)>, String> {
    let Some(text) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    let url = stack.map(|s| s.emulator.url()).unwrap_or_default();
    let mut vars = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: `{line}` is not KEY=VALUE", path.display()))?;
        vars.push((
            key.to_owned(),
            value.replace("{{url}}", &url).replace("{{token}}", TOKEN),
        ));
    }
    Ok(vars)
}

fn read_expected_code(step: &Path) -> Result<i32, String> {
    match read_optional(&step.join("expected-code"))? {
        None => Ok(0),
        Some(text) => match text.trim() {
            c @ ("0" | "1" | "2") => Ok(c.parse().unwrap()),
            other => Err(format!("expected-code must be 0, 1 or 2, not `{other}`")),
        },
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.replace("\r\n", "\n"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

fn run_with_timeout(mut command: Command) -> Result<(Option<i32>, String, String), String> {
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting kbc-runner: {e}"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            return Err(format!("kbc-runner did not finish within {RUN_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    Ok((status.code(), stdout, stderr))
}

/// The token and every `#` value of the case's config must not appear in any output.
fn check_no_secrets(step: &Path, data: &Path, stdout: &str, stderr: &str) -> Result<(), String> {
    let mut secrets = vec![TOKEN.to_owned()];
    if let Ok(text) = fs::read_to_string(step.join("source/data/config.json"))
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
    {
        collect_hash_values(&value, false, &mut secrets);
    }
    secrets.retain(|s| s.len() >= 4);
    let mut outputs = vec![
        ("stdout".to_owned(), stdout.to_owned()),
        ("stderr".to_owned(), stderr.to_owned()),
    ];
    for file in files_under(&data.join("out")) {
        if let Ok(bytes) = fs::read(data.join("out").join(&file)) {
            outputs.push((
                format!("out/{file}"),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    for (name, text) in outputs {
        if let Some(secret) = secrets.iter().find(|s| text.contains(s.as_str())) {
            let shown: String = secret.chars().take(3).collect();
            return Err(format!("a secret ({shown}…) appears in {name}"));
        }
    }
    Ok(())
}

fn collect_hash_values(value: &serde_json::Value, secret: bool, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| collect_hash_values(v, secret || k.starts_with('#'), out)),
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|v| collect_hash_values(v, secret, out)),
        serde_json::Value::String(s) if secret => out.push(s.clone()),
        serde_json::Value::Number(n) if secret => out.push(n.to_string()),
        _ => {}
    }
}

/// Relative paths of the files under `root` (hidden files and `.gitkeep` excluded).
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for entry in rd.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn compare_trees(expected: &Path, actual: &Path) -> Result<(), String> {
    let want = files_under(expected);
    let got = files_under(actual);
    if want != got {
        return Err(format!("out/ holds {got:?}, expected {want:?}"));
    }
    for file in want {
        let e = fs::read(expected.join(&file)).map_err(|e| e.to_string())?;
        let a = fs::read(actual.join(&file)).map_err(|e| e.to_string())?;
        compare_file(&file, &e, &a).map_err(|m| format!("out/{file}: {m}"))?;
    }
    Ok(())
}

/// JSON as JSON values (key order and whitespace do not matter), CSV as a header plus a set of rows
/// (row order is not guaranteed by SQL or Storage), anything else as text up to trailing whitespace.
fn compare_file(name: &str, expected: &[u8], actual: &[u8]) -> Result<(), String> {
    let is_json = name.ends_with(".json") || name.ends_with(".manifest");
    if is_json {
        let e: serde_json::Value = serde_json::from_slice(expected)
            .map_err(|e| format!("expected file is not JSON: {e}"))?;
        let a: serde_json::Value =
            serde_json::from_slice(actual).map_err(|e| format!("not JSON: {e}"))?;
        if e != a {
            return Err(format!(
                "JSON differs\nexpected: {}\nactual:   {}",
                serde_json::to_string(&e).unwrap(),
                serde_json::to_string(&a).unwrap()
            ));
        }
        return Ok(());
    }
    if name.ends_with(".csv") {
        let (e_head, e_rows) = try_table(expected)?;
        let (a_head, a_rows) = try_table(actual)?;
        if e_head != a_head {
            return Err(format!("header {a_head:?}, expected {e_head:?}"));
        }
        if e_rows != a_rows {
            return Err(format!(
                "rows differ (sorted)\nexpected: {e_rows:?}\nactual:   {a_rows:?}"
            ));
        }
        return Ok(());
    }
    let e = String::from_utf8_lossy(expected);
    let a = String::from_utf8_lossy(actual);
    if e.trim_end() != a.trim_end() {
        return Err(format!("text differs\nexpected:\n{e}\nactual:\n{a}"));
    }
    Ok(())
}

fn compare_storage(stack: &Stack, expected: &Path) -> Result<(), String> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in fs::read_dir(expected)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
    {
        files.insert(
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        );
    }
    for (name, path) in files {
        if let Some(table_id) = name.strip_suffix(".absent") {
            let dump = stack
                .runtime
                .block_on(stack.emulator.dump_table(table_id))
                .map_err(|e| format!("{e:#}"))?;
            if dump.is_some() {
                return Err(format!(
                    "Storage table {table_id} exists, expected it to be absent"
                ));
            }
        } else if let Some(table_id) = name.strip_suffix(".csv") {
            let dump = stack
                .runtime
                .block_on(stack.emulator.dump_table(table_id))
                .map_err(|e| format!("{e:#}"))?
                .ok_or_else(|| format!("Storage table {table_id} does not exist"))?;
            let want = fs::read(&path).map_err(|e| e.to_string())?;
            compare_file(&name, &want, dump.as_bytes())
                .map_err(|m| format!("Storage table {table_id}: {m}"))?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Matches output against a pattern with PHPUnit-style placeholders: `%a` one or more of anything,
/// `%A` zero or more of anything, `%s` one or more characters within a line, `%S` zero or more within a
/// line, `%d` one or more digits, `%%` a literal `%`.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let mut memo = std::collections::HashMap::new();
    match_at(&p, 0, &t, 0, &mut memo)
}

fn match_at(
    p: &[char],
    pi: usize,
    t: &[char],
    ti: usize,
    memo: &mut std::collections::HashMap<(usize, usize), bool>,
) -> bool {
    if let Some(&done) = memo.get(&(pi, ti)) {
        return done;
    }
    let result = if pi == p.len() {
        ti == t.len()
    } else if p[pi] == '%' && pi + 1 < p.len() {
        let kind = p[pi + 1];
        let accepts = |c: char| match kind {
            'a' | 'A' => true,
            's' | 'S' => c != '\n',
            'd' => c.is_ascii_digit(),
            _ => false,
        };
        match kind {
            '%' => ti < t.len() && t[ti] == '%' && match_at(p, pi + 2, t, ti + 1, memo),
            'a' | 'A' | 's' | 'S' | 'd' => {
                let min = if matches!(kind, 'A' | 'S') { 0 } else { 1 };
                let mut n = 0;
                let mut ok = false;
                loop {
                    if n >= min && match_at(p, pi + 2, t, ti + n, memo) {
                        ok = true;
                        break;
                    }
                    if ti + n < t.len() && accepts(t[ti + n]) {
                        n += 1;
                    } else {
                        break;
                    }
                }
                ok
            }
            _ => ti < t.len() && t[ti] == '%' && match_at(p, pi + 1, t, ti + 1, memo),
        }
    } else {
        ti < t.len() && t[ti] == p[pi] && match_at(p, pi + 1, t, ti + 1, memo)
    };
    memo.insert((pi, ti), result);
    result
}
