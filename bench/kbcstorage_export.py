"""Exports a table with the official Python client: Tables.export_to_file (sliced, gzip)."""
import sys
from kbcstorage.tables import Tables

url, token, table_id, dest = sys.argv[1:5]
Tables(url, token).export_to_file(table_id, dest, is_gzip=True)
