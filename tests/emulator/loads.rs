//! Loads: sync and async imports, incremental semantics and change stamps, sliced, gzipped and header-less files.

use crate::support::{Api, sorted_lines, start};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn deprecated_sync_create_and_import_accept_form_and_multipart() {
    let api = start().await;
    api.post_form("buckets", &[("name", "main")]).await;
    let (s, t) = api
        .post_form(
            "buckets/in.c-main/tables",
            &[
                ("name", "a"),
                ("dataString", "id,v\n1,x\n"),
                ("primaryKey", "id"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["rowsCount"], 1);
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nb\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"b.csv\"\r\nContent-Type: text/csv\r\n\r\nid,v\n1,x\n2,y\n\r\n--{boundary}--\r\n"
    );
    let (s, t) = api
        .call(
            api.req(Method::POST, "buckets/in.c-main/tables")
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["rowsCount"], 2);
    let (s, r) = api
        .post_form(
            "tables/in.c-main.a/import",
            &[("dataString", "id,v\n2,y\n"), ("incremental", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["totalRowsCount"], 2);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn incremental_semantics_and_changed_since() {
    let api = start().await;
    api.post_form("buckets", &[("name", "main")]).await;
    let job = api
        .create_table("in.c-main", "pk", "id,name\na,b\nc,d\na,b\n", "id")
        .await;
    assert_eq!(job["status"], "success");
    let (_, t) = api.get("tables/in.c-main.pk").await;
    assert_eq!(t["rowsCount"], 2);
    let first_import = t["lastImportDate"].as_str().unwrap().to_owned();

    // Upsert: a changes, c untouched, new inserted; extra column added.
    let job = api
        .import(
            "in.c-main.pk",
            "id,name,extra\na,updated,\nnew,value,1\nnew,value,1\n",
            true,
        )
        .await;
    assert_eq!(job["status"], "success", "{job}");
    let r = &job["results"];
    assert_eq!(r["importedColumns"], json!(["id", "name", "extra"]));
    assert_eq!(r["warnings"], json!([]));
    assert!(r["transaction"].is_null());
    assert_eq!(r["totalRowsCount"], 3);
    assert!(r["totalDataSizeBytes"].as_u64().unwrap() > 0);
    let dump = api.emu.dump_table("in.c-main.pk").await.unwrap().unwrap();
    assert_eq!(
        dump,
        "\"id\",\"name\",\"extra\"\n\"a\",\"updated\",\"\"\n\"c\",\"d\",\"\"\n\"new\",\"value\",\"1\"\n"
    );
    let (_, t) = api.get("tables/in.c-main.pk").await;
    let second_import = t["lastImportDate"].as_str().unwrap().to_owned();
    assert_ne!(first_import, second_import);

    // Rows changed since the first load: a and new only (c kept its stamp).
    let (_, out) = api
        .export("in.c-main.pk", json!({"changedSince": first_import}))
        .await;
    assert_eq!(
        sorted_lines(&out),
        vec!["\"a\",\"updated\",\"\"", "\"new\",\"value\",\"1\""]
    );
    // changedSince == lastImportDate: nothing (adaptive input mapping is exact).
    let (_, out) = api
        .export("in.c-main.pk", json!({"changedSince": second_import}))
        .await;
    assert_eq!(out, "");
    // changedUntil the second load: only c.
    let (_, out) = api
        .export(
            "in.c-main.pk",
            json!({"changedUntil": second_import, "columns": "id"}),
        )
        .await;
    assert_eq!(out, "\"c\"\n");
    // The import stamp as a last column on request.
    let (_, out) = api
        .export("in.c-main.pk", json!({"columns": "id", "includeInternalTimestamp": true, "changedSince": first_import}))
        .await;
    let line = out.lines().next().unwrap();
    assert!(
        line.starts_with("\"a\",\"20") || line.starts_with("\"new\",\"20"),
        "{line}"
    );
    assert_eq!(line.split(',').count(), 2);
    // A relative time covering everything.
    let (_, out) = api
        .export("in.c-main.pk", json!({"changedSince": "-2 days"}))
        .await;
    assert_eq!(out.lines().count(), 3);

    // Same values again: nothing changes, so changedSince the previous load still gives nothing new.
    let job = api
        .import("in.c-main.pk", "id,name,extra\nc,d,\n", true)
        .await;
    assert_eq!(job["results"]["totalRowsCount"], 3);
    let (_, out) = api
        .export("in.c-main.pk", json!({"changedSince": second_import}))
        .await;
    assert_eq!(out, "");

    // Missing columns fail the job with details.
    let job = api.import("in.c-main.pk", "id\nz\n", true).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["error"]["code"], "csvImport.columnsNotMatch");
    assert_eq!(job["results"]["missingColumns"], json!(["name", "extra"]));
    assert_eq!(
        job["results"]["expectedColumns"],
        json!(["id", "name", "extra"])
    );
    assert_eq!(
        api.emu
            .dump_table("in.c-main.pk")
            .await
            .unwrap()
            .unwrap()
            .lines()
            .count(),
        4
    );

    // Full load truncates (and dedups).
    let job = api
        .import("in.c-main.pk", "id,name,extra\nq,1,\nq,2,\n", false)
        .await;
    assert_eq!(job["results"]["totalRowsCount"], 1);
    assert_eq!(
        api.emu.dump_table("in.c-main.pk").await.unwrap().unwrap(),
        "\"id\",\"name\",\"extra\"\n\"q\",\"2\",\"\"\n"
    );

    // No PK: incremental appends.
    api.create_table("in.c-main", "nopk", "id\n1\n", "").await;
    let job = api.import("in.c-main.nopk", "id\n1\n", true).await;
    assert_eq!(job["results"]["totalRowsCount"], 2);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn changed_since_taken_before_a_load_selects_it() {
    let api = start().await;
    api.emu
        .seed_table("in.c-cs.t", b"id,v\n1,a\n", &["id".to_string()])
        .await
        .unwrap();
    // "now" as a client would take it right before loading, at the start of a fresh second so that the load
    // (milliseconds later) falls into the same second: the case one-second stamps get wrong if not careful.
    let start = chrono::Utc::now().timestamp();
    while chrono::Utc::now().timestamp() == start {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = chrono::Utc::now().timestamp().to_string();
    let job = api.import("in.c-cs.t", "id,v\n2,b\n", true).await;
    assert_eq!(job["status"], "success");
    let (_, out) = api
        .export("in.c-cs.t", json!({"changedSince": before}))
        .await;
    assert!(out.contains("\"2\",\"b\""), "{out}");
    let (_, t) = api.get("tables/in.c-cs.t").await;
    let (_, out) = api
        .export("in.c-cs.t", json!({"changedSince": t["lastImportDate"]}))
        .await;
    assert_eq!(out, "");
    api.emu.shutdown().await;
}

/// Uploads `objects` (key suffix → bytes) under a prepared sliced file and returns its id.
async fn upload_sliced(api: &Api, slices: &[(&str, Vec<u8>)], with_manifest: bool) -> u64 {
    let (_, f) = api
        .post_form(
            "files/prepare",
            &[
                ("name", "sliced.csv"),
                ("isSliced", "1"),
                ("federationToken", "1"),
            ],
        )
        .await;
    let p = &f["uploadParams"];
    let (bucket, key) = (p["bucket"].as_str().unwrap(), p["key"].as_str().unwrap());
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20250101/us-east-1/s3/aws4_request",
        p["credentials"]["AccessKeyId"].as_str().unwrap()
    );
    let mut entries = Vec::new();
    for (suffix, bytes) in slices {
        let url = format!("{}/{bucket}/{key}{suffix}", api.emu.url());
        let r = api
            .http
            .put(url)
            .header("Authorization", &auth)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        entries.push(json!({"url": format!("s3://{bucket}/{key}{suffix}")}));
    }
    if with_manifest {
        let url = format!("{}/{bucket}/{key}manifest", api.emu.url());
        let body = json!({"entries": entries}).to_string();
        let r = api
            .http
            .put(url)
            .header("Authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    f["id"].as_u64().unwrap()
}

#[tokio::test]
async fn sliced_gzipped_and_headerless_imports() {
    let api = start().await;
    api.emu
        .seed_table("in.c-i.t", b"id,v\n1,a\n", &["id".to_string()])
        .await
        .unwrap();

    // Sliced, one slice gzipped, header-less with columns[] in a different order.
    let fid = upload_sliced(
        &api,
        &[
            ("part0", crate::common::gzip(b"b,2\n")),
            ("part1", b"c,3\n".to_vec()),
        ],
        true,
    )
    .await;
    let (s, job) = api
        .post_form(
            "tables/in.c-i.t/import-async",
            &[
                ("dataFileId", &fid.to_string()),
                ("incremental", "1"),
                ("columns[]", "v"),
                ("columns[]", "id"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        api.emu.dump_table("in.c-i.t").await.unwrap().unwrap(),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n\"3\",\"c\"\n"
    );

    // withoutHeaders: table column order; a gzipped plain file with a semicolon delimiter.
    let fid = api
        .upload("x.csv.gz", crate::common::gzip(b"4;'d;x'\n"))
        .await;
    let (_, job) = api
        .post_json(
            "tables/in.c-i.t/import-async",
            json!({"dataFileId": fid, "incremental": true, "withoutHeaders": true, "delimiter": ";", "enclosure": "'"}),
        )
        .await;
    assert_eq!(api.wait(&job).await["status"], "success");
    assert!(
        api.emu
            .dump_table("in.c-i.t")
            .await
            .unwrap()
            .unwrap()
            .contains("\"4\",\"d;x\"\n")
    );

    // A sliced file without its manifest, and a manifest pointing to a missing slice.
    let fid = upload_sliced(&api, &[("part0", b"z,9\n".to_vec())], false).await;
    let (_, job) = api
        .post_json(
            "tables/in.c-i.t/import-async",
            json!({"dataFileId": fid, "columns": ["id", "v"]}),
        )
        .await;
    assert_eq!(
        api.wait(&job).await["error"]["code"],
        "storage.manifestFileMissing"
    );
    let (_, f) = api
        .post_form("files/prepare", &[("name", "s.csv"), ("isSliced", "1")])
        .await;
    let p = &f["uploadParams"];
    let manifest = json!({"entries": [{"url": format!("s3://kbc-sapi-files/{}gone", p["key"].as_str().unwrap())}]});
    let r = api
        .http
        .put(format!(
            "{}/kbc-sapi-files/{}manifest",
            api.emu.url(),
            p["key"].as_str().unwrap()
        ))
        .header(
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/x",
                p["credentials"]["AccessKeyId"].as_str().unwrap()
            ),
        )
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, job) = api
        .post_json(
            "tables/in.c-i.t/import-async",
            json!({"dataFileId": f["id"], "withoutHeaders": true}),
        )
        .await;
    assert_eq!(
        api.wait(&job).await["error"]["code"],
        "storage.importFileMissing"
    );

    // Ragged rows fail the job and leave the table as it was.
    let before = api.emu.dump_table("in.c-i.t").await.unwrap().unwrap();
    let job = api.import("in.c-i.t", "id,v\n5,e\n6\n", true).await;
    assert_eq!(job["error"]["code"], "invalidCsv");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("line 3"),
        "{job}"
    );
    assert_eq!(
        api.emu.dump_table("in.c-i.t").await.unwrap().unwrap(),
        before
    );
    api.emu.shutdown().await;
}
