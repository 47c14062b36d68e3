"""The whole job as a user scripts it today with the official Python client and the DuckDB CLI:

1. kbcstorage `Tables.export_to_file` of the order lines, only the rows changed since the last run (the
   script remembers the table's `lastImportDate`, read before the export, in its own state file, which is
   what the runner's `changed_since: adaptive` does), and of the customers (three of four columns);
2. the same SQL in the DuckDB CLI over the two CSV files (every column text, as the runner reads inputs
   without types), the result written as CSV;
3. kbcstorage `Tables.create` with the primary key on the first run, `Tables.load` incremental (an upsert
   by the primary key) once the table exists.

    kbcstorage_job.py URL TOKEN ORDER_LINES CUSTOMERS DESTINATION STATE_FILE WORK_DIR SQL_FILE [DUCKDB]
"""
import json
import os
import subprocess
import sys

import requests
from kbcstorage.tables import Tables

url, token, order_lines, customers, destination, state_path, work, sql_path = sys.argv[1:9]
duckdb = sys.argv[9] if len(sys.argv) > 9 else "duckdb"
tables = Tables(url, token)
state = {}
if os.path.exists(state_path):
    with open(state_path) as f:
        state = json.load(f)

# export_to_file downloads its slices into the working directory.
os.makedirs(work, exist_ok=True)
os.chdir(work)
last_import = tables.detail(order_lines)["lastImportDate"]
lines_csv = tables.export_to_file(order_lines, work, changed_since=state.get(order_lines))
customers_csv = tables.export_to_file(customers, work, columns=["customer_id", "name", "country"])

with open(sql_path) as f:
    sql = f.read()
result = os.path.join(work, "order_summary.csv")
subprocess.run([duckdb, "-c",
                f"CREATE VIEW order_lines AS SELECT * FROM read_csv('{lines_csv}', header=true, all_varchar=true);"
                f"CREATE VIEW customers AS SELECT * FROM read_csv('{customers_csv}', header=true, all_varchar=true);"
                f"{sql}"
                f"COPY order_summary TO '{result}' (HEADER);"], check=True)

try:
    tables.detail(destination)
    exists = True
except requests.HTTPError as e:
    if e.response is None or e.response.status_code != 404:
        raise
    exists = False
if exists:
    tables.load(destination, result, is_incremental=True)
else:
    bucket, name = destination.rsplit(".", 1)
    tables.create(bucket, name, result, primary_key=["order_id"])

state[order_lines] = last_import
with open(state_path, "w") as f:
    json.dump(state, f)
