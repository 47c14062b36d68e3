"""Benchmark driver (run through bench/run, which installs the tools, builds the binary and, with --link,
makes the shaped link).

Every comparison runs in the same invocation, against the same emulator and the same data, and reports the
median wall time and the peak RSS (from /usr/bin/time -v) of several runs. Over a link (bench/run --link
RATE sets BENCH_LINK, BENCH_NETNS, BENCH_VETH and BENCH_EMU_HOST) the emulator runs in its own network
namespace; every transfer also reports the bytes that crossed the veth pair and its link limit: those
bytes ÷ the rate a plain TCP transfer measured on the same link.
"""

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
TOKEN = "bench-token-0123456789"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DUCKDB_CLI_VERSION = "1.5.6"
# bench/run installs duckdb 2.0 for the same-engine reference into its own venv.
_VENV_PYTHON = Path.home() / ".cache/kbc-runner/bench-venv/bin/python"
DUCKDB2_PYTHON = os.environ.get("BENCH_DUCKDB2_PYTHON") or str(_VENV_PYTHON if _VENV_PYTHON.exists() else sys.executable)
ROW_COUNTS = [int(n) for n in os.environ.get("BENCH_ROWS", "1000000,10000000").split(",")]
# The shaped link, when bench/run --link made one.
LINK = os.environ.get("BENCH_LINK", "")
LINK_BURST = os.environ.get("BENCH_LINK_BURST", "")
NETNS = os.environ.get("BENCH_NETNS", "")
VETH = os.environ.get("BENCH_VETH", "")
EMU_HOST = os.environ.get("BENCH_EMU_HOST", "127.0.0.1")
# Over a link only the steps that move data over it; transform, job-wait and start-up do not touch it.
ALL_STEPS = ["export", "import", "transform", "job", "engines", "wait", "startup"]
DEFAULT_STEPS = ["export", "import", "job", "engines"] if LINK else ALL_STEPS
STEPS = [s for s in os.environ.get("BENCH_STEPS", ",".join(DEFAULT_STEPS)).split(",") if s]
WRITE_README = os.environ.get("BENCH_README", "1") != "0"
# How often the import's Storage job is looked at (its own duration, taken off the wall time for the
# client time; the emulator's job stamps are whole seconds).
JOB_POLL = 0.05


def duckdb_cli_binary():
    """The DuckDB CLI binary itself. `duckdb` on PATH is the duckdb-cli package's Python entry point (under
    pyenv also behind a shell shim) that starts Python and then runs the binary as a child: 0.36 s more per
    call on this VM, which counted as the CLI's time."""
    import importlib.util
    spec = importlib.util.find_spec("duckdb_cli")
    if spec and spec.origin:
        exe = Path(spec.origin).parent / "duckdb"
        if os.access(exe, os.X_OK):
            return str(exe)
    return shutil.which("duckdb")


DUCKDB_CLI = duckdb_cli_binary()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def label_of(rows):
    return f"{rows // 1_000_000} M" if rows >= 1_000_000 and rows % 1_000_000 == 0 else f"{rows:,}".replace(",", " ")


def wire_bytes():
    """(down, up) bytes the link has carried so far: the host end's receive and transmit counters (down =
    from the emulator's namespace, what exports move; up = to it, what imports move)."""
    if not VETH:
        return (0, 0)
    stats = Path("/sys/class/net") / VETH / "statistics"
    return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())


class JobWatch:
    """Looks at the newest Storage job every JOB_POLL seconds while a command runs and keeps, per load job
    (tableImport, tableCreate) created meanwhile, when it was first seen processing and first seen done."""

    LOADS = ("tableImport", "tableCreate")

    def __init__(self, url):
        import requests
        self.url, self.session = url, requests.Session()
        self.session.headers["X-StorageApi-Token"] = TOKEN
        newest = self._jobs(1)
        self.after = newest[0]["id"] if newest else 0
        self.seen = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _jobs(self, limit):
        return self.session.get(f"{self.url}/v2/storage/jobs", params={"limit": limit}, timeout=10).json()

    def _watch(self):
        while not self.done.wait(JOB_POLL):
            self._look()

    def _look(self):
        try:
            jobs = self._jobs(2)
        except Exception:  # a poll lost to a busy emulator is only a less precise duration
            return
        now = time.monotonic()
        for job in jobs:
            if job["id"] <= self.after or job["operationName"] not in self.LOADS:
                continue
            seen = self.seen.setdefault(job["id"], {})
            if job["status"] in ("processing", "success", "error"):
                seen.setdefault("start", now)
            if job["status"] in ("success", "error"):
                seen.setdefault("end", now)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self._look()  # the command has ended: its job has too

    def seconds(self):
        return sum(s["end"] - s["start"] for s in self.seen.values() if "end" in s)


