"""Loads a CSV into an existing table with the official Python client: Tables.load (full load)."""
import sys
from kbcstorage.tables import Tables

url, token, table_id, path = sys.argv[1:5]
Tables(url, token).load(table_id, path, is_incremental=False)
