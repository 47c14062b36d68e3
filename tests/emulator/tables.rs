//! Tables: create, detail and list, primary key, rows and column jobs, metadata, typed tables.

use crate::support::{sorted_lines, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn create_table_detail_list_and_validation() {
    let api = start().await;
    api.post_form("buckets", &[("name", "main")]).await;
    let csv =
        "id,\"full name\",note-x\n1,\"Doe, J.\",\"multi\nline \"\"q\"\"\"\n2,Žluťoučký kůň,\n";
    let job = api.create_table("in.c-main", "people", csv, "id").await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["operationName"], "tableCreate");
    assert_eq!(job["results"]["id"], "in.c-main.people");
    assert!(job["startTime"].is_string() && job["endTime"].is_string());
    let (s, t) = api.get("tables/in.c-main.people").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["columns"], json!(["id", "full_name", "note_x"]));
    assert_eq!(t["primaryKey"], json!(["id"]));
    assert_eq!(t["rowsCount"], 2);
    assert_eq!(t["isAlias"], false);
    assert_eq!(t["isTyped"], false);
    assert_eq!(t["bucket"]["id"], "in.c-main");
    assert!(t["lastImportDate"].is_string());
    for key in [
        "uri",
        "name",
        "displayName",
        "created",
        "lastChangeDate",
        "dataSizeBytes",
        "metadata",
        "columnMetadata",
    ] {
        assert!(t.get(key).is_some(), "missing {key}");
    }
    let (_, l) = api.get("tables").await;
    assert!(l[0].get("columns").is_none());
    assert!(l[0].get("bucket").is_some());
    let (_, l) = api.get("buckets/in.c-main/tables?include=columns").await;
    assert_eq!(l[0]["columns"], json!(["id", "full_name", "note_x"]));

    let (s, csv_out) = api
        .call(api.req(Method::GET, "tables/in.c-main.people/data-preview"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        sorted_lines(csv_out.as_str().unwrap()),
        sorted_lines(
            "\"id\",\"full_name\",\"note_x\"\n\"1\",\"Doe, J.\",\"multi\nline \"\"q\"\"\"\n\"2\",\"Žluťoučký kůň\",\"\"\n"
        )
    );

    let fid = api.upload("x.csv", b"id\n1\n".to_vec()).await;
    let (s, e) = api
        .post_json(
            "buckets/in.c-main/tables-async",
            json!({"name": "t2", "dataFileId": fid, "primaryKey": ["id"]}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.validation.primaryKey")
        )
    );
    let (s, e) = api
        .post_json(
            "buckets/in.c-main/tables-async",
            json!({"name": "people", "dataFileId": fid}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.buckets.tableAlreadyExists")
        )
    );
    let (s, _) = api
        .post_json("buckets/in.c-main/tables-async", json!({"dataFileId": fid}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = api.get("tables/in.c-main.nope").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.tables.notFound"))
    );

    // A prepared but never uploaded file fails the job.
    let (_, f) = api
        .post_form("files/prepare", &[("name", "never.csv")])
        .await;
    let (_, job) = api
        .post_json(
            "buckets/in.c-main/tables-async",
            json!({"name": "t3", "dataFileId": f["id"]}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["error"]["code"], "storage.fileNotUploaded");
    api.emu.shutdown().await;
}

#[tokio::test]
async fn rows_columns_and_primary_key_jobs() {
    let api = start().await;
    api.emu
        .seed_table("in.c-r.t", b"id,v\n1,a\n2,b\n3,c\n3,d\n", &[])
        .await
        .unwrap();
    let (s, e) = api
        .call(
            api.req(Method::DELETE, "tables/in.c-r.t/rows")
                .json(&json!({})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.tables.validation.unintendedTruncation")
        )
    );
    let (s, job) = api
        .call(api.req(Method::DELETE, "tables/in.c-r.t/rows").json(
            &json!({"whereFilters": [{"column": "v", "operator": "eq", "values": ["a", "b"]}]}),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let job = api.wait(&job).await;
    assert_eq!(job["results"], json!({"deletedRows": 2}));
    assert_eq!(api.get("tables/in.c-r.t").await.1["rowsCount"], 2);

    // PK with duplicates fails; then remove a duplicate and it works.
    let (_, job) = api
        .post_json("tables/in.c-r.t/primary-key", json!({"columns": ["id"]}))
        .await;
    let job = api.wait(&job).await;
    assert_eq!(
        job["error"]["code"],
        "storage.tables.primaryKeyDuplicateValues"
    );
    let (_, job) = api
        .call(api.req(
            Method::DELETE,
            "tables/in.c-r.t/rows?whereColumn=v&whereValues[]=d",
        ))
        .await;
    assert_eq!(api.wait(&job).await["results"]["deletedRows"], 1);
    let (_, job) = api
        .post_json("tables/in.c-r.t/primary-key", json!({"columns": ["id"]}))
        .await;
    assert_eq!(api.wait(&job).await["results"]["primaryKey"], json!(["id"]));
    let (_, job) = api
        .call(api.req(Method::DELETE, "tables/in.c-r.t/primary-key"))
        .await;
    assert_eq!(api.wait(&job).await["results"]["primaryKey"], json!([]));

    let (s, job) = api
        .post_json("tables/in.c-r.t/columns", json!({"name": "added"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(
        api.wait(&job).await["results"]["columns"],
        json!(["id", "v", "added"])
    );
    let (s, e) = api
        .post_json("tables/in.c-r.t/columns", json!({"name": "added"}))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.tables.columnAlreadyExists")
        )
    );
    let (_, job) = api
        .call(api.req(Method::DELETE, "tables/in.c-r.t/columns/v"))
        .await;
    assert_eq!(
        api.wait(&job).await["results"]["columns"],
        json!(["id", "added"])
    );
    assert_eq!(
        api.emu.dump_table("in.c-r.t").await.unwrap().unwrap(),
        "\"id\",\"added\"\n\"3\",\"\"\n"
    );

    let (_, job) = api
        .call(
            api.req(Method::DELETE, "tables/in.c-r.t/rows")
                .json(&json!({"allowTruncate": true})),
        )
        .await;
    assert_eq!(api.wait(&job).await["results"]["deletedRows"], 1);
    let (s, job) = api
        .call(api.req(Method::DELETE, "tables/in.c-r.t?async=1"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(api.wait(&job).await["operationName"], "tableDrop");
    assert!(api.emu.dump_table("in.c-r.t").await.unwrap().is_none());
    api.emu
        .seed_table("in.c-r.t2", b"id\n1\n", &[])
        .await
        .unwrap();
    let (s, _) = api.call(api.req(Method::DELETE, "tables/in.c-r.t2")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(api.emu.dump_table("in.c-r.t2").await.unwrap().is_none());
    api.emu.shutdown().await;
}

#[tokio::test]
async fn table_metadata_round_trip() {
    let api = start().await;
    api.emu
        .seed_table("in.c-md.t", b"id,v\n1,a\n", &[])
        .await
        .unwrap();
    let body = json!({"provider": "test", "metadata": [{"key": "k", "value": "v1"}],
                      "columnsMetadata": {"id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"}]}});
    let (s, r) = api.post_json("tables/in.c-md.t/metadata", body).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["metadata"][0]["value"], "v1");
    assert_eq!(r["columnsMetadata"]["id"][0]["provider"], "test");
    // Same provider and key: updated, not duplicated.
    let (_, r) = api
        .post_json(
            "tables/in.c-md.t/metadata",
            json!({"provider": "test", "metadata": [{"key": "k", "value": "v2"}]}),
        )
        .await;
    assert_eq!(r["metadata"].as_array().unwrap().len(), 1);
    let (_, t) = api.get("tables/in.c-md.t").await;
    assert_eq!(t["metadata"][0]["value"], "v2");
    assert_eq!(t["columnMetadata"]["id"][0]["value"], "INTEGER");
    let id = t["metadata"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call(api.req(Method::DELETE, &format!("tables/in.c-md.t/metadata/{id}")))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.get("tables/in.c-md.t/metadata").await.1, json!([]));
    let (s, e) = api
        .post_json(
            "tables/in.c-md.t/metadata",
            json!({"provider": "p", "columnsMetadata": {"nope": [{"key": "a", "value": "b"}]}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.tables.validation.columnNotExists")
        )
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn small_routes_update_list_refresh() {
    let api = start().await;
    api.emu
        .seed_table("in.c-sm.t", b"id\n1\n", &[])
        .await
        .unwrap();
    let (s, b) = api
        .call(
            api.req(Method::PUT, "buckets/in.c-sm")
                .json(&json!({"displayName": "Small"})),
        )
        .await;
    assert_eq!(
        (s, b["displayName"].as_str()),
        (StatusCode::OK, Some("Small"))
    );
    let (s, t) = api
        .call(
            api.req(Method::PUT, "tables/in.c-sm.t")
                .form(&[("displayName", "Tee")]),
        )
        .await;
    assert_eq!(
        (s, t["displayName"].as_str()),
        (StatusCode::OK, Some("Tee"))
    );
    let (s, e) = api
        .call(
            api.req(Method::PUT, "tables/in.c-sm.nope")
                .json(&json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.tables.notFound"))
    );

    let (_, j1) = api
        .post_json("tables/in.c-sm.t/export-async", json!({}))
        .await;
    let (_, j2) = api
        .post_json("tables/in.c-sm.t/export-async", json!({"columns": "id"}))
        .await;
    api.wait(&j1).await;
    api.wait(&j2).await;
    let (s, jobs) = api.get("jobs?limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], j2["id"], "newest first");
    let (s, e) = api.get("jobs/999999").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.jobs.notFound"))
    );

    let (_, f) = api.post_form("files/prepare", &[("name", "r.csv")]).await;
    let (s, r) = api
        .call(api.req(Method::PUT, &format!("files/{}/refresh", f["id"])))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(r["uploadParams"]["credentials"]["AccessKeyId"].is_string());

    let (s, d) = api.get("dev-branches/1").await;
    assert_eq!((s, d["isDefault"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, e) = api.get("branch/42/buckets").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.devBranches.notFound"))
    );
    let (_, idx) = api.call(api.http.get(api.url("?exclude=components"))).await;
    assert!(idx.get("components").is_none() && idx["services"].is_array());
    api.emu.shutdown().await;
}

#[tokio::test]
async fn typed_tables_from_definitions_restamp_every_incoming_key() {
    let api = start().await;
    api.post_form("buckets", &[("name", "ty")]).await;
    let def = json!({"name": "t", "primaryKeysNames": ["id"],
        "columns": [{"name": "id", "definition": {"type": "INT", "nullable": false}, "basetype": "INTEGER"},
                    {"name": "v", "basetype": "STRING"}]});
    let (s, job) = api
        .post_json("buckets/in.c-ty/tables-definition", def.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let job = api.wait(&job).await;
    assert_eq!(job["operationName"], "tableDefinitionCreate");
    let t = &job["results"];
    assert_eq!(t["isTyped"], true);
    assert_eq!(t["columns"], json!(["id", "v"]));
    assert_eq!(t["primaryKey"], json!(["id"]));
    assert_eq!(t["definition"]["columns"][0]["definition"]["type"], "INT");
    assert_eq!(t["rowsCount"], 0);
    let (s, e) = api
        .post_json(
            "buckets/in.c-ty/tables-definition",
            json!({"name": "x", "columns": []}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.tables.validation.noColumns")
        )
    );
    let (s, e) = api
        .post_json(
            "buckets/in.c-ty/tables-definition",
            json!({"name": "x", "columns": [{"name": "a", "basetype": "BLOB"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    let job = api.import("in.c-ty.t", "id,v\n1,a\n2,b\n", true).await;
    assert_eq!(job["results"]["totalRowsCount"], 2);
    let (_, t) = api.get("tables/in.c-ty.t").await;
    let first = t["lastImportDate"].as_str().unwrap().to_owned();
    // The same values again: a typed table re-stamps them, so they count as changed.
    let job = api.import("in.c-ty.t", "id,v\n1,a\n", true).await;
    assert_eq!(job["results"]["totalRowsCount"], 2);
    let (_, out) = api
        .export("in.c-ty.t", json!({"changedSince": first}))
        .await;
    assert_eq!(out, "\"1\",\"a\"\n");
    // No new columns through a load.
    let job = api.import("in.c-ty.t", "id,v,extra\n3,c,x\n", true).await;
    assert_eq!(
        job["error"]["code"],
        "storage.tables.validation.unknownColumns"
    );
    api.emu.shutdown().await;
}

/// The `[key, value, provider]` triples of a column's metadata list, in order.
fn metadata_triples(list: &Value) -> Vec<(String, String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| {
            assert!(e["id"].is_string() && e["timestamp"].is_string(), "{e}");
            (
                e["key"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
                e["provider"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn storage_triples(entries: &[(&str, &str)]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned(), "storage".to_owned()))
        .collect()
}

#[tokio::test]
async fn typed_tables_carry_datatype_column_metadata_and_maps_are_php_shaped() {
    let api = start().await;
    // PHP's empty map is `[]`: no buckets yet, so no bucket permissions.
    let (_, token) = api.get("tokens/verify").await;
    assert_eq!(token["bucketPermissions"], json!([]));
    api.post_form("buckets", &[("name", "ty")]).await;
    let (_, token) = api.get("tokens/verify").await;
    assert_eq!(token["bucketPermissions"], json!({"in.c-ty": "manage"}));

    let def = json!({"name": "t", "primaryKeysNames": ["id"], "columns": [
        {"name": "id", "definition": {"type": "INT", "nullable": false}},
        {"name": "name", "definition": {"type": "VARCHAR"}},
        {"name": "amount", "basetype": "NUMERIC"},
        {"name": "price", "definition": {"type": "DECIMAL", "length": "10,2", "default": "0"}},
    ]});
    let (s, job) = api
        .post_json("buckets/in.c-ty/tables-definition", def)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    // The job's result already carries them, as the table detail does.
    assert!(job["results"]["columnMetadata"]["id"].is_array(), "{job}");
    let (_, t) = api.get("tables/in.c-ty.t").await;
    let cm = &t["columnMetadata"];
    assert_eq!(
        metadata_triples(&cm["id"]),
        storage_triples(&[
            ("KBC.datatype.type", "INT"),
            ("KBC.datatype.nullable", ""),
            ("KBC.datatype.basetype", "INTEGER"),
        ])
    );
    assert_eq!(
        metadata_triples(&cm["name"]),
        storage_triples(&[
            ("KBC.datatype.type", "VARCHAR"),
            ("KBC.datatype.nullable", "1"),
            ("KBC.datatype.basetype", "STRING"),
        ])
    );
    // A basetype alone gets the backend's type for it (Snowflake: NUMBER 38,9).
    assert_eq!(
        metadata_triples(&cm["amount"]),
        storage_triples(&[
            ("KBC.datatype.type", "NUMBER"),
            ("KBC.datatype.nullable", "1"),
            ("KBC.datatype.basetype", "NUMERIC"),
            ("KBC.datatype.length", "38,9"),
        ])
    );
    assert_eq!(
        t["definition"]["columns"][2],
        json!({"name": "amount", "definition": {"type": "NUMBER", "nullable": true, "length": "38,9"},
               "basetype": "NUMERIC", "canBeFiltered": true})
    );
    assert_eq!(
        metadata_triples(&cm["price"]),
        storage_triples(&[
            ("KBC.datatype.type", "DECIMAL"),
            ("KBC.datatype.nullable", "1"),
            ("KBC.datatype.basetype", "NUMERIC"),
            ("KBC.datatype.length", "10,2"),
            ("KBC.datatype.default", "0"),
        ])
    );
    // The list shows the same map.
    let (_, l) = api
        .get("buckets/in.c-ty/tables?include=columns,columnMetadata")
        .await;
    assert_eq!(l[0]["columnMetadata"], *cm);

    // A user's metadata sits beside Storage's.
    let (s, r) = api
        .post_json(
            "tables/in.c-ty.t/metadata",
            json!({"provider": "user", "columnsMetadata": {"id": [{"key": "KBC.description", "value": "key"}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["columnsMetadata"]["id"].as_array().unwrap().len(), 4);
    let (_, t) = api.get("tables/in.c-ty.t").await;
    assert_eq!(t["columnMetadata"]["id"][3]["provider"], "user");

    // A new column of a typed table is typed too; a dropped one takes its metadata along.
    let (s, job) = api
        .post_json(
            "tables/in.c-ty.t/columns",
            json!({"name": "flag", "definition": {"type": "BOOLEAN"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(api.wait(&job).await["status"], "success");
    let (s, job) = api
        .call(api.req(Method::DELETE, "tables/in.c-ty.t/columns/price"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(api.wait(&job).await["status"], "success");
    let (_, t) = api.get("tables/in.c-ty.t").await;
    assert_eq!(
        metadata_triples(&t["columnMetadata"]["flag"]),
        storage_triples(&[
            ("KBC.datatype.type", "BOOLEAN"),
            ("KBC.datatype.nullable", "1"),
            ("KBC.datatype.basetype", "BOOLEAN"),
        ])
    );
    assert!(t["columnMetadata"].get("price").is_none(), "{t}");
    let names: Vec<&str> = t["definition"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "amount", "flag"]);

    // A string table has no datatype metadata: `columnMetadata` is PHP's empty array, and a metadata write
    // without column entries answers `columnsMetadata: []`.
    let job = api.create_table("in.c-ty", "plain", "a,b\n1,2\n", "").await;
    assert_eq!(job["status"], "success", "{job}");
    let (_, t) = api.get("tables/in.c-ty.plain").await;
    assert_eq!(t["columnMetadata"], json!([]));
    assert_eq!(t["metadata"], json!([]));
    let (s, r) = api
        .post_json(
            "tables/in.c-ty.plain/metadata",
            json!({"provider": "user", "metadata": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["columnsMetadata"], json!([]));
    api.emu.shutdown().await;
}
