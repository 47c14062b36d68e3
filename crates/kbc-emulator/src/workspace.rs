//! Workspaces' engine: each workspace is a DuckDB database file (`workspaces/<id>/KBC_EMULATOR.duckdb`, so its
//! catalog is `KBC_EMULATOR`, the `database` of the workspace's connection) whose schema `WORKSPACE_<id>` is the
//! default. Read-only storage access adds one schema per bucket (named by the bucket id) holding one view per
//! table over the table's current data file, refreshed before each use.
//!
//! A DuckDB file can be opened by one database instance per process, so each workspace has exactly one
//! connection, cached here; holding its mutex is what serialises the work on one workspace (query jobs, loads,
//! imports), and its interrupt handle is how a query is cancelled.

use crate::error::JobError;
use crate::store::{Store, WorkspaceRecord};
use duckdb::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The catalog of every workspace database (the connection's `database`).
pub(crate) const CATALOG: &str = "KBC_EMULATOR";

/// One workspace's connection; lock it for the whole of a unit of work.
pub(crate) type WsConn = Arc<Mutex<Connection>>;

/// The open workspace databases.
#[derive(Default)]
pub(crate) struct Workspaces {
    open: Mutex<HashMap<u64, WsConn>>,
}

/// A Storage table as read-only storage access shows it.
#[derive(Debug, Clone)]
pub(crate) struct StorageTable {
    /// The schema: the bucket id as clients see it (`in.c-main`).
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
    /// The current data file (None: the table has no rows yet).
    pub(crate) data: Option<PathBuf>,
}

/// A DuckDB failure as a job error (the engine's message, which is what users need).
pub(crate) fn engine_error(e: duckdb::Error) -> JobError {
    JobError::new("workspace.queryFailed", e.to_string())
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Workspaces {
    /// Creates the database file with the workspace schema.
    pub(crate) fn create(&self, store: &Store, ws: &WorkspaceRecord) -> Result<(), JobError> {
        let path = store.workspace_db_path(ws.id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = self.connection(store, ws)?;
        let conn = lock(&conn);
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}; USE {}.{};",
            ident(&ws.schema()),
            ident(CATALOG),
            ident(&ws.schema())
        ))
        .map_err(engine_error)
    }

    /// The workspace's connection (opened on first use, its schema the default).
    pub(crate) fn connection(
        &self,
        store: &Store,
        ws: &WorkspaceRecord,
    ) -> Result<WsConn, JobError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = open.get(&ws.id) {
            return Ok(c.clone());
        }
        let path = store.workspace_db_path(ws.id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(&path).map_err(engine_error)?;
        // A created workspace has its schema; `USE` fails harmlessly before `create` made it.
        let _ = conn.execute_batch(&format!("USE {}.{};", ident(CATALOG), ident(&ws.schema())));
        let conn = Arc::new(Mutex::new(conn));
        open.insert(ws.id, conn.clone());
        Ok(conn)
    }

    /// Closes the workspace's database (once running work lets go of it) and removes its files.
    pub(crate) fn remove(&self, store: &Store, id: u64) {
        let conn = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        drop(conn);
        if let Some(dir) = store.workspace_db_path(id).parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Locks a workspace connection (a panic in earlier work does not make it unusable).
pub(crate) fn lock(conn: &WsConn) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// The objects of a schema: `(name, "table" | "view")`, by name.
pub(crate) fn objects(conn: &Connection, schema: &str) -> Result<Vec<(String, String)>, JobError> {
    let mut stmt = conn
        .prepare(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_catalog = ? AND table_schema = ? ORDER BY table_name",
        )
        .map_err(engine_error)?;
    let rows = stmt
        .query_map([CATALOG, schema], |r| {
            let name: String = r.get(0)?;
            let kind: String = r.get(1)?;
            Ok((
                name,
                if kind == "VIEW" { "view" } else { "table" }.to_owned(),
            ))
        })
        .map_err(engine_error)?;
    rows.collect::<Result<_, _>>().map_err(engine_error)
}

/// Drops every object of a schema (`preserve: false`).
pub(crate) fn drop_objects(conn: &Connection, schema: &str) -> Result<(), JobError> {
    for (name, kind) in objects(conn, schema)? {
        let what = if kind == "view" { "VIEW" } else { "TABLE" };
        conn.execute_batch(&format!(
            "DROP {what} IF EXISTS {}.{}.{}",
            ident(CATALOG),
            ident(schema),
            ident(&name)
        ))
        .map_err(engine_error)?;
    }
    Ok(())
}

/// The columns of an object of a schema, in order; None when there is no such object. Names match without
/// regard to case, as DuckDB resolves identifiers.
pub(crate) fn object_columns(
    conn: &Connection,
    schema: &str,
    name: &str,
) -> Result<Option<Vec<String>>, JobError> {
    let mut stmt = conn
        .prepare(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_catalog = ? AND table_schema = ? AND lower(table_name) = lower(?) \
             ORDER BY ordinal_position",
        )
        .map_err(engine_error)?;
    let columns: Vec<String> = stmt
        .query_map([CATALOG, schema, name], |r| r.get(0))
        .map_err(engine_error)?
        .collect::<Result<_, _>>()
        .map_err(engine_error)?;
    Ok((!columns.is_empty()).then_some(columns))
}

/// Writes `columns` of an object to a CSV file with a header: every value as text, SQL NULL as an empty
/// string, so it loads like any uploaded file.
pub(crate) fn export_object(
    conn: &Connection,
    schema: &str,
    name: &str,
    columns: &[String],
    out: &Path,
) -> Result<(), JobError> {
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("COALESCE(CAST({0} AS VARCHAR), '') AS {0}", ident(c)))
        .collect();
    let sql = format!(
        "COPY (SELECT {} FROM {}.{}.{}) TO {} (FORMAT csv, HEADER true, DELIMITER ',', QUOTE '\"')",
        select.join(", "),
        ident(CATALOG),
        ident(schema),
        ident(name),
        literal(&out.to_string_lossy())
    );
    conn.execute_batch(&sql).map_err(engine_error)
}

/// Makes the bucket schemas show exactly `tables`: one view per table over its current data file, schemas of
/// buckets that are gone dropped. Runs in one transaction so a query never sees half of it.
pub(crate) fn refresh_storage(
    conn: &Connection,
    ws_schema: &str,
    tables: &[StorageTable],
) -> Result<(), JobError> {
    let mut sql = String::from("BEGIN TRANSACTION;\n");
    let mut buckets: Vec<&str> = tables.iter().map(|t| t.bucket.as_str()).collect();
    buckets.sort_unstable();
    buckets.dedup();
    // Every schema but the workspace's own (and DuckDB's `main`) is a bucket's: a Snowflake workspace user
    // cannot create schemas either.
    let existing: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ?")
            .map_err(engine_error)?;
        stmt.query_map([CATALOG], |r| r.get(0))
            .map_err(engine_error)?
            .collect::<Result<_, _>>()
            .map_err(engine_error)?
    };
    for s in &existing {
        if s != ws_schema && s != "main" && !buckets.contains(&s.as_str()) {
            sql.push_str(&format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", ident(s)));
        }
    }
    for b in &buckets {
        sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(b)));
        // Views of tables dropped since the last refresh go with the schema's old contents.
        if existing.iter().any(|s| s == b) {
            for (name, _) in objects(conn, b)? {
                if !tables.iter().any(|t| t.bucket == *b && t.name == name) {
                    sql.push_str(&format!(
                        "DROP VIEW IF EXISTS {}.{};\n",
                        ident(b),
                        ident(&name)
                    ));
                }
            }
        }
    }
    for t in tables {
        sql.push_str(&format!(
            "CREATE OR REPLACE VIEW {}.{} AS {};\n",
            ident(&t.bucket),
            ident(&t.name),
            storage_select(t)
        ));
    }
    sql.push_str("COMMIT;");
    let done = conn.execute_batch(&sql).map_err(engine_error);
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// The SELECT of a table's view: the data file's record is the import stamp and then the values (shorter
/// records mean trailing empty values, hence the padding), all text, never NULL (Storage has no NULLs).
fn storage_select(t: &StorageTable) -> String {
    let Some(data) = &t.data else {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("CAST('' AS VARCHAR) AS {}", ident(c)))
            .collect();
        return format!("SELECT {} WHERE false", cols.join(", "));
    };
    let fields: Vec<String> = (0..=t.columns.len())
        .map(|i| format!("'c{i}': 'VARCHAR'"))
        .collect();
    let cols: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("COALESCE(c{}, '') AS {}", i + 1, ident(c)))
        .collect();
    format!(
        "SELECT {} FROM read_csv({}, header = false, delim = ',', quote = '\"', escape = '\"', \
         auto_detect = false, null_padding = true, parallel = false, columns = {{{}}})",
        cols.join(", "),
        literal(&data.to_string_lossy()),
        fields.join(", ")
    )
}