def timed(cmd, env=None, stdout=subprocess.DEVNULL, watch_url=None):
    """Runs a command under /usr/bin/time -v. Returns a dict: wall seconds, peak RSS MB, bytes down and up
    the link (0 over loopback) and, with watch_url, the seconds its load jobs took in Storage."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        full = ["/usr/bin/time", "-v", "-o", report.name] + [str(c) for c in cmd]
        watch = JobWatch(watch_url) if watch_url else None
        down0, up0 = wire_bytes()
        if watch:
            watch.__enter__()
        started = time.monotonic()
        try:
            proc = subprocess.run(full, env=env, stdout=stdout, stderr=subprocess.PIPE)
            wall = time.monotonic() - started
        finally:
            if watch:
                watch.__exit__()
        down1, up1 = wire_bytes()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
        text = Path(report.name).read_text()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"wall": wall, "rss": rss_kb / 1024.0, "down": down1 - down0, "up": up1 - up0,
            "job": watch.seconds() if watch else None}


DROP_CACHES = Path("/proc/sys/vm/drop_caches")
WARM = []  # input files every run reads: read into the page cache again after it is dropped
WARM_TOOLS = []  # files and folders of the tools' code, read back into the page cache with the inputs


def can_drop_caches():
    try:
        with DROP_CACHES.open("w") as f:
            f.write("1")
        return True
    except OSError:
        return False


CLEAN_CACHE = can_drop_caches()


def reset_page_cache():
    """Every run starts from the same page cache: written-back data dropped, the inputs read back in.

    On a VM with a full page cache, writing a file made the kernel reclaim pages first, which cost up to
    ten times the write itself (dd of 1.8 GB: 0.42 s after a drop, 4.25 s before) and made whichever
    tool ran later look slower. Needs root; without it the runs go as they come (said in the report)."""
    if not CLEAN_CACHE:
        return
    subprocess.run(["sync"], check=True)
    DROP_CACHES.write_text("1")
    # The inputs, and every tool's code and data files: a Python client would otherwise pay for reading
    # botocore's service models from disk, our binary for its 80 MB.
    for f in WARM + WARM_TOOLS:
        for path in Path(f).rglob("*") if Path(f).is_dir() else [Path(f)]:
            if path.is_file():
                with open(path, "rb") as fh:
                    while fh.read(1 << 24):
                        pass


def tool_files(binary):
    """Where each measured tool's code lives: our binary, pigz, the DuckDB CLI, both Pythons' standard
    libraries and the packages the Python tools import."""
    files = [binary, shutil.which("pigz"), DUCKDB_CLI, sys.executable]
    for python in {sys.executable, DUCKDB2_PYTHON}:
        out = subprocess.run(
            [python, "-c", "import importlib.util as u, sysconfig\n"
             "print(sysconfig.get_paths()['stdlib'])\n"
             "for m in ['kbcstorage', 'boto3', 'botocore', 's3transfer', 'requests', 'urllib3', 'duckdb', 'duckdb_cli']:\n"
             "    s = u.find_spec(m)\n"
             "    if s and s.submodule_search_locations: print(list(s.submodule_search_locations)[0])"],
            capture_output=True, text=True, check=True).stdout.split()
        files += out
    return [f for f in files if f]


def median_of(label, make_cmd, runs=RUNS, env=None, prepare=None, watch_url=None):
    """Runs a command `runs` times; returns the medians (wall, bytes on the link, Storage job seconds,
    client seconds = wall less the job) and the largest peak RSS."""
    got = []
    for i in range(runs):
        if prepare:
            prepare()
        reset_page_cache()
        m = timed(make_cmd(), env=env, watch_url=watch_url)
        got.append(m)
        extra = f", Storage job {m['job']:.2f} s" if m["job"] is not None else ""
        wire = f", {m['down'] / 1e6:.0f} MB down, {m['up'] / 1e6:.0f} MB up" if VETH else ""
        log(f"  {label} run {i + 1}: {m['wall']:.2f} s, {m['rss']:.0f} MB{extra}{wire}")
    med = lambda key: statistics.median(m[key] for m in got)
    out = {"wall": med("wall"), "rss": max(m["rss"] for m in got), "down": med("down"), "up": med("up"),
           "job": None, "client": None}
    if watch_url:
        out["job"] = med("job")
        out["client"] = statistics.median(m["wall"] - m["job"] for m in got)
    return out


class Emulator:
    def __init__(self, binary, store):
        # Over a link the emulator runs in the namespace bench/run made, behind the shaped veth pair.
        prefix = ["ip", "netns", "exec", NETNS] if NETNS else []
        self.proc = subprocess.Popen(
            prefix + [binary, "emulator", "--listen", f"{EMU_HOST}:0", "--store", store, "--token", TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline().strip()
        m = re.match(r"listening on (http://\S+)", line)
        if not m:
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = m.group(1)
        # Drain request logs so the pipe never fills.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def api(url, method, path, **kw):
    """A Storage API or control API request with the bench's token."""
    import requests
    return requests.request(method, f"{url}{path}", headers={"X-StorageApi-Token": TOKEN}, timeout=600, **kw)


def duckdb_sql(sql):
    subprocess.run([DUCKDB_CLI, "-c", sql], check=True)


def generate_csv(path, rows):
    """About 10 columns: integers, decimals, dates, timestamps, short and long strings with quotes,
    commas, newlines and non-ASCII characters."""
    duckdb_sql(f"""COPY (SELECT i AS id, i % 50000 AS customer_id,
        round((i * 7919 % 1000000) / 100.0, 2)::DECIMAL(12,2) AS amount, (i % 17) + 1 AS quantity,
        DATE '2024-01-01' + (i % 700)::INTEGER AS order_date,
        TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i % 100000) SECOND AS updated_at,
        ['new','paid','shipped','cancelled'][1 + i % 4] AS status,
        ['Praha','Brno','Zürich','Kraków','São Paulo','東京'][1 + i % 6] AS city,
        'Note ' || i || ': said "hello, world"' || CASE WHEN i % 10 = 0 THEN chr(10) || 'second line' ELSE '' END AS note,
        repeat('lorem ipsum ', 1 + i % 8) AS description
      FROM range({rows}) t(i)) TO '{path}' (HEADER, FORCE_QUOTE *)""")


def fetch_raw_slices(url, table_id, dest):
    """Exports the table once and downloads its gzipped slices untouched, for the pigz limit."""
    import boto3
    import requests
    headers = {"X-StorageApi-Token": TOKEN}
    job = requests.post(f"{url}/v2/storage/tables/{table_id}/export-async", headers=headers, data={"gzip": 1}).json()
    while job["status"] not in ("success", "error"):
        time.sleep(0.1)
        job = requests.get(f"{url}/v2/storage/jobs/{job['id']}", headers=headers).json()
    file_id = job["results"]["file"]["id"]
    detail = requests.get(f"{url}/v2/storage/files/{file_id}", headers=headers, params={"federationToken": 1}).json()
    manifest = requests.get(detail["url"]).json()
    creds = detail["credentials"]
    s3 = boto3.client("s3", endpoint_url=url, region_name=detail.get("region", "us-east-1"),
                      aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                      aws_session_token=creds["SessionToken"])
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, entry in enumerate(manifest["entries"]):
        bucket, key = entry["url"][len("s3://"):].split("/", 1)
        p = dest / f"slice{i:04d}.gz"
        s3.download_file(bucket, key, str(p))
        paths.append(p)
    return paths


