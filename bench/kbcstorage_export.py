"""Exports a table with the official Python client: Tables.export_to_file (sliced, gzip).
It downloads S3 slices into the working directory, so work inside the destination folder."""
import os
import sys
from kbcstorage.tables import Tables

url, token, table_id, dest = sys.argv[1:5]
os.makedirs(dest, exist_ok=True)
os.chdir(dest)
Tables(url, token).export_to_file(table_id, dest, is_gzip=True)