/// Creates (replacing) table `dest` in the workspace schema with `columns`, all VARCHAR, and fills it from
/// `rows`, which calls its argument once per row.
pub(crate) fn load_table(
    conn: &Connection,
    schema: &str,
    dest: &str,
    columns: &[String],
    rows: impl FnOnce(&mut dyn FnMut(Vec<&[u8]>) -> Result<(), JobError>) -> Result<u64, JobError>,
) -> Result<u64, JobError> {
    let defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} VARCHAR", ident(c)))
        .collect();
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {}.{}.{} ({})",
        ident(CATALOG),
        ident(schema),
        ident(dest),
        defs.join(", ")
    ))
    .map_err(engine_error)?;
    let mut appender = conn
        .appender_to_catalog_and_db(dest, CATALOG, schema)
        .map_err(engine_error)?;
    let n = rows(&mut |values| {
        let values: Vec<String> = values
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        appender
            .append_row(duckdb::appender_params_from_iter(values))
            .map_err(engine_error)
    })?;
    appender.flush().map_err(engine_error)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(id: u64, ro: bool) -> WorkspaceRecord {
        WorkspaceRecord {
            id,
            name: format!("WORKSPACE_{id}"),
            branch_id: 1,
            component: None,
            configuration_id: None,
            created: 0,
            backend: "snowflake".into(),
            backend_size: None,
            read_only_storage_access: ro,
            login_type: "default".into(),
        }
    }

    #[test]
    fn storage_views_read_the_data_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wss = Workspaces::default();
        let w = ws(7, true);
        wss.create(&store, &w).unwrap();
        // Stamp first; a short record (column added later); quotes, a comma and a newline in values.
        let data = dir.path().join("data.csv");
        std::fs::write(&data, "5,1,\"a,b\",x\n6,2,\"multi\nline \"\"q\"\"\"\n7,3\n").unwrap();
        let tables = [
            StorageTable {
                bucket: "in.c-main".into(),
                name: "t".into(),
                columns: vec!["id".into(), "v".into(), "w".into()],
                data: Some(data),
            },
            StorageTable {
                bucket: "in.c-main".into(),
                name: "empty".into(),
                columns: vec!["a".into()],
                data: None,
            },
        ];
        let conn = wss.connection(&store, &w).unwrap();
        let conn = lock(&conn);
        refresh_storage(&conn, &w.schema(), &tables).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, v, w FROM \"KBC_EMULATOR\".\"in.c-main\".\"t\" ORDER BY id")
            .unwrap();
        let rows: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("1".into(), "a,b".into(), "x".into()),
                ("2".into(), "multi\nline \"q\"".into(), "".into()),
                ("3".into(), "".into(), "".into()),
            ]
        );
        let n: i64 = conn
            .query_row("SELECT count(*) FROM \"in.c-main\".empty", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        // The workspace schema is the default and holds none of it.
        conn.execute_batch("CREATE TABLE mine AS SELECT 1 AS x")
            .unwrap();
        assert_eq!(
            objects(&conn, &w.schema()).unwrap(),
            vec![("mine".to_owned(), "table".to_owned())]
        );
        // A bucket that is gone loses its schema.
        refresh_storage(&conn, &w.schema(), &[]).unwrap();
        assert!(
            conn.execute_batch("SELECT * FROM \"in.c-main\".t").is_err(),
            "the view of a dropped bucket is gone"
        );
    }

    #[test]
    fn objects_export_with_nulls_as_empty_strings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wss = Workspaces::default();
        let w = ws(8, false);
        wss.create(&store, &w).unwrap();
        let conn = wss.connection(&store, &w).unwrap();
        let conn = lock(&conn);
        conn.execute_batch(
            "CREATE TABLE r AS SELECT * FROM (VALUES (1, NULL), (2, 'x,y')) v(id, name)",
        )
        .unwrap();
        let cols = object_columns(&conn, &w.schema(), "r").unwrap().unwrap();
        assert_eq!(cols, ["id", "name"]);
        assert_eq!(object_columns(&conn, &w.schema(), "nope").unwrap(), None);
        let out = dir.path().join("out.csv");
        export_object(&conn, &w.schema(), "r", &cols, &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<Vec<String>> = rdr
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(rows, vec![vec!["1", ""], vec!["2", "x,y"]]);
        let n = load_table(&conn, &w.schema(), "loaded", &cols, |push| {
            push(vec![b"a", b""])?;
            push(vec![b"b", b"c"])?;
            Ok(2)
        })
        .unwrap();
        assert_eq!(n, 2);
        let empty: i64 = conn
            .query_row("SELECT count(*) FROM loaded WHERE name = ''", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(empty, 1);
        drop_objects(&conn, &w.schema()).unwrap();
        assert!(objects(&conn, &w.schema()).unwrap().is_empty());
    }
}
