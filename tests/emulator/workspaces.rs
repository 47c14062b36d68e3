//! Workspaces: create (job and sync), detail, list, configuration workspaces, delete, objects,
//! input-mapping-load with filters, preserve and dryRun, read-only storage access, imports from a workspace,
//! and the stats that count them.

use crate::support::{Api, TOKEN, start, text_rows};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn seed_people(api: &Api) {
    api.emu
        .seed_table(
            "in.c-main.people",
            b"id,name,city\n1,Ann,Prague\n2,Bob,Brno\n3,Cid,Prague\n4,Dan,\n",
            &["id".to_owned()],
        )
        .await
        .unwrap();
}

fn ws_id(ws: &Value) -> u64 {
    ws["id"].as_u64().expect("a workspace id")
}

#[tokio::test]
async fn workspaces_are_created_listed_shown_and_deleted() {
    let api = start().await;
    let ws = api
        .create_workspace(
            json!({"backend": "snowflake", "readOnlyStorageAccess": true, "loginType": "none"}),
        )
        .await;
    let id = ws_id(&ws);
    assert_eq!(ws["name"], format!("WORKSPACE_{id}"));
    assert_eq!(ws["type"], "table");
    assert_eq!(ws["readOnlyStorageAccess"], true);
    assert_eq!(ws["statementTimeoutSeconds"], 7200);
    assert!(ws["component"].is_null());
    let c = &ws["connection"];
    assert_eq!(c["backend"], "snowflake");
    assert_eq!(c["database"], "KBC_EMULATOR");
    assert_eq!(c["schema"], format!("WORKSPACE_{id}"));
    assert_eq!(c["user"], format!("WORKSPACE_{id}"));
    assert_eq!(c["loginType"], "none");
    assert!(c.get("password").is_none() && ws.get("password").is_none());

    // Sync create: 201 with the object; a name is kept.
    let (s, named) = api
        .post_json("workspaces", json!({"name": "mine", "backend": "bigquery"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{named}");
    assert_eq!(named["name"], "mine");
    assert_eq!(named["connection"]["backend"], "bigquery");
    assert_eq!(named["connection"]["loginType"], "default");
    let (s, e) = api
        .post_json("workspaces", json!({"backend": "redshift"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["code"], "validation.failed");

    // Configuration workspaces.
    let (s, job) = api
        .post_json(
            "branch/default/components/keboola.runner/configs/cfg-1/workspaces?async=1",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job = api.wait(&job).await;
    assert_eq!(job["results"]["component"], "keboola.runner");
    assert_eq!(job["results"]["configurationId"], "cfg-1");
    let (_, mine) = api
        .get("components/keboola.runner/configs/cfg-1/workspaces")
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");

    let (s, list) = api.get("workspaces").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let (s, detail) = api.get(&format!("workspaces/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(detail, ws);
    assert_eq!(api.stats().await["workspaces"], 3);

    // Async delete (a job), then sync delete (204); the database files go.
    let db = api
        ._dir
        .as_ref()
        .unwrap()
        .path()
        .join(format!("workspaces/{id}"));
    assert!(db.join("KBC_EMULATOR.duckdb").exists());
    let (s, job) = api
        .call(api.req(Method::DELETE, &format!("workspaces/{id}?async=1")))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["operationName"], "workspaceDelete");
    assert_eq!(api.wait(&job).await["status"], "success");
    assert!(!db.exists(), "the workspace database is removed");
    let (s, e) = api.get(&format!("workspaces/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "storage.workspaces.notFound");
    let named_id = ws_id(&named);
    let (s, _) = api
        .call(api.req(Method::DELETE, &format!("workspaces/{named_id}")))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.stats().await["workspaces"], 1);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn input_mapping_load_filters_preserves_and_dry_runs() {
    let api = start().await;
    seed_people(&api).await;
    let ws = api.create_workspace(json!({})).await;
    let id = ws_id(&ws);
    let load = |body: Value| {
        let api = &api;
        async move {
            let (s, job) = api
                .post_json(&format!("workspaces/{id}/input-mapping-load"), body)
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{job}");
            assert_eq!(job["operationName"], "workspaceLoad");
            api.wait(&job).await
        }
    };
    let job = load(json!({"input": [
        {"source": "in.c-main.people", "destination": "prague", "columns": ["name", "id"],
         "where_column": "city", "where_values": ["Prague"], "where_operator": "eq", "file_type": "csv"},
        {"source": "in.c-main.people", "destination": "all", "limit": 2},
    ], "preserve": false}))
    .await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.rows(id, "SELECT * FROM prague ORDER BY id").await,
        text_rows(&[&["Ann", "1"], &["Cid", "3"]])
    );
    assert_eq!(
        api.rows(id, "SELECT count(*) FROM \"all\"").await,
        text_rows(&[&["2"]])
    );
    // Loaded tables are untyped: every column is text.
    let types = api
        .rows(
            id,
            &format!(
                "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = 'WORKSPACE_{id}'"
            ),
        )
        .await;
    assert_eq!(types, text_rows(&[&["VARCHAR"]]));
    let (_, objects) = api.get(&format!("workspaces/{id}/objects")).await;
    assert_eq!(
        objects,
        json!([{"name": "all", "type": "table"}, {"name": "prague", "type": "table"}])
    );

    // preserve: true keeps what is there; changed_since after the only load selects nothing.
    let (_, t) = api.get("tables/in.c-main.people").await;
    let since = chrono::DateTime::parse_from_str(
        t["lastImportDate"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%z",
    )
    .unwrap()
    .timestamp();
    let job = load(
        json!({"input": [{"source": "in.c-main.people", "destination": "recent",
        "changed_since": since.to_string()}], "preserve": true}),
    )
    .await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.rows(id, "SELECT count(*) FROM recent").await,
        text_rows(&[&["0"]])
    );
    assert_eq!(
        api.rows(id, "SELECT count(*) FROM prague").await,
        text_rows(&[&["2"]])
    );
    // preserve: false drops the rest.
    let job = load(json!({"input": [{"source": "in.c-main.people", "destination": "kept"}]})).await;
    assert_eq!(job["status"], "success", "{job}");
    let (_, objects) = api.get(&format!("workspaces/{id}/objects")).await;
    assert_eq!(objects, json!([{"name": "kept", "type": "table"}]));
    // Loading onto an existing table without overwrite fails, with overwrite replaces.
    let job = load(
        json!({"input": [{"source": "in.c-main.people", "destination": "kept"}], "preserve": true}),
    )
    .await;
    assert_eq!(job["status"], "error", "{job}");
    let job = load(
        json!({"input": [{"source": "in.c-main.people", "destination": "kept", "overwrite": true,
        "where_column": "id", "where_values": ["4"]}], "preserve": true}),
    )
    .await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.rows(id, "SELECT * FROM kept").await,
        text_rows(&[&["4", "Dan", ""]])
    );
    // A missing source fails the job with Storage's message.
    let job = load(json!({"input": [{"source": "in.c-main.nope", "destination": "x"}]})).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["error"]["code"], "storage.tables.notFound", "{job}");

    // dryRun: 200, no job.
    let (s, dry) = api
        .post_json(
            &format!("workspaces/{id}/input-mapping-load?dryRun=true"),
            json!({"input": [{"source": "in.c-main.people", "destination": "p", "load_type": "AUTO"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(
        dry,
        json!({"input": [{"source": "in.c-main.people", "destination": "p", "loadType": "COPY",
                          "possibleLoadTypes": ["COPY", "VIEW"]}]})
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn read_only_storage_access_shows_current_table_data() {
    let api = start().await;
    seed_people(&api).await;
    let ro = api
        .create_workspace(json!({"readOnlyStorageAccess": true}))
        .await;
    let id = ws_id(&ro);
    let q = "SELECT id, name, city FROM \"KBC_EMULATOR\".\"in.c-main\".\"people\" ORDER BY id";
    assert_eq!(
        api.rows(id, q).await,
        text_rows(&[
            &["1", "Ann", "Prague"],
            &["2", "Bob", "Brno"],
            &["3", "Cid", "Prague"],
            &["4", "Dan", ""]
        ])
    );
    // A load is visible to the next query.
    let job = api
        .import("in.c-main.people", "id,name,city\n5,Eve,Ostrava\n", true)
        .await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.rows(
            id,
            "SELECT count(*) FROM \"KBC_EMULATOR\".\"in.c-main\".people"
        )
        .await,
        text_rows(&[&["5"]])
    );
    // Storage tables are not objects of the workspace.
    let (_, objects) = api.get(&format!("workspaces/{id}/objects")).await;
    assert_eq!(objects, json!([]));
    // Without read-only access the bucket schemas do not exist.
    let plain = ws_id(&api.create_workspace(json!({})).await);
    let qid = api.submit(plain, &[q], false).await;
    let j = api.wait_query(&qid).await;
    assert_eq!(j["status"], "failed", "{j}");
    api.emu.shutdown().await;
}

#[tokio::test]
async fn imports_from_a_workspace_share_the_file_load_semantics() {
    let api = start().await;
    let id = ws_id(&api.create_workspace(json!({})).await);
    api.sql(
        id,
        &[
            "CREATE TABLE out AS SELECT * FROM (VALUES ('1', 'a', NULL), ('2', 'b', 'x')) v(id, name, note)",
            "CREATE VIEW out_view AS SELECT id, upper(name) AS name FROM out",
        ],
    )
    .await;
    let before = api.stats().await;

    // tables-async from a workspace object creates the table with the object's columns.
    api.post_form("buckets", &[("name", "ws")]).await;
    let (s, job) = api
        .post_json(
            "buckets/in.c-ws/tables-async",
            json!({"name": "t", "dataWorkspaceId": id.to_string(), "dataObject": "out", "primaryKey": "id"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["operationName"], "tableCreate");
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["results"]["columns"], json!(["id", "name", "note"]));
    assert_eq!(job["results"]["primaryKey"], json!(["id"]));
    assert_eq!(
        api.emu.dump_table("in.c-ws.t").await.unwrap().unwrap(),
        "\"id\",\"name\",\"note\"\n\"1\",\"a\",\"\"\n\"2\",\"b\",\"x\"\n"
    );

    // Incremental with a primary key upserts; the legacy dataTableName and a view work too.
    api.sql(
        id,
        &["CREATE OR REPLACE TABLE delta AS SELECT * FROM (VALUES ('2', 'B2', 'y'), ('3', 'c', 'z')) v(id, name, note)"],
    )
    .await;
    let (s, job) = api
        .post_json(
            "tables/in.c-ws.t/import-async",
            json!({"dataWorkspaceId": id, "dataTableName": "delta", "incremental": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["operationName"], "tableImport");
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["results"]["totalRowsCount"], 3);
    assert_eq!(
        api.emu.dump_table("in.c-ws.t").await.unwrap().unwrap(),
        "\"id\",\"name\",\"note\"\n\"1\",\"a\",\"\"\n\"2\",\"B2\",\"y\"\n\"3\",\"c\",\"z\"\n"
    );
    // `columns` picks the object's columns; a full load missing a table column fails as a file's does.
    let (_, job) = api
        .post_json(
            "tables/in.c-ws.t/import-async",
            json!({"dataWorkspaceId": id, "dataObject": "out_view", "columns": ["id", "name"]}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(
        job["status"], "error",
        "a full load missing a column fails as a file load does: {job}"
    );
    assert_eq!(job["error"]["code"], "csvImport.columnsNotMatch", "{job}");
    api.sql(
        id,
        &["CREATE TABLE full_load AS SELECT id, name, 'n' AS note FROM out_view"],
    )
    .await;
    let (_, job) = api
        .post_json(
            "tables/in.c-ws.t/import-async",
            json!({"dataWorkspaceId": id, "dataObject": "full_load", "incremental": false}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.emu.dump_table("in.c-ws.t").await.unwrap().unwrap(),
        "\"id\",\"name\",\"note\"\n\"1\",\"A\",\"n\"\n\"2\",\"B\",\"n\"\n"
    );

    // A missing object or workspace fails the job, naming it.
    let (_, job) = api
        .post_json(
            "tables/in.c-ws.t/import-async",
            json!({"dataWorkspaceId": id, "dataObject": "nope"}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "error");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{job}"
    );
    let (_, job) = api
        .post_json(
            "tables/in.c-ws.t/import-async",
            json!({"dataWorkspaceId": 999999, "dataObject": "out"}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["error"]["code"], "storage.workspaces.notFound", "{job}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("999999"),
        "{job}"
    );

    // None of it moved a byte through the file storage.
    let after = api.stats().await;
    assert_eq!(after["fileTransfers"], before["fileTransfers"]);
    assert_eq!(after["queryJobs"], 3, "{after}");
    api.emu.shutdown().await;
}

#[tokio::test]
async fn stats_count_file_transfers() {
    let api = start().await;
    let s0 = api.stats().await;
    assert_eq!(
        s0,
        json!({"fileTransfers": {"uploads": 0, "downloads": 0, "bytesUp": 0, "bytesDown": 0},
               "workspaces": 0, "queryJobs": 0})
    );
    api.post_form("buckets", &[("name", "s")]).await;
    let csv = "id,v\n1,a\n2,b\n";
    let job = api.create_table("in.c-s", "t", csv, "id").await;
    assert_eq!(job["status"], "success");
    let s1 = api.stats().await;
    assert_eq!(s1["fileTransfers"]["uploads"], 1);
    assert_eq!(s1["fileTransfers"]["bytesUp"], csv.len());
    let (_, data) = api.export("in.c-s.t", json!({})).await;
    assert!(data.contains("\"a\""));
    let s2 = api.stats().await;
    // The manifest and one slice.
    assert_eq!(s2["fileTransfers"]["downloads"], 2, "{s2}");
    assert!(s2["fileTransfers"]["bytesDown"].as_u64().unwrap() > 0);
    // The control API needs the token.
    let r = api
        .http
        .get(format!("{}/_emulator/stats", api.emu.url()))
        .header("X-StorageApi-Token", format!("{TOKEN}-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn workspaces_belong_to_their_branch() {
    let api = start().await;
    api.emu
        .set_project(kbc_emulator::Project {
            branch_storage: true,
            ..Default::default()
        })
        .unwrap();
    seed_people(&api).await;
    let (_, job) = api.post_json("dev-branches", json!({"name": "dev"})).await;
    let branch = api.wait(&job).await["results"]["id"].as_u64().unwrap();
    // The branch's own table, with the production table's id.
    api.post_json(
        &format!("branch/{branch}/buckets"),
        json!({"name": "main", "stage": "in"}),
    )
    .await;
    let file = api
        .upload("b.csv", b"id,name,city\n9,Branch,Here\n".to_vec())
        .await;
    let (_, job) = api
        .post_json(
            &format!("branch/{branch}/buckets/in.c-main/tables-async"),
            json!({"name": "people", "dataFileId": file}),
        )
        .await;
    assert_eq!(api.wait(&job).await["status"], "success");

    let (s, job) = api
        .post_json(
            &format!("branch/{branch}/workspaces?async=1"),
            json!({"readOnlyStorageAccess": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let ws = api.wait(&job).await["results"].clone();
    let id = ws_id(&ws);
    let (_, prod) = api.get("workspaces").await;
    assert_eq!(
        prod,
        json!([]),
        "production does not list the branch's workspace"
    );
    let (s, _) = api.get(&format!("workspaces/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, dev) = api.get(&format!("branch/{branch}/workspaces")).await;
    assert_eq!(dev.as_array().unwrap().len(), 1);

    // The Query Service addresses it by its branch; it reads the branch's tables.
    let (s, e) = api
        .call(
            api.qs(Method::POST, &format!("branches/1/workspaces/{id}/queries"))
                .json(&json!({"statements": ["SELECT 1"], "transactional": false})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, r) = api
        .call(
            api.qs(
                Method::POST,
                &format!("branches/{branch}/workspaces/{id}/queries"),
            )
            .json(
                &json!({"statements": ["SELECT name FROM \"KBC_EMULATOR\".\"in.c-main\".people"],
                              "transactional": false}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let job = api.wait_query(r["queryJobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    let (_, page) = api
        .call(api.qs(
            Method::GET,
            &format!(
                "queries/{}/{}/results",
                job["queryJobId"].as_str().unwrap(),
                job["statements"][0]["id"].as_str().unwrap()
            ),
        ))
        .await;
    assert_eq!(page["data"], json!([["Branch"]]), "{page}");
    // input-mapping-load reads the branch's table too.
    let (_, job) = api
        .post_json(
            &format!("branch/{branch}/workspaces/{id}/input-mapping-load"),
            json!({"input": [{"source": "in.c-main.people", "destination": "p"}]}),
        )
        .await;
    assert_eq!(api.wait(&job).await["status"], "success");
    let (_, objects) = api
        .get(&format!("branch/{branch}/workspaces/{id}/objects"))
        .await;
    assert_eq!(objects, json!([{"name": "p", "type": "table"}]));
    api.emu.shutdown().await;
}
