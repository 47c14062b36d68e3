"""Where the transform's peak RSS goes: kbc-runner's transform step beside the same SQL in the DuckDB CLI
and DuckDB 2.0's Python package (bench.py's transform comparison), and kbc-runner again under allocator
and DuckDB settings that need no change to its code. Each variant runs RUNS times; the table shows the
median wall and CPU (user + system) time, the median and largest peak RSS and the median minor page faults.

    python3 bench/transform_memory.py BINARY [ROWS [RUNS]]      (defaults: 10000000 rows, 5 runs)

DuckDB's CLI and Python wheels are built with DuckDB's jemalloc; kbc-runner's bundled DuckDB (the `bundled`
cc build of libduckdb-sys) uses glibc's malloc. The jemalloc variant preloads the system's libjemalloc
(`apt-get install libjemalloc2`) to show what that difference is worth without a rebuild.
"""
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same data, SQL and DuckDB CLI as the benchmark)

binary = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
work = Path(tempfile.mkdtemp(prefix="kbc-transform-memory-"))


def data_dir(name, csv, sql, parameters=None):
    """A data folder whose transform runs `sql` over `csv` linked in as in/tables/orders.csv."""
    d = work / name
    (d / "in/tables").mkdir(parents=True)
    (d / "out/tables").mkdir(parents=True)
    os.link(csv, d / "in/tables/orders.csv")
    columns = [c.strip('"') for c in csv.open(encoding="utf-8").readline().strip().split(",")]
    (d / "in/tables/orders.csv.manifest").write_text(json.dumps({"id": "in.c-bench.orders", "columns": columns}))
    config = {
        "storage": {"output": {"tables": [{"source": "result.csv", "destination": "out.c-bench.result"}]}},
        "parameters": {"steps": ["transform"], **(parameters or {}),
                       "blocks": [{"name": "b", "codes": [{"name": "c", "script": [sql]}]}]},
    }
    (d / "config.json").write_text(json.dumps(config))
    return d


def measure(cmd, env=None, clean=None):
    got = []
    for _ in range(runs):
        for p in glob.glob(f"{clean}/out/tables/*") if clean else []:
            os.unlink(p)
        report = work / "time.out"
        subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M %R", "-o", report] + [str(c) for c in cmd],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        e, u, s, m, f = report.read_text().split()
        got.append((float(e), float(u) + float(s), int(m) / 1024, int(f)))
    med = lambda i: statistics.median(g[i] for g in got)
    return med(0), med(1), med(2), max(g[2] for g in got), med(3)


def main():
    csv = work / "data.csv"
    bench.log(f"generating {rows} rows")
    bench.generate_csv(csv, rows)
    tiny = work / "tiny.csv"
    bench.generate_csv(tiny, 10)
    sql = bench.TRANSFORM_SQL
    read = lambda opts: sql.replace("FROM orders", f"FROM read_csv('in/tables/orders.csv', header = true, all_varchar = true{opts})")
    dirs = {
        "as is": data_dir("plain", csv, sql),
        "threads 1": data_dir("threads1", csv, sql, {"threads": 1}),
        "buf32": data_dir("buf32", csv, read("")),
        "buf8": data_dir("buf8", csv, read(", max_line_size = 4194304, buffer_size = 8388608")),
        "tiny": data_dir("tiny", tiny, sql),
    }
    env = dict(os.environ)
    jemalloc = next(iter(glob.glob("/usr/lib/*/libjemalloc.so.2") + glob.glob("/usr/lib/libjemalloc.so.2")), None)
    cli_sql = lambda path: (f"CREATE VIEW orders AS SELECT * FROM read_csv('{path}', header=true, all_varchar=true);"
                            f"{sql}; COPY result TO '{work}/cli.csv' (HEADER, FORCE_QUOTE *);")
    py = work / "duckdb2.py"
    py.write_text("import duckdb, sys\nduckdb.connect().execute(sys.argv[1])\n")
    run = lambda d: [binary, "run", "--data-dir", d]
    variants = [
        ("DuckDB CLI (jemalloc inside)", [bench.DUCKDB_CLI, "-c", cli_sql(csv)], None, None),
        ("DuckDB 2.0 Python, same SQL", [bench.DUCKDB2_PYTHON, py, cli_sql(csv)], None, None),
        # kbc-runner caps glibc's arenas itself (cli::process) unless MALLOC_ARENA_MAX is set.
        ("kbc-runner as is (1 malloc arena)", run(dirs["as is"]), None, dirs["as is"]),
        (f"kbc-runner, glibc's default arenas (MALLOC_ARENA_MAX={8 * os.cpu_count()})", run(dirs["as is"]),
         dict(env, MALLOC_ARENA_MAX=str(8 * os.cpu_count())), dirs["as is"]),
        ("kbc-runner, MALLOC_ARENA_MAX=2", run(dirs["as is"]), dict(env, MALLOC_ARENA_MAX="2"), dirs["as is"]),
        ("kbc-runner, glibc mmap threshold fixed at 4 MiB", run(dirs["as is"]),
         dict(env, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=4194304"), dirs["as is"]),
    ]
    if jemalloc:
        variants.append(("kbc-runner, libjemalloc preloaded", run(dirs["as is"]), dict(env, LD_PRELOAD=jemalloc), dirs["as is"]))
    variants += [
        ("kbc-runner, threads = 1", run(dirs["threads 1"]), None, dirs["threads 1"]),
        ("kbc-runner, SQL reads the CSV, DuckDB's 32 MiB buffer", run(dirs["buf32"]), None, dirs["buf32"]),
        ("kbc-runner, SQL reads the CSV, 8 MiB buffer", run(dirs["buf8"]), None, dirs["buf8"]),
        ("kbc-runner, 10-row input (fixed cost)", run(dirs["tiny"]), None, dirs["tiny"]),
        ("DuckDB CLI, 10-row input (fixed cost)", [bench.DUCKDB_CLI, "-c", cli_sql(tiny)], None, None),
    ]
    lines = [f"Transform memory, {rows} rows, {runs} runs each, {bench.machine()}, binary {binary}", "",
             "| variant | wall (s) | CPU (s) | peak RSS median (MB) | peak RSS max (MB) | minor faults |",
             "|---|---:|---:|---:|---:|---:|"]
    try:
        for name, cmd, env_, clean in variants:
            bench.log(name)
            try:
                w, c, m, mx, f = measure(cmd, env_, clean)
                lines.append(f"| {name} | {w:.2f} | {c:.2f} | {m:.0f} | {mx:.0f} | {f:.0f} |")
            except subprocess.CalledProcessError as e:
                lines.append(f"| {name} | failed (exit {e.returncode}) | | | | |")
            bench.log(lines[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
