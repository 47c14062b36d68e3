"""Conformance of the kbc-runner emulator's Query Service with Keboola's official SDK `keboola-query-service`
(0.3.0), unmodified, with workspaces created and imported from through the official `kbcstorage` client.

Run by tests/query_service_conformance.rs with KBC_URL and KBC_TOKEN set. Every step asserts on what the
clients return; the first failed assertion exits non-zero with a traceback. Prints
"CONFORMANCE OK <n> checks" at the end.
"""

import csv
import json
import os
import sys
import tempfile
import time
import urllib.request

from kbcstorage.client import Client as StorageClient
from keboola_query_service import (
    AuthenticationError,
    Client,
    JobError,
    JobState,
    StatementState,
    ValidationError,
)

URL = os.environ["KBC_URL"]
TOKEN = os.environ["KBC_TOKEN"]
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def main():
    storage = StorageClient(URL, TOKEN)
    work = tempfile.mkdtemp(prefix="query-service-conformance-")

    # The Query Service is discovered from the Storage index.
    with urllib.request.urlopen(URL + "/v2/storage") as r:
        index = json.load(r)
    query_url = next(s["url"] for s in index["services"] if s["id"] == "query")
    check(query_url.rstrip("/") == URL.rstrip("/"), "query service url: %r" % query_url)

    # A Storage table to read in place.
    bucket = storage.buckets.create("qs", stage="in")
    source = os.path.join(work, "people.csv")
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["id", "name"], ["1", "Ann"], ["2", "Bob"], ["3", ""]])
    table_id = storage.tables.create(bucket["id"], "people", source, primary_key=["id"])

    # A workspace through the official Storage client ("none": no credentials, meant for the Query Service).
    ws = storage.workspaces.create(backend="snowflake", login_type="none", read_all_objects=True)
    ws_id = str(ws["id"])
    check(ws["connection"]["database"] == "KBC_EMULATOR", "workspace database: %r" % ws["connection"])
    check(ws["readOnlyStorageAccess"] is True, "read-only storage access")
    check(storage.workspaces.detail(ws_id)["id"] == ws["id"], "workspace detail")
    branch = "1"

    with Client(base_url=query_url, token=TOKEN) as qs:
        # submit_job + wait_for_job + get_job_status + get_job_results.
        job_id = qs.submit_job(
            branch, ws_id,
            ["CREATE TABLE nums AS SELECT range AS n, 'v' || range::VARCHAR AS label FROM range(1234)"],
            transactional=False,
        )
        status = qs.wait_for_job(job_id)
        check(status.status == JobState.COMPLETED, "create job completed: %r" % status)
        status = qs.get_job_status(job_id)
        check(status.query_job_id == job_id, "status names the job")
        check(status.statements[0].status == StatementState.COMPLETED, "statement completed")
        check(status.created_at is not None and status.changed_at is not None, "timestamps parse")

        job_id = qs.submit_job(branch, ws_id, ["SELECT n, label FROM nums ORDER BY n"])
        status = qs.wait_for_job(job_id)
        stmt = status.statements[0]
        check(stmt.number_of_rows == 1234, "numberOfRows: %r" % stmt.number_of_rows)
        page = qs.get_job_results(job_id, stmt.id, offset=1200, page_size=100)
        check(len(page.data) == 34, "last page: %d rows" % len(page.data))
        check(page.data[0] == ["1200", "v1200"], "values are text: %r" % page.data[0])
        check([c.name for c in page.columns] == ["n", "label"], "columns: %r" % page.columns)
        check(page.number_of_rows == 1234, "page numberOfRows")

        # execute_query: several statements, paging across pages, max_rows.
        results = qs.execute_query(
            branch, ws_id,
            [
                "CREATE TABLE t AS SELECT * FROM nums WHERE n < 250",
                "SELECT count(*) AS c FROM t",
                "SELECT n FROM t ORDER BY n",
            ],
            page_size=100,
        )
        check(len(results) == 3, "one result per statement")
        check(results[1].data == [["250"]], "count: %r" % results[1].data)
        check(len(results[2].data) == 250, "all pages merged: %d" % len(results[2].data))
        check(results[2].data[-1] == ["249"], "last row: %r" % results[2].data[-1])
        capped = qs.execute_query(branch, ws_id, ["SELECT n FROM nums"], page_size=100, max_rows=200)
        check(len(capped[0].data) == 200, "max_rows caps: %d" % len(capped[0].data))

        # Read-only storage access by the fully qualified name.
        rows = qs.execute_query(
            branch, ws_id, ['SELECT id, name FROM "KBC_EMULATOR"."in.c-qs"."people" ORDER BY id']
        )[0].data
        check(rows == [["1", "Ann"], ["2", "Bob"], ["3", ""]], "storage table in place: %r" % rows)

        # A failing statement: JobError with the engine's message; the rest not executed.
        try:
            qs.execute_query(branch, ws_id, ["SELECT 1", "SELECT * FROM no_such_table", "SELECT 2"])
            check(False, "a failing statement raises JobError")
        except JobError as e:
            check("no_such_table" in str(e), "engine message: %s" % e)
            check(len(e.failed_statements) == 1, "one failed statement: %r" % e.failed_statements)
            failed = qs.get_job_status(e.job_id)
            check(failed.status == JobState.FAILED, "job failed")
            check(
                [s.status for s in failed.statements]
                == [StatementState.COMPLETED, StatementState.FAILED, StatementState.NOT_EXECUTED],
                "statement states: %r" % [s.status for s in failed.statements],
            )

        # Transactional: a failure rolls back the statements before it.
        try:
            qs.execute_query(branch, ws_id, ["INSERT INTO t VALUES (9999, 'x')", "SELECT nope FROM t"])
            check(False, "a failing transactional job raises")
        except JobError:
            pass
        count = qs.execute_query(branch, ws_id, ["SELECT count(*) FROM t"])[0].data
        check(count == [["250"]], "rolled back: %r" % count)

        # cancel_job of a long query.
        job_id = qs.submit_job(branch, ws_id, ["SELECT count(*) FROM range(100000000000)"], transactional=False)
        time.sleep(0.3)
        started = time.time()
        check(qs.cancel_job(job_id, reason="conformance") == job_id, "cancel answers the job id")
        status = qs.wait_for_job(job_id, max_wait_time=30)
        check(status.status == JobState.CANCELED, "canceled: %r" % status.status)
        check(status.cancellation_reason == "conformance", "reason: %r" % status.cancellation_reason)
        check(qs.execute_query(branch, ws_id, ["SELECT 7"])[0].data == [["7"]], "workspace usable after cancel")
        check(time.time() - started < 10, "the query stopped promptly")

        # Validation errors.
        try:
            qs.get_job_results(job_id, status.statements[0].id, page_size=5)
            check(False, "pageSize 5 is refused")
        except ValidationError as e:
            check(e.status_code == 400, "400 for pageSize")
        try:
            qs.submit_job(branch, ws_id, [])
            check(False, "empty statements are refused")
        except ValidationError as e:
            check("Statements must not be empty" in str(e), "message: %s" % e)

    # A bad token.
    with Client(base_url=query_url, token="not-a-token", max_retries=0) as bad:
        try:
            bad.submit_job(branch, ws_id, ["SELECT 1"])
            check(False, "a bad token is refused")
        except AuthenticationError as e:
            check(e.status_code == 401, "401 for a bad token")

    # Write a workspace table back to Storage through the official client (dataWorkspaceId + dataTableName).
    with Client(base_url=query_url, token=TOKEN) as qs:
        qs.execute_query(
            branch, ws_id,
            ["CREATE TABLE upd AS SELECT * FROM (VALUES ('2', 'Bobby'), ('4', 'Dora')) v(id, name)"],
        )
    job = storage.tables.load_raw(table_id, data_workspace_id=ws_id, data_table_name="upd", is_incremental=True)
    job = storage.jobs.block_until_completed(job["id"])
    check(job["status"] == "success", "import from workspace: %r" % job)
    detail = storage.tables.detail(table_id)
    check(detail["rowsCount"] == 4, "upserted: %r" % detail["rowsCount"])
    job = storage.tables.create_raw(bucket["id"], "from_ws", data_workspace_id=ws_id, data_table_name="upd")
    job = storage.jobs.block_until_completed(job["id"])
    check(job["status"] == "success", "table from workspace: %r" % job)
    check(storage.tables.detail("in.c-qs.from_ws")["columns"] == ["id", "name"], "columns of the object")

    storage.workspaces.delete(ws_id)
    try:
        storage.workspaces.detail(ws_id)
        check(False, "a deleted workspace is gone")
    except Exception as e:  # noqa: BLE001 - requests.HTTPError
        check("404" in str(e), "404 after delete: %s" % e)
    storage.buckets.delete(bucket["id"], force=True)

    print("CONFORMANCE OK %d checks" % checks)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - report every failure the same way
        import traceback

        traceback.print_exc()
        sys.exit(1)