class Results:
    """Rows of the table: step, row count, tool id (for the ratios and targets), tool name, measures."""

    def __init__(self):
        self.rows = []
        self.job_checks = []  # (rows, outputs identical, rows of each output, order lines changed)
        self.engines = []  # (rows, engine, measures, table data through the runner in bytes, output rows)

    def add(self, step, rows, tool, name, m):
        self.rows.append({"step": step, "rows": rows, "tool": tool, "name": name, **m})

    def get(self, step, rows, tool):
        for r in self.rows:
            if (r["step"], r["rows"], r["tool"]) == (step, rows, tool):
                return r
        return None


def main():
    binary = sys.argv[1]
    unknown = set(STEPS) - set(ALL_STEPS)
    if unknown:
        raise SystemExit(f"BENCH_STEPS: unknown steps {sorted(unknown)}; known: {', '.join(ALL_STEPS)}")
    work = Path(tempfile.mkdtemp(prefix="kbc-bench-"))
    results = Results()
    env = dict(os.environ, KBC_TOKEN=TOKEN)
    store = work / "store"
    link = None
    startup = waits = None
    if LINK:
        link = probe_link()
    emu = Emulator(binary, str(store))
    env["KBC_URL"] = emu.url
    env["AWS_ENDPOINT_URL_S3"] = emu.url
    py = sys.executable
    WARM_TOOLS[:] = tool_files(binary)
    try:
        for rows in ROW_COUNTS:
            if {"export", "import", "transform"} & set(STEPS):
                bench_steps(binary, emu, env, py, rows, work, results)
            if "job" in STEPS:
                bench_job(binary, emu, env, py, rows, work, results)
            if "engines" in STEPS:
                bench_engines(binary, emu, env, rows, work, results)
        if "wait" in STEPS:
            waits = bench_job_wait(binary, emu, env)
        if "startup" in STEPS:
            startup = bench_startup(binary, env)
    finally:
        emu.stop()
        # Gigabytes of generated tables and the emulator's store: never left behind, not even on failure.
        shutil.rmtree(work, ignore_errors=True)
    report(results, startup, waits, link)


def bench_steps(binary, emu, env, py, rows, work, results):
    """Export, import and transform of one generated table, each step alone."""
    label = label_of(rows)
    csv_path = work / f"data{rows}.csv"
    log(f"generating {rows} rows")
    generate_csv(csv_path, rows)
    WARM[:] = [csv_path]
    table = f"in.c-bench.t{rows}"
    import_cmd = [binary, "tables", "import", table, csv_path, "--create", "--primary-key", "id"]
    if "import" in STEPS:
        log(f"import {label}: kbc-runner")
        m = median_of("kbc-runner import", lambda: import_cmd, env=env, watch_url=emu.url)
        results.add("import", rows, "runner", "kbc-runner tables import", m)
        log(f"import {label}: kbcstorage")
        m = median_of("kbcstorage load", lambda: [py, BENCH / "kbcstorage_load.py", emu.url, TOKEN, table, csv_path],
                      env=env, watch_url=emu.url)
        results.add("import", rows, "kbcstorage", "kbcstorage Tables.load", m)
        if not LINK:
            m = median_of("pigz -1", lambda: ["sh", "-c", f"pigz -1 -c '{csv_path}' > /dev/null"])
            results.add("import", rows, "pigz", "limit: pigz -1 -c", m)
    elif "export" in STEPS:
        log(f"import {label} (untimed, for the export)")
        timed(import_cmd, env=env)

    out = work / "export.csv"
    exp_dir = work / "kbcstorage-export"
    if "export" in STEPS:
        # One untimed export first: the imports above changed the table, and the first export after a
        # change also builds the emulator's export cache (Storage caches exports too); every tool
        # below then reads the same cached slices.
        timed([binary, "tables", "export", table, "-o", out], env=env)
        # Every tool starts without its previous output: deleting a 1.8 GB file took up to 1.6 s (ext4
        # reading its block bitmaps back after the cache drop), which kbcstorage's run never paid.
        log(f"export {label}: kbc-runner")
        m = median_of("kbc-runner export", lambda: [binary, "tables", "export", table, "-o", out], env=env,
                      prepare=lambda: out.unlink(missing_ok=True))
        results.add("export", rows, "runner", "kbc-runner tables export", m)
        log(f"export {label}: kbcstorage")
        m = median_of("kbcstorage export", lambda: [py, BENCH / "kbcstorage_export.py", emu.url, TOKEN, table, exp_dir],
                      env=env, prepare=lambda: shutil.rmtree(exp_dir, ignore_errors=True))
        results.add("export", rows, "kbcstorage", "kbcstorage export_to_file", m)
        log(f"export {label}: the brief's approach")
        m = median_of("brief export", lambda: [py, BENCH / "brief_export.py", emu.url, TOKEN, table, work / "brief.csv"], env=env,
                      prepare=lambda: (work / "brief.csv").unlink(missing_ok=True))
        results.add("export", rows, "brief", "brief (requests, corrected)", m)
        if not LINK:
            slices = fetch_raw_slices(emu.url, table, work / "slices")
            WARM[:] = slices
            m = median_of("pigz -dc", lambda: ["sh", "-c", "pigz -dc " + " ".join(f"'{p}'" for p in slices) + f" > '{work / 'limit.csv'}'"],
                          prepare=lambda: (work / "limit.csv").unlink(missing_ok=True))
            results.add("export", rows, "pigz", "limit: pigz -dc slices", m)
            shutil.rmtree(work / "slices", ignore_errors=True)

    if "transform" in STEPS:
        WARM[:] = [csv_path]
        log(f"transform {label}")
        tm, dm, pm = bench_transform(binary, csv_path, work)
        results.add("transform", rows, "runner", "kbc-runner transform step", tm)
        results.add("transform", rows, "cli", f"DuckDB CLI {DUCKDB_CLI_VERSION}, same SQL", dm)
        results.add("transform", rows, "duckdb2", "DuckDB 2.0 Python (our engine), same SQL", pm)
    for f in [csv_path, out, work / "brief.csv", work / "limit.csv"]:
        f.unlink(missing_ok=True)
    shutil.rmtree(exp_dir, ignore_errors=True)


