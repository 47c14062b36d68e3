"""Conformance of the kbc-runner Storage API emulator with the official Python client `kbcstorage`, unmodified.

Run by tests/emulator_conformance.rs with KBC_URL and KBC_TOKEN set (and AWS_ENDPOINT_URL_S3 pointing at the
emulator, so boto3 talks to its S3 front). Every step asserts on what the client returns; the first failed
assertion exits non-zero with a traceback. Prints "CONFORMANCE OK <n> checks" at the end.
"""

import csv
import gzip
import io
import os
import sys
import tempfile

from kbcstorage.client import Client

URL = os.environ["KBC_URL"]
TOKEN = os.environ["KBC_TOKEN"]
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def rows_of(text, header=True):
    rows = list(csv.reader(io.StringIO(text)))
    return (rows[0], sorted(rows[1:])) if header else sorted(rows)


def main():
    client = Client(URL, TOKEN)
    work = tempfile.mkdtemp(prefix="kbcstorage-conformance-")
    os.chdir(work)  # the client writes downloaded slices into the working directory

    token = client.tokens.verify()
    check(token["owner"]["fileStorageProvider"] == "aws", "verify: provider aws")

    bucket = client.buckets.create("conformance", stage="in", description="kbcstorage conformance")
    check(bucket["id"] == "in.c-conformance", "bucket id has the c- prefix: %r" % bucket["id"])
    check(any(b["id"] == "in.c-conformance" for b in client.buckets.list()), "bucket listed")

    source = os.path.join(work, "source.csv")
    data = [
        ["id", "name", "note"],
        ["1", "Comma, Inc.", 'she said "hi"'],
        ["2", "Multi\nline", "Žluťoučký kůň 🐎"],
        ["3", "plain", ""],
    ]
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(data)
    table_id = client.tables.create("in.c-conformance", "people", source, primary_key=["id"])
    check(table_id == "in.c-conformance.people", "table id: %r" % table_id)

    detail = client.tables.detail(table_id)
    check(detail["columns"] == ["id", "name", "note"], "columns: %r" % detail["columns"])
    check(detail["primaryKey"] == ["id"], "primary key: %r" % detail["primaryKey"])
    check(detail["rowsCount"] == 3, "rowsCount: %r" % detail["rowsCount"])
    check(detail["bucket"]["id"] == "in.c-conformance", "bucket in detail")

    header, rows = rows_of(client.tables.preview(table_id))
    check(header == ["id", "name", "note"], "preview header")
    check(rows == sorted(data[1:]), "preview rows: %r" % rows)

    # Incremental load = upsert on the primary key.
    inc = os.path.join(work, "inc.csv")
    with open(inc, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["id", "name", "note"], ["2", "updated", "x"], ["4", "new", "y"]])
    client.tables.load(table_id, inc, is_incremental=True)
    check(client.tables.detail(table_id)["rowsCount"] == 4, "upsert gives 4 rows")
    _, rows = rows_of(client.tables.preview(table_id))
    check(["2", "updated", "x"] in rows and ["1", "Comma, Inc.", 'she said "hi"'] in rows, "upsert rows: %r" % rows)

    # Sliced, gzipped export through files + S3.
    out_dir = os.path.join(work, "export")
    os.mkdir(out_dir)
    exported = client.tables.export_to_file(table_id, out_dir)
    with open(exported, encoding="utf-8", newline="") as f:
        header, rows = rows_of(f.read())
    check(header == ["id", "name", "note"], "export header")
    check(len(rows) == 4 and ["2", "updated", "x"] in rows, "export rows: %r" % rows)

    # Filtered export (deprecated whereColumn trio) with selected columns.
    filtered = client.tables.export_to_file(
        table_id, out_dir, columns=["id", "name"], where_column="id", where_values=["1", "4"], where_operator="eq"
    )
    with open(filtered, encoding="utf-8", newline="") as f:
        header, rows = rows_of(f.read())
    check(header == ["id", "name"], "filtered header: %r" % header)
    check(rows == [["1", "Comma, Inc."], ["4", "new"]], "filtered rows: %r" % rows)

    # Full load replaces everything.
    full = os.path.join(work, "full.csv")
    with open(full, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["id", "name", "note"], ["9", "only", "row"]])
    client.tables.load(table_id, full, is_incremental=False)
    check(client.tables.detail(table_id)["rowsCount"] == 1, "full load truncates")

    # Non-gzipped export too.
    plain = client.tables.export_to_file(table_id, out_dir, is_gzip=False)
    with open(plain, encoding="utf-8", newline="") as f:
        check(rows_of(f.read())[1] == [["9", "only", "row"]], "plain export")

    files = client.files.list(tags=["file-import"])
    check(len(files) >= 3, "files list by tag: %d" % len(files))
    check(all("file-import" in f["tags"] for f in files), "tags filter")
    check(files[0]["id"] > files[-1]["id"], "newest first")

    # Upload and download a plain (non-table) file through S3.
    blob = os.path.join(work, "blob.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(1024) * 5)
    file_id = client.files.upload_file(blob, tags=["conformance"])
    got = client.files.download(file_id, os.path.join(work, "dl"))
    with open(got, "rb") as a, open(blob, "rb") as b:
        check(a.read() == b.read(), "file round trip")
    client.files.delete(file_id)

    client.tables.delete(table_id)
    check(all(t["id"] != table_id for t in client.tables.list()), "table deleted")
    client.buckets.delete("in.c-conformance", force=True)
    check(all(b["id"] != "in.c-conformance" for b in client.buckets.list()), "bucket deleted")

    print("CONFORMANCE OK %d checks" % checks)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - report every failure the same way
        import traceback

        traceback.print_exc()
        sys.exit(1)
