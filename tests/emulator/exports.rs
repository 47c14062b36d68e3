//! Reading tables: exports (filters, slices, gzip, cache) and data previews.

use crate::support::{sorted_lines, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn export_filters_slices_gzip_and_cache() {
    let api = start().await;
    let mut csv = String::from("id,grp\n");
    for i in 0..300_123u32 {
        csv.push_str(&format!("{i},{}\n", i % 3));
    }
    api.emu
        .seed_table("in.c-big.t", csv.as_bytes(), &["id".to_string()])
        .await
        .unwrap();
    let (job, out) = api.export("in.c-big.t", json!({"gzip": true})).await;
    assert_eq!(job["results"]["cacheHit"], false);
    assert_eq!(out.lines().count(), 300_123);
    let file_id = job["results"]["file"]["id"].as_u64().unwrap();
    let (_, file) = api.get(&format!("files/{file_id}?federationToken=1")).await;
    assert_eq!(file["s3Path"]["bucket"], "kbc-sapi-files");
    assert!(file["credentials"]["SessionToken"].is_string());
    let manifest: Value = api
        .http
        .get(file["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        manifest["entries"].as_array().unwrap().len() >= 2,
        "{manifest}"
    );
    assert!(
        manifest["entries"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("0000_part_00.gz")
    );

    let (job2, _) = api.export("in.c-big.t", json!({"gzip": true})).await;
    assert_eq!(job2["results"]["cacheHit"], true);
    assert_eq!(job2["results"]["file"]["id"], file_id);
    let (job3, _) = api.export("in.c-big.t", json!({"gzip": false})).await;
    assert_eq!(job3["results"]["cacheHit"], false);

    let (_, out) = api
        .export("in.c-big.t", json!({"whereFilters": [{"column": "id", "operator": "lt", "values": ["5"], "dataType": "INTEGER"}], "columns": ["id"]}))
        .await;
    assert_eq!(
        sorted_lines(&out),
        vec!["\"0\"", "\"1\"", "\"2\"", "\"3\"", "\"4\""]
    );
    let (_, out) = api
        .call(
            api.req(Method::POST, "tables/in.c-big.t/export-async")
                .form(&[
                    ("whereColumn", "grp"),
                    ("whereValues[]", "1"),
                    ("whereOperator", "eq"),
                    ("limit", "10"),
                ]),
        )
        .await;
    let job = api.wait(&out).await;
    assert_eq!(job["status"], "success");
    let (s, e) = api
        .post_form(
            "tables/in.c-big.t/export-async",
            &[
                ("whereColumn", "grp"),
                ("whereValues[]", "1"),
                ("whereOperator", "gt"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Invalid where operator gt")
    );
    let (s, e) = api
        .post_json("tables/in.c-big.t/export-async", json!({"columns": "nope"}))
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
async fn preview_formats_and_limits() {
    let api = start().await;
    api.emu
        .seed_table("in.c-p.t", b"id,v\n1,a\n2,b\n3,c\n", &[])
        .await
        .unwrap();
    let (s, v) = api
        .get("tables/in.c-p.t/data-preview?format=json&limit=2&columns=v")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["columns"], json!(["v"]));
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert_eq!(v["rows"][0][0]["columnName"], "v");
    assert_eq!(v["rows"][0][0]["isTruncated"], false);
    let (s, e) = api.get("tables/in.c-p.t/data-preview?limit=1001").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("storage.tables.validation"))
    );
    let (s, e) = api.get("tables/in.c-p.t/data-preview?format=csv").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.tables.validation.invalidFormat")
        )
    );
    let (_, v) = api.get("tables/in.c-p.t/data-preview?whereFilters[0][column]=id&whereFilters[0][operator]=ne&whereFilters[0][values][]=1&whereFilters[0][values][]=2").await;
    assert_eq!(v, Value::String("\"id\",\"v\"\n\"3\",\"c\"\n".into()));
    api.emu.shutdown().await;
}

#[tokio::test]
async fn preview_order_by_and_export_refusal() {
    let api = start().await;
    api.emu
        .seed_table("in.c-o.t", b"id,v\n1,b\n10,a\n2,c\n", &[])
        .await
        .unwrap();
    let (s, v) = api
        .get("tables/in.c-o.t/data-preview?orderBy[0][column]=id&orderBy[0][order]=DESC&orderBy[0][dataType]=INTEGER")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        Value::String("\"id\",\"v\"\n\"10\",\"a\"\n\"2\",\"c\"\n\"1\",\"b\"\n".into())
    );
    // Without dataType the comparison is textual: "1" < "10" < "2".
    let (_, v) = api
        .get("tables/in.c-o.t/data-preview?orderBy[0][column]=id&limit=2")
        .await;
    assert_eq!(
        v,
        Value::String("\"id\",\"v\"\n\"1\",\"b\"\n\"10\",\"a\"\n".into())
    );
    let (s, e) = api
        .get("tables/in.c-o.t/data-preview?orderBy[0][column]=id&orderBy[0][order]=UP")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = api
        .post_json(
            "tables/in.c-o.t/export-async",
            json!({"orderBy": [{"column": "id"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("data-preview only"),
        "{e}"
    );
    api.emu.shutdown().await;
}