TRANSFORM_SQL = """CREATE TABLE result AS
SELECT customer_id, count(*) AS orders, sum(CAST(amount AS DECIMAL(18,2))) AS revenue,
       max(order_date) AS last_order, count(DISTINCT city) AS cities
FROM orders GROUP BY customer_id"""


def bench_transform(binary, csv_path, work):
    data = work / "transform-data"
    shutil.rmtree(data, ignore_errors=True)
    (data / "in/tables").mkdir(parents=True)
    (data / "out/tables").mkdir(parents=True)
    os.link(csv_path, data / "in/tables/orders.csv")
    header = csv_path.open(encoding="utf-8").readline().strip()
    columns = [c.strip('"') for c in header.split(",")]
    (data / "in/tables/orders.csv.manifest").write_text(json.dumps({"id": "in.c-bench.orders", "columns": columns}))
    config = {
        "storage": {"output": {"tables": [{"source": "result.csv", "destination": "out.c-bench.result"}]}},
        "parameters": {"steps": ["transform"], "blocks": [{"name": "b", "codes": [{"name": "c", "script": [TRANSFORM_SQL]}]}]},
    }
    (data / "config.json").write_text(json.dumps(config))

    def clean():
        for p in (data / "out/tables").iterdir():
            p.unlink()

    tm = median_of("kbc-runner transform", lambda: [binary, "run", "--data-dir", data], prepare=clean)
    sql = (
        f"CREATE VIEW orders AS SELECT * FROM read_csv('{data}/in/tables/orders.csv', header=true, all_varchar=true);"
        f"{TRANSFORM_SQL};"
        f"COPY result TO '{work}/duckdb-result.csv' (HEADER, FORCE_QUOTE *);"
    )
    dm = median_of("duckdb cli", lambda: [DUCKDB_CLI, "-c", sql])
    # The CLI on PyPI is DuckDB 1.5; kbc-runner embeds 2.0. The Python package of 2.0 runs the same SQL on
    # the same engine version, so an engine change cannot pass for our overhead.
    script = work / "duckdb2.py"
    script.write_text("import duckdb, sys\nduckdb.connect().execute(sys.argv[1])\n")
    pm = median_of("duckdb 2 python", lambda: [DUCKDB2_PYTHON, script, sql])
    shutil.rmtree(data, ignore_errors=True)
    return tm, dm, pm


# The whole job, shaped as the example in data/: order lines exported with `changed_since: adaptive`,
# customers (three of four columns) in full, totals per order joined with the customer, loaded
# incrementally by primary key. The SQL is data/config.json's, verbatim.
JOB_SQL = [
    "CREATE TABLE order_totals AS SELECT order_id, any_value(customer_id) AS customer_id, min(ordered_at) AS ordered_at, "
    "count(*) AS lines, sum(CAST(quantity AS INTEGER)) AS items, "
    "sum(CAST(quantity AS INTEGER) * CAST(unit_price AS DECIMAL(12, 2))) AS revenue FROM order_lines GROUP BY order_id",
    "CREATE TABLE order_summary AS SELECT t.order_id, t.customer_id, coalesce(c.name, '(unknown)') AS customer_name, "
    "coalesce(c.country, '') AS country, CAST(CAST(t.ordered_at AS TIMESTAMP) AS DATE) AS order_date, t.lines, t.items, "
    "t.revenue FROM order_totals AS t LEFT JOIN customers AS c USING (customer_id) ORDER BY t.order_id",
]
CUSTOMER_COLUMNS = ["customer_id", "name", "country"]

# One order line as a function of its order `o`, line `l` and a quantity change `bump`; orders have three
# lines; products carry their price; names and products have commas, quotes and non-ASCII text.
ORDER_LINE_SQL = """SELECT 'O-' || (1000000 + o) AS order_id, l AS line_no, 'C-' || (o * 7919 % {customers}) AS customer_id,
    strftime(TIMESTAMP '2025-01-01 00:00:00' + to_seconds(o * 9), '%Y-%m-%d %H:%M:%S') AS ordered_at,
    ['Espresso beans 1kg', 'Milk frother', 'Green tea 250g', 'Moka pot', 'Tea infuser',
     '"Barista" tamper, 58 mm', 'Café crème 500g', 'Kettle 1,7 l'][1 + (o * 3 + l) % 8] AS product,
    1 + (o * 5 + l * 3) % 9 + bump AS quantity,
    [24.90, 39.00, 8.50, 29.90, 6.90, 19.00, 12.40, 45.00][1 + (o * 3 + l) % 8]::DECIMAL(12, 2) AS unit_price"""


def job_data(rows, work):
    """The source tables' CSV files for `rows` order lines: order lines, customers (one per 20 lines, at
    least 1000), and the change loaded between the first and the second run: about one line in a thousand,
    half of it existing orders delivered again whole (a changed quantity on every line and a fourth line),
    half new orders. Returns the three paths, the change's line count and the orders after the change."""
    customers = max(1000, rows // 20)
    orders = (rows + 2) // 3
    change = max(300, rows // 1000)
    changed_orders = change // 8
    new_orders = (change - 4 * changed_orders) // 3
    step = max(1, orders // changed_orders)
    lines, cust, delta = work / "order_lines.csv", work / "customers.csv", work / "order_lines_change.csv"
    duckdb_sql(f"""COPY ({ORDER_LINE_SQL.format(customers=customers)} FROM
            (SELECT i // 3 AS o, i % 3 + 1 AS l, 0 AS bump FROM range({rows}) t(i))) TO '{lines}' (HEADER);
        COPY (SELECT 'C-' || c AS customer_id,
                ['Alice', 'Bob', 'Carla', 'Dieter', 'Zoë', 'Łukasz', 'José', 'Yuki'][1 + c % 8] || ' ' ||
                ['Novak', 'Smith', 'Rossi', 'Braun', 'Dvořák', 'Müller'][1 + c % 6] || ' ' || c AS name,
                ['CZ', 'GB', 'IT', 'DE', 'PL', 'FR', 'JP', 'BR'][1 + c % 8] AS country,
                'customer' || c || '@example.com' AS email
              FROM range({customers}) t(c)) TO '{cust}' (HEADER);
        COPY ({ORDER_LINE_SQL.format(customers=customers)} FROM
            (SELECT k * {step} AS o, l, 1 AS bump FROM range({changed_orders}) t(k), range(1, 5) r(l)
             UNION ALL SELECT {orders} + j AS o, l, 0 AS bump FROM range({new_orders}) t(j), range(1, 4) r(l))
            ORDER BY o, l) TO '{delta}' (HEADER);""")
    return lines, cust, delta, 4 * changed_orders + 3 * new_orders, orders + new_orders


def bench_job(binary, emu, env, py, rows, work, results):
    """The whole job: `kbc-runner run` against the script a user writes today (kbcstorage export_to_file,
    the DuckDB CLI, kbcstorage create/load), on the same source tables, with the same SQL. First run: no
    state, the output table does not exist. Second run: the state the first run left, after a small
    incremental change of the order lines; the output table exists, the load is an upsert."""
    label = label_of(rows)
    bucket = f"job{rows}"
    order_lines, customers = f"in.c-{bucket}.order_lines", f"in.c-{bucket}.customers"
    out_runner, out_script = f"out.c-{bucket}.summary_runner", f"out.c-{bucket}.summary_script"
    log(f"job {label}: generating and loading the source tables")
    lines_csv, cust_csv, change_csv, change_rows, orders_after = job_data(rows, work)
    timed([binary, "tables", "import", order_lines, lines_csv, "--create", "--primary-key", "order_id,line_no"], env=env)
    timed([binary, "tables", "import", customers, cust_csv, "--create", "--primary-key", "customer_id"], env=env)
    api(emu.url, "POST", "/v2/storage/buckets", data={"name": bucket, "stage": "out"}).raise_for_status()
    for f in (lines_csv, cust_csv):
        f.unlink()

    # kbc-runner: a data folder as the platform prepares it.
    data = work / "job-runner"
    config = {
        "storage": {
            "input": {"tables": [
                {"source": order_lines, "destination": "order_lines.csv", "changed_since": "adaptive"},
                {"source": customers, "destination": "customers.csv", "columns": CUSTOMER_COLUMNS},
            ]},
            "output": {"tables": [{"source": "order_summary.csv", "destination": out_runner,
                                   "incremental": True, "primary_key": ["order_id"]}]},
        },
        "parameters": {"blocks": [{"name": "Order summary", "codes": [{"name": "Totals per order", "script": JOB_SQL}]}]},
    }
    runner_state = work / "runner-state.json"

    def runner_prepare(state):
        shutil.rmtree(data, ignore_errors=True)
        (data / "in").mkdir(parents=True)
        (data / "config.json").write_text(json.dumps(config))
        if state:
            shutil.copy(runner_state, data / "in/state.json")

    runner_cmd = lambda: [binary, "run", "--data-dir", data]

    # The script: its own state file remembers the order lines' last import date, as `adaptive` does.
    script_dir, script_state, script_state_first = work / "job-script", work / "script-state.json", work / "script-state-first.json"
    sql_file = work / "job.sql"
    sql_file.write_text(";\n".join(JOB_SQL) + ";\n")

    def script_prepare(state):
        shutil.rmtree(script_dir, ignore_errors=True)
        script_state.unlink(missing_ok=True)
        if state:
            shutil.copy(script_state_first, script_state)

    script_cmd = lambda: [py, BENCH / "kbcstorage_job.py", emu.url, TOKEN, order_lines, customers, out_script,
                          script_state, script_dir, sql_file, DUCKDB_CLI]

    def drop(table_id):
        r = api(emu.url, "DELETE", f"/v2/storage/tables/{table_id}")
        if r.status_code not in (200, 204, 404):
            r.raise_for_status()

    WARM[:] = []
    # One untimed run of each first: it builds the emulator's export cache for these exports (Storage
    # caches exports of unchanged tables too), so every timed run downloads the same cached slices.
    for name, table, prepare, cmd in (("kbc-runner run", out_runner, runner_prepare, runner_cmd),
                                      ("script", out_script, script_prepare, script_cmd)):
        drop(table)
        prepare(False)
        timed(cmd(), env=env)
    log(f"job {label}, first run: kbc-runner")
    m = median_of("kbc-runner run, first", runner_cmd, env=env,
                  prepare=lambda: (drop(out_runner), runner_prepare(False)))
    results.add("job, first run", rows, "runner", "kbc-runner run", m)
    shutil.copy(data / "out/state.json", runner_state)
    log(f"job {label}, first run: kbcstorage + DuckDB CLI script")
    m = median_of("script, first", script_cmd, env=env, prepare=lambda: (drop(out_script), script_prepare(False)))
    results.add("job, first run", rows, "script", "kbcstorage + DuckDB CLI script", m)
    shutil.copy(script_state, script_state_first)

    log(f"job {label}: loading the change ({change_rows} order lines) incrementally")
    timed([binary, "tables", "import", order_lines, change_csv, "--incremental"], env=env)
    change_csv.unlink()
    # Again one untimed run of each first (the export cache of the changed rows); the load is an upsert
    # of the same rows every time, so each timed run finds the output table as the first one did.
    runner_prepare(True)
    timed(runner_cmd(), env=env)
    script_prepare(True)
    timed(script_cmd(), env=env)
    log(f"job {label}, second run: kbc-runner")
    m = median_of("kbc-runner run, second", runner_cmd, env=env, prepare=lambda: runner_prepare(True))
    results.add("job, second run (adaptive)", rows, "runner", "kbc-runner run", m)
    log(f"job {label}, second run: kbcstorage + DuckDB CLI script")
    m = median_of("script, second", script_cmd, env=env, prepare=lambda: script_prepare(True))
    results.add("job, second run (adaptive)", rows, "script", "kbcstorage + DuckDB CLI script", m)

    # Both jobs must have produced the same table, with the second run's new orders in it.
    dumps = []
    for table in (out_runner, out_script):
        r = api(emu.url, "GET", f"/_emulator/tables/{table}", stream=True)
        r.raise_for_status()
        h, n = hashlib.sha256(), 0
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += chunk.count(b"\n")
        dumps.append((h.hexdigest(), n - 1))
    same = dumps[0] == dumps[1] and dumps[0][1] == orders_after
    log(f"job {label}: output tables {'identical' if dumps[0] == dumps[1] else 'DIFFER'} ({dumps[0][1]} and "
        f"{dumps[1][1]} rows, {orders_after} expected)")
    results.job_checks.append((rows, same, dumps[0][1], dumps[1][1], change_rows))
    for table in (out_runner, out_script, order_lines, customers):
        drop(table)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(script_dir, ignore_errors=True)


# The job's SQL in the form both DuckDB and Snowflake accept (quoted lower-case names, no USING, no ORDER
# BY in a CTAS): what the workspace engine runs in the project's backend.
PORTABLE_JOB_SQL = [
    'CREATE TABLE "order_totals" AS SELECT "order_id", any_value("customer_id") AS "customer_id", '
    'min("ordered_at") AS "ordered_at", count(*) AS "lines", sum(CAST("quantity" AS INTEGER)) AS "items", '
    'sum(CAST("quantity" AS INTEGER) * CAST("unit_price" AS DECIMAL(12, 2))) AS "revenue" FROM "order_lines" '
    'GROUP BY "order_id"',
    'CREATE TABLE "order_summary" AS SELECT t."order_id", t."customer_id", coalesce(c."name", \'(unknown)\') AS '
    '"customer_name", coalesce(c."country", \'\') AS "country", CAST(CAST(t."ordered_at" AS TIMESTAMP) AS DATE) AS '
    '"order_date", t."lines", t."items", t."revenue" FROM "order_totals" AS t LEFT JOIN "customers" AS c '
    'ON c."customer_id" = t."customer_id"',
]


def emulator_stats(url):
    r = api(url, "GET", "/_emulator/stats")
    r.raise_for_status()
    return r.json()


def bench_engines(binary, emu, env, rows, work, results):
    """The same job (first run: the output table is created) on both engines against the emulator: DuckDB
    in this process (export, transform, import) and the workspace engine (a workspace, input-mapping-load,
    Query Service jobs, import from the workspace). Wall time, peak RSS, and the table data that went
    through the runner (File Storage bytes up and down during the run, from the emulator's counters)."""
    label = label_of(rows)
    bucket = f"eng{rows}"
    order_lines, customers, out = f"in.c-{bucket}.order_lines", f"in.c-{bucket}.customers", f"out.c-{bucket}.summary"
    log(f"engines {label}: generating and loading the source tables")
    lines_csv, cust_csv, change_csv, _, _ = job_data(rows, work)
    orders = (rows + 2) // 3
    timed([binary, "tables", "import", order_lines, lines_csv, "--create", "--primary-key", "order_id,line_no"], env=env)
    timed([binary, "tables", "import", customers, cust_csv, "--create", "--primary-key", "customer_id"], env=env)
    for f in (lines_csv, cust_csv, change_csv):
        f.unlink()
    data = work / "engines"
    for engine in ("duckdb", "workspace"):
        config = {
            "storage": {
                "input": {"tables": [
                    {"source": order_lines, "destination": "order_lines.csv"},
                    {"source": customers, "destination": "customers.csv", "columns": CUSTOMER_COLUMNS},
                ]},
                "output": {"tables": [{"source": "order_summary.csv", "destination": out,
                                       "incremental": True, "primary_key": ["order_id"]}]},
            },
            "parameters": {"engine": engine, "blocks": [{"name": "Order summary", "codes": [
                {"name": "Totals per order", "script": PORTABLE_JOB_SQL}]}]},
        }

        def prepare():
            r = api(emu.url, "DELETE", f"/v2/storage/tables/{out}")
            if r.status_code not in (200, 204, 404):
                r.raise_for_status()
            shutil.rmtree(data, ignore_errors=True)
            (data / "in").mkdir(parents=True)
            (data / "config.json").write_text(json.dumps(config))

        log(f"engines {label}: {engine}")
        moved = []

        def run_cmd():
            return [binary, "run", "--data-dir", data]

        got = []
        for i in range(RUNS):
            prepare()
            reset_page_cache()
            before = emulator_stats(emu.url)["fileTransfers"]
            m = timed(run_cmd(), env=env)
            after = emulator_stats(emu.url)["fileTransfers"]
            moved.append(after["bytesUp"] - before["bytesUp"] + after["bytesDown"] - before["bytesDown"])
            got.append(m)
            log(f"  {engine} run {i + 1}: {m['wall']:.2f} s, {m['rss']:.0f} MB, {moved[-1] / 1e6:.1f} MB through the runner")
        med = {"wall": statistics.median(m["wall"] for m in got), "rss": max(m["rss"] for m in got)}
        detail = api(emu.url, "GET", f"/v2/storage/tables/{out}").json()
        results.engines.append((rows, engine, med, statistics.median(moved), detail.get("rowsCount"), orders))
    for table in (out, order_lines, customers):
        api(emu.url, "DELETE", f"/v2/storage/tables/{table}")
    shutil.rmtree(data, ignore_errors=True)


def bench_job_wait(binary, emu, env):
    """Job-wait overhead: the emulator makes export jobs take a fixed time; the overhead is how much longer
    the whole export takes than the same export with an instant job, minus that time (median of RUNS)."""
    table = "in.c-bench.waits"
    api(emu.url, "POST", f"/_emulator/tables/{table}", data=b'"id","v"\n"1","a"\n').raise_for_status()
    out = Path(tempfile.mkdtemp()) / "w.csv"
    cmd = lambda: [binary, "tables", "export", table, "-o", out]

    def fault(ms):
        api(emu.url, "POST", "/_emulator/faults", json={"job": "tableExport", "delayMs": ms}).raise_for_status()

    base = median_of("export, instant job", cmd, env=env)["wall"]
    waits = []
    for seconds in (0.1, 1.0, 5.0):
        wall = median_of(f"export, {seconds} s job", cmd, env=env, prepare=lambda: fault(int(seconds * 1000)))["wall"]
        waits.append((seconds, max(0.0, wall - base - seconds)))
    shutil.rmtree(out.parent, ignore_errors=True)
    return waits


def bench_startup(binary, env):
    """Start-up: from spawning `kbc-runner tables detail` to its first request arriving at a local socket
    (median of 20). The socket answers nothing useful; only the arrival time counts."""
    import socket
    walls = []
    for _ in range(20):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.Popen([binary, "tables", "detail", "in.c-bench.t", "--url", f"http://127.0.0.1:{port}"],
                                env=dict(env, KBC_TOKEN=TOKEN), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = server.accept()
        conn.recv(1)
        walls.append(time.monotonic() - started)
        conn.close()
        server.close()
        proc.kill()
        proc.wait()
    return statistics.median(walls)


def nominal_rate(rate):
    """tc's rate (`1gbit`, `250mbit`, `100mbps`) in bytes per second; None when not understood."""
    m = re.fullmatch(r"([\d.]+)\s*([kmgt]?)(i?)(bit|bps)", rate.strip().lower())
    if not m:
        return None
    base = 1024 if m.group(3) else 1000
    value = float(m.group(1)) * base ** " kmgt".index(m.group(2) or " ")
    return value / 8 if m.group(4) == "bit" else value


def probe_link():
    """The link's rate, measured: a plain TCP bulk transfer each way (link_probe.py, about three seconds
    of the nominal rate; the best of two after a warm-up). Returns MB/s of payload and of bytes as the
    veth counts them (the same counters the runs are measured with), per direction."""
    import link_probe
    nominal = nominal_rate(LINK)
    size = int(min(1e9, max(32e6, 3 * nominal))) if nominal else 256_000_000
    server = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, BENCH / "link_probe.py", "serve", EMU_HOST],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        out = {}
        for name, mode in (("down", b"d"), ("up", b"u")):
            link_probe.one(EMU_HOST, port, mode, min(size, 16_000_000))
            best = None
            for _ in range(2):
                before = wire_bytes()
                started = time.monotonic()
                link_probe.one(EMU_HOST, port, mode, size)
                took = time.monotonic() - started
                after = wire_bytes()
                wire = after[0] - before[0] if name == "down" else after[1] - before[1]
                got = (size / took / 1e6, wire / took / 1e6)
                best = got if best is None or got[0] > best[0] else best
            out[name], out[name + "_wire"] = best
            log(f"link {LINK}: {name} {best[0]:.1f} MB/s payload, {best[1]:.1f} MB/s on the wire")
    finally:
        server.kill()
        server.wait()
    return out


def link_limit(r, link):
    """Seconds the bytes a run moved need at the measured rate (each direction has its own link)."""
    if not link:
        return None
    return max(r["down"] / (link["down_wire"] * 1e6), r["up"] / (link["up_wire"] * 1e6))


def machine():
    cores = os.cpu_count()
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) / 1024 / 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cores} cores ({cpu}), {mem:.0f} GiB RAM"


def targets(results, link):
    """The issue's targets (stated at 10 M rows, here at the largest row count measured), each as
    (text, measured, met) with None when this run did not measure it."""
    rows = max(ROW_COUNTS)
    at = "" if rows == 10_000_000 else f" (at {label_of(rows)} rows; stated for 10 M)"
    out = []

    def ratio(step, slow, fast, key="wall"):
        a, b = results.get(step, rows, slow), results.get(step, rows, fast)
        if not a or not b or a.get(key) is None or b.get(key) is None or b[key] <= 0:
            return None
        return a[key] / b[key]

    def add(text, value, good, fmt):
        out.append((text + at, None if value is None else fmt.format(value), None if value is None else good(value)))

    if link:
        where = f"on the {LINK} link" + ("" if nominal_rate(LINK) == 125e6 else " (stated for 1 Gbit/s)")
        add(f"Export ≥ 5× faster than kbcstorage {where}", ratio("export", "kbcstorage", "runner"), lambda v: v >= 5, "{:.2f}×")
        ours = results.get("export", rows, "runner")
        lim = link_limit(ours, link) if ours else None
        add(f"Export within 1.2× of the link limit of the compressed slices {where}",
            ours["wall"] / lim if ours and lim else None, lambda v: v <= 1.2, "{:.2f}× the limit")
        add(f"Import ≥ 3× faster than kbcstorage in wall time {where}", ratio("import", "kbcstorage", "runner"), lambda v: v >= 3, "{:.2f}×")
        add(f"Import ≥ 5× faster than kbcstorage in client time (wall less the Storage job) {where}",
            ratio("import", "kbcstorage", "runner", "client"), lambda v: v >= 5, "{:.2f}×")
        add(f"Whole job ≥ 4× faster than the kbcstorage + DuckDB CLI script {where}",
            ratio("job, first run", "script", "runner"), lambda v: v >= 4, "{:.2f}×")
        add(f"Whole job, second (adaptive) run ≥ 10× faster than the script {where}",
            ratio("job, second run (adaptive)", "script", "runner"), lambda v: v >= 10, "{:.2f}×")
    else:
        add("Loopback: export ≥ 3× faster than kbcstorage", ratio("export", "kbcstorage", "runner"), lambda v: v >= 3, "{:.2f}×")
        add("Loopback: import ≥ 3× faster than kbcstorage", ratio("import", "kbcstorage", "runner"), lambda v: v >= 3, "{:.2f}×")
        for step in ("export", "import"):
            r = results.get(step, rows, "runner")
            add(f"Loopback: {step} peak RSS ≤ 64 MB", r["rss"] if r else None, lambda v: v <= 64, "{:.0f} MB")
        t, c = results.get("transform", rows, "runner"), results.get("transform", rows, "cli")
        add("Transform: peak RSS ≤ the DuckDB CLI's", t["rss"] / c["rss"] if t and c else None, lambda v: v <= 1.0,
            "{:.2f}× the CLI's" + (f" ({t['rss']:.0f} vs {c['rss']:.0f} MB)" if t and c else ""))
        add("Transform: time ≤ 1.05× the DuckDB CLI's", ratio("transform", "runner", "cli"), lambda v: v <= 1.05,
            "{:.2f}× the CLI's")
    return out


def report(results, startup, waits, link):
    caches = ("page cache dropped and inputs re-read before every run." if CLEAN_CACHE
              else "page cache left as it was (not root).")
    lines = [f"Run on {time.strftime('%Y-%m-%d')}, {machine()}; median of {RUNS} run{'s' if RUNS != 1 else ''}; peak RSS is "
             f"the maximum over the runs; {caches}"]
    if link:
        lines += ["", f"Link: the emulator in a network namespace of its own behind a veth pair shaped with tc tbf "
                      f"`rate {LINK} burst {LINK_BURST} latency 50ms` in each direction; measured (plain TCP bulk "
                      f"transfer): **{link['down']:.1f} MB/s down** (Storage to the tools), **{link['up']:.1f} MB/s up** "
                      f"({link['down_wire']:.1f} / {link['up_wire']:.1f} MB/s as the veth counts bytes). "
                      f"*On the wire* is what crossed the veth during the run (both directions, as its counters "
                      f"count: payload, HTTP and TCP/IP headers); the *link limit* is those bytes ÷ the measured "
                      f"rate of their direction (the larger of the two)."]
    head = "| step | rows | tool | wall (s) | peak RSS (MB) | vs kbc-runner | Storage job (s) | client (s) |"
    rule = "|---|---|---|---:|---:|---:|---:|---:|"
    if link:
        head += " on the wire (MB) | link limit (s) | wall ÷ limit |"
        rule += "---:|---:|---:|"
    lines += ["", head, rule]
    for r in results.rows:
        ours = results.get(r["step"], r["rows"], "runner")
        ratio = f"{r['wall'] / ours['wall']:.2f}×" if ours else ""
        job = f"{r['job']:.2f}" if r["job"] is not None else ""
        client = f"{r['client']:.2f}" if r["client"] is not None else ""
        row = (f"| {r['step']} | {label_of(r['rows'])} | {r['name']} | {r['wall']:.2f} | {r['rss']:.0f} | {ratio} | "
               f"{job} | {client} |")
        if link:
            lim = link_limit(r, link)
            row += (f" {(r['down'] + r['up']) / 1e6:.0f} | {lim:.2f} | "
                    f"{r['wall'] / lim:.2f}× |" if lim else " 0 | | |")
        lines.append(row)
    if any(r["job"] is not None for r in results.rows):
        lines += ["", f"*Storage job* is the import's load job in the emulator, from first seen processing to first "
                      f"seen done (looked at every {JOB_POLL * 1000:.0f} ms; the job's own stamps are whole seconds); "
                      f"*client* is the wall time less it."]
    for rows, same, a, b, change in results.job_checks:
        lines += ["", f"Whole job at {label_of(rows)} order lines: the second run moves {change} changed order lines; "
                      f"the two output tables are {'identical, with every order' if same else '**not identical or not complete**'} "
                      f"({a} and {b} rows)."]
    if results.engines:
        lines += ["", "The same job on both engines (issue 14), first run, against the emulator on this machine (its "
                      "workspaces are DuckDB databases on the same cores, so this compares the data path, not Snowflake):",
                  "", "| rows | engine | wall (s) | peak RSS (MB) | table data through the runner (MB) | output rows |",
                  "|---|---|---:|---:|---:|---:|"]
        for rows, engine, m, moved, out_rows, orders in results.engines:
            lines.append(f"| {label_of(rows)} | {engine} | {m['wall']:.2f} | {m['rss']:.0f} | {moved / 1e6:.1f} | "
                         f"{out_rows} of {orders} |")
    if waits:
        lines += ["", "| job duration | time from job end to the client noticing (median) | target |", "|---:|---:|---:|"]
        for seconds, overhead in waits:
            lines.append(f"| {seconds:g} s | {overhead:.3f} s | {max(0.25, seconds / 10):.2f} s |")
    if startup is not None:
        lines += ["", f"Start-up to the first request (`kbc-runner tables detail`, spawn to first byte at a local "
                      f"socket, median of 20): {startup * 1000:.1f} ms."]
    goals = targets(results, link)
    if goals:
        lines += ["", "Targets (issue 15):", ""]
        for text, value, met in goals:
            verdict = "not measured in this run" if value is None else f"{value}: **{'met' if met else 'missed'}**"
            lines.append(f"- {text}: {verdict}")
    table = "\n".join(lines)
    print(table)
    if not WRITE_README:
        return
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = ("<!-- bench-link:start -->", "<!-- bench-link:end -->") if link else ("<!-- bench:start -->", "<!-- bench:end -->")
    if start in text and end in text:
        before = text.split(start)[0]
        after = text.split(end)[1]
        readme.write_text(f"{before}{start}\n{table}\n{end}{after}")
        log("README.md updated")
    else:
        log(f"README.md has no {start} … {end} markers; not updated")


if __name__ == "__main__":
    main()
