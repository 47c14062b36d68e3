//! Integration tests of the Storage API emulator: each starts it in-process on port 0 and talks to it over
//! real HTTP, the way Keboola clients do (JSON and form bodies, files/prepare + S3 upload, async jobs).

use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions, FaultRule, TlsFiles};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

const TOKEN: &str = "test-token";

struct Api {
    emu: Emulator,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start_at(dir.path()).await;
    api._dir = Some(dir);
    api
}

async fn start_at(path: &std::path::Path) -> Api {
    let emu = Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: path.to_owned(),
        tokens: vec![TOKEN.into()],
    })
    .await
    .unwrap();
    Api {
        emu,
        http: reqwest::Client::new(),
        _dir: None,
    }
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/v2/storage/{}", self.emu.local_url(), path)
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-StorageApi-Token", TOKEN)
    }

    async fn call(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.req(Method::GET, path)).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.req(Method::POST, path).json(&body)).await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.call(self.req(Method::POST, path).form(form)).await
    }

    /// Polls a job until it ends.
    async fn wait(&self, job: &Value) -> Value {
        let id = job["id"].as_u64().expect("a job id");
        for _ in 0..400 {
            let (s, j) = self.get(&format!("jobs/{id}")).await;
            assert_eq!(s, StatusCode::OK);
            if j["status"] == "success" || j["status"] == "error" {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {id} did not finish");
    }

    /// files/prepare + S3 PUT (SigV4-style header with the issued key); returns the file id.
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> u64 {
        let (s, f) = self
            .post_form(
                "files/prepare",
                &[
                    ("name", name),
                    ("federationToken", "1"),
                    ("tags[]", "file-import"),
                ],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{f}");
        let p = &f["uploadParams"];
        let url = format!(
            "{}/{}/{}",
            self.emu.local_url(),
            p["bucket"].as_str().unwrap(),
            p["key"].as_str().unwrap()
        );
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            p["credentials"]["AccessKeyId"].as_str().unwrap()
        );
        let r = self
            .http
            .put(url)
            .header("Authorization", auth)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        f["id"].as_u64().unwrap()
    }

    async fn create_table(&self, bucket: &str, name: &str, csv: &str, pk: &str) -> Value {
        let file_id = self.upload("data.csv", csv.as_bytes().to_vec()).await;
        let (s, job) = self
            .post_json(
                &format!("buckets/{bucket}/tables-async"),
                json!({"name": name, "dataFileId": file_id, "primaryKey": pk}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["status"], "waiting");
        self.wait(&job).await
    }

    async fn import(&self, table: &str, csv: &str, incremental: bool) -> Value {
        let file_id = self.upload("load.csv", csv.as_bytes().to_vec()).await;
        let (s, job) = self
            .post_form(
                &format!("tables/{table}/import-async"),
                &[
                    ("dataFileId", &file_id.to_string()),
                    ("incremental", if incremental { "1" } else { "0" }),
                ],
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        self.wait(&job).await
    }

    /// Runs an export and returns the concatenated, gunzipped slices.
    async fn export(&self, table: &str, params: Value) -> (Value, String) {
        let (s, job) = self
            .post_json(&format!("tables/{table}/export-async"), params)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let job = self.wait(&job).await;
        assert_eq!(job["status"], "success", "{job}");
        let file_id = job["results"]["file"]["id"].as_u64().unwrap();
        let (_, file) = self
            .get(&format!("files/{file_id}?federationToken=1"))
            .await;
        assert_eq!(file["isSliced"], true);
        let manifest: Value = self
            .http
            .get(file["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out = String::new();
        let key_id = file["credentials"]["AccessKeyId"].as_str().unwrap();
        for e in manifest["entries"].as_array().unwrap() {
            let u = e["url"].as_str().unwrap().strip_prefix("s3://").unwrap();
            let bytes = self
                .http
                .get(format!("{}/{u}", self.emu.url()))
                .header(
                    "Authorization",
                    format!("AWS4-HMAC-SHA256 Credential={key_id}/x/us-east-1/s3/aws4_request"),
                )
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            if u.ends_with(".gz") {
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_string(&mut out)
                    .unwrap();
            } else {
                out.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
        (job, out)
    }
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[tokio::test]
async fn auth_errors_have_the_real_shape() {
    let api = start().await;
    let r = api.http.get(api.url("tokens/verify")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Access token must be set");
    let r = api
        .http
        .get(api.url("buckets"))
        .header("X-StorageApi-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "storage.tokenInvalid");
    assert_eq!(body["status"], "error");
    assert!(
        body["exceptionId"]
            .as_str()
            .unwrap()
            .starts_with("exception-")
    );
    let (s, v) = api.get("tokens/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["owner"]["fileStorageProvider"], "aws");
    assert!(v["owner"]["features"].is_array());
    let (s, v) = api.call(api.http.get(api.url(""))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["api"], "storage");
    let (s, v) = api.get("dev-branches").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["isDefault"], true);
    let (s, _) = api.get("no/such/route").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn buckets_lifecycle_with_branch_paths() {
    let api = start().await;
    let (s, b) = api
        .post_form(
            "buckets",
            &[("name", "main"), ("stage", "in"), ("description", "d")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["id"], "in.c-main");
    assert_eq!(b["name"], "c-main");
    assert_eq!(b["displayName"], "main");
    let (s, e) = api.post_json("buckets", json!({"name": "main"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "storage.buckets.alreadyExists");
    let (s, e) = api.post_json("buckets", json!({"name": "bad name!"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("storage.buckets.validation"))
    );
    let (s, d) = api.get("branch/default/buckets/in.c-main").await;
    assert_eq!((s, d["id"].as_str()), (StatusCode::OK, Some("in.c-main")));
    let (s, l) = api.get("branch/1/buckets").await;
    assert_eq!((s, l.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (s, e) = api.get("buckets/in.c-nope").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.buckets.notFound"))
    );

    api.create_table("in.c-main", "t", "id\n1\n", "").await;
    let (s, e) = api.call(api.req(Method::DELETE, "buckets/in.c-main")).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("buckets.deleteNotEmpty"))
    );
    let (s, job) = api
        .call(api.req(Method::DELETE, "buckets/in.c-main?force=true&async=true"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(api.wait(&job).await["status"], "success");
    assert_eq!(api.get("buckets/in.c-main").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("tables/in.c-main.t").await.0, StatusCode::NOT_FOUND);
    api.emu.shutdown().await;
}

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
async fn files_api_and_s3_subset() {
    let api = start().await;
    let (s, f) = api.post_json("files/prepare", json!({"name": "a.csv", "tags": ["x", "y"], "federationToken": true, "isEncrypted": true})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(f["provider"], "aws");
    let p = &f["uploadParams"];
    assert_eq!(p["acl"], "private");
    assert_eq!(p["x-amz-server-side-encryption"], "AES256");
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(p["credentials"][k].is_string(), "{k}");
    }
    let key_id = p["credentials"]["AccessKeyId"].as_str().unwrap();
    let obj_url = format!(
        "{}/kbc-sapi-files/{}",
        api.emu.url(),
        p["key"].as_str().unwrap()
    );
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={key_id}/20250101/us-east-1/s3/aws4_request, Signature=0"
    );

    // Unknown key → 403 InvalidAccessKeyId.
    let r = api
        .http
        .put(&obj_url)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAFAKE/x/y/s3/aws4_request",
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>InvalidAccessKeyId</Code>")
    );

    // aws-chunked PUT with a trailer.
    let chunked = "5;chunk-signature=a\r\nhello\r\n6;chunk-signature=b\r\n world\r\n0;chunk-signature=c\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
    let r = api
        .http
        .put(&obj_url)
        .header("Authorization", &auth)
        .header("Content-Encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", "11")
        .body(chunked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .http
        .get(&obj_url)
        .header("Authorization", &auth)
        .header("Range", "bytes=6-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 6-10/11");
    assert_eq!(r.text().await.unwrap(), "world");
    let r = api
        .http
        .head(&obj_url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-length"], "11");

    // Multipart upload.
    let mp_url = format!("{}/kbc-sapi-files/multi/obj.csv", api.emu.url());
    let r = api
        .http
        .post(format!("{mp_url}?uploads"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    let xml = r.text().await.unwrap();
    let upload_id = xml
        .split("<UploadId>")
        .nth(1)
        .unwrap()
        .split("</UploadId>")
        .next()
        .unwrap()
        .to_owned();
    for (n, body) in [(2, "world"), (1, "hello ")] {
        let r = api
            .http
            .put(format!("{mp_url}?partNumber={n}&uploadId={upload_id}"))
            .header("Authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("etag"));
    }
    let complete = "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>";
    let r = api
        .http
        .post(format!("{mp_url}?uploadId={upload_id}"))
        .header("Authorization", &auth)
        .body(complete)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        api.http
            .get(&mp_url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "hello world"
    );
    let r = api
        .http
        .get(format!(
            "{}/kbc-sapi-files?list-type=2&prefix=multi/",
            api.emu.url()
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    let xml = r.text().await.unwrap();
    assert!(
        xml.contains("<Key>multi/obj.csv</Key>") && xml.contains("<Size>11</Size>"),
        "{xml}"
    );

    // Files list (newest first, tags), detail, tags, delete.
    let (_, f2) = api
        .post_form("files/prepare", &[("name", "b.csv"), ("tags[]", "x")])
        .await;
    let (_, l) = api.get("files?tags[]=x").await;
    assert_eq!(l[0]["id"], f2["id"]);
    assert_eq!(l.as_array().unwrap().len(), 2);
    assert!(l[0].get("credentials").is_none());
    let (_, l) = api.get("files?tags[]=y").await;
    assert_eq!(l.as_array().unwrap().len(), 1);
    let id = f["id"].as_u64().unwrap();
    let (s, _) = api
        .post_json(&format!("files/{id}/tags"), json!({"tag": "z"}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call(api.req(Method::DELETE, &format!("files/{id}/tags/x")))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, d) = api.get(&format!("files/{id}")).await;
    assert_eq!(d["tags"], json!(["y", "z"]));
    assert_eq!(d["sizeBytes"], 11, "the uploaded size");
    assert!(d.get("credentials").is_none());
    assert_eq!(
        api.http
            .get(d["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "hello world"
    );
    let (s, _) = api
        .call(api.req(Method::DELETE, &format!("files/{id}")))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = api.get(&format!("files/{id}")).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.files.notFound"))
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let api = start_at(dir.path()).await;
    api.emu
        .seed_table("in.c-keep.t", b"id,v\n1,a\n2,b\n", &["id".to_string()])
        .await
        .unwrap();
    let fid = api.upload("f.csv", b"id,v\n3,c\n".to_vec()).await;
    let job = api.import("in.c-keep.t", "id,v\n2,B\n", true).await;
    assert_eq!(job["status"], "success");
    let before = api.emu.dump_table("in.c-keep.t").await.unwrap().unwrap();
    let (_, detail_before) = api.get("tables/in.c-keep.t").await;
    api.emu.shutdown().await;

    // What a crash mid-write leaves behind: a newer generation and a blob nobody points to.
    let table_dir = dir.path().join("tables/in.c-keep.t");
    std::fs::write(table_dir.join("data.999999.csv"), "1,half,written\n").unwrap();
    std::fs::write(dir.path().join("objects/orphan"), "x").unwrap();

    let api = start_at(dir.path()).await;
    assert!(!table_dir.join("data.999999.csv").exists());
    assert!(!dir.path().join("objects/orphan").exists());
    assert_eq!(
        api.emu.dump_table("in.c-keep.t").await.unwrap().unwrap(),
        before
    );
    let (_, t) = api.get("tables/in.c-keep.t").await;
    assert_eq!(t["primaryKey"], json!(["id"]));
    assert_eq!(t["lastImportDate"], detail_before["lastImportDate"]);
    let (s, j) = api.get(&format!("jobs/{}", job["id"])).await;
    assert_eq!((s, j["status"].as_str()), (StatusCode::OK, Some("success")));
    // The file uploaded before the restart is still importable (its S3 key still works).
    let (_, job) = api
        .post_json(
            "tables/in.c-keep.t/import-async",
            json!({"dataFileId": fid, "incremental": true}),
        )
        .await;
    assert_eq!(api.wait(&job).await["results"]["totalRowsCount"], 3);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn control_api_and_faults() {
    let api = start().await;
    let base = api.emu.url();
    let r = api
        .http
        .post(format!("{base}/_emulator/tables/in.c-ctl.t?primaryKey=id"))
        .header("X-StorageApi-Token", TOKEN)
        .body("id,v\n2,b\n1,a\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .http
        .get(format!("{base}/_emulator/tables/in.c-ctl.t"))
        .header("X-StorageApi-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n"
    );
    let r = api
        .http
        .get(format!("{base}/_emulator/tables/in.c-ctl.nope"))
        .header("X-StorageApi-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api
        .http
        .get(format!("{base}/_emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Two 503s with Retry-After on verify, then normal.
    let rule = json!({"method": "GET", "path": "/v2/storage/tokens/verify", "times": 2, "status": 503, "retryAfter": 3});
    let r = api
        .http
        .post(format!("{base}/_emulator/faults"))
        .header("X-StorageApi-Token", TOKEN)
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for _ in 0..2 {
        let r = api.req(Method::GET, "tokens/verify").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "3");
    }
    assert_eq!(api.get("tokens/verify").await.0, StatusCode::OK);

    // 500 after the import was applied: the data is in, the client sees a failure.
    api.emu
        .add_fault(FaultRule {
            method: Some("POST".into()),
            path: Some("/v2/storage/tables/*/import-async".into()),
            status: Some(500),
            after_apply: true,
            ..Default::default()
        })
        .unwrap();
    let fid = api.upload("x.csv", b"id,v\n3,c\n".to_vec()).await;
    let (s, _) = api
        .post_json(
            "tables/in.c-ctl.t/import-async",
            json!({"dataFileId": fid, "incremental": true}),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        api.emu
            .dump_table("in.c-ctl.t")
            .await
            .unwrap()
            .unwrap()
            .lines()
            .count(),
        4
    );

    // The next export job fails; the one after works.
    api.emu
        .add_fault(FaultRule {
            job: Some("tableExport".into()),
            fail: Some(kbc_emulator::faults::JobFailure {
                code: "x.boom".into(),
                message: "boom".into(),
            }),
            ..Default::default()
        })
        .unwrap();
    let (_, job) = api
        .post_json("tables/in.c-ctl.t/export-async", json!({}))
        .await;
    let job = api.wait(&job).await;
    assert_eq!(
        (job["status"].as_str(), job["error"]["code"].as_str()),
        (Some("error"), Some("x.boom"))
    );
    let (_, out) = api.export("in.c-ctl.t", json!({})).await;
    assert_eq!(out.lines().count(), 3);

    // A response cut after 10 bytes.
    api.emu
        .add_fault(FaultRule {
            path: Some("/v2/storage/tables/*/data-preview".into()),
            cut_after_bytes: Some(10),
            ..Default::default()
        })
        .unwrap();
    let r = api
        .req(Method::GET, "tables/in.c-ctl.t/data-preview")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "headers arrive before the cut");
    assert!(r.bytes().await.is_err());
    // The rule was used up: the next preview is whole.
    let r = api
        .req(Method::GET, "tables/in.c-ctl.t/data-preview")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().lines().count(), 4);

    // A job that never finishes.
    api.emu
        .add_fault(FaultRule {
            job: Some("tableExport".into()),
            hang: true,
            ..Default::default()
        })
        .unwrap();
    let (_, job) = api
        .post_json("tables/in.c-ctl.t/export-async", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.get(&format!("jobs/{}", job["id"])).await.1["status"],
        "waiting"
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn seed_dir_reads_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tables")).unwrap();
    std::fs::write(dir.path().join("tables/in.c-s.a.csv"), "id,v\n1,x\n1,y\n").unwrap();
    std::fs::write(
        dir.path().join("tables/in.c-s.a.csv.manifest"),
        r#"{"primary_key":["id"]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tables/in.c-s.b.csv"), "k\n1\n1\n").unwrap();
    let api = start().await;
    api.emu.seed_dir(dir.path()).await.unwrap();
    assert_eq!(
        api.emu.dump_table("in.c-s.a").await.unwrap().unwrap(),
        "\"id\",\"v\"\n\"1\",\"y\"\n"
    );
    assert_eq!(
        api.emu
            .dump_table("in.c-s.b")
            .await
            .unwrap()
            .unwrap()
            .lines()
            .count(),
        3
    );
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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
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
        &[("part0", gzip(b"b,2\n")), ("part1", b"c,3\n".to_vec())],
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
    let fid = api.upload("x.csv.gz", gzip(b"4;'d;x'\n")).await;
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

#[tokio::test]
async fn expired_credentials_and_broken_slices() {
    let api = start().await;
    api.emu
        .seed_table("in.c-e.t", b"id\n1\n2\n", &[])
        .await
        .unwrap();
    let (_, job) = api
        .post_json("tables/in.c-e.t/export-async", json!({"gzip": true}))
        .await;
    let file_id = api.wait(&job).await["results"]["file"]["id"]
        .as_u64()
        .unwrap();
    let (_, file) = api.get(&format!("files/{file_id}?federationToken=1")).await;
    let old_key = file["credentials"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(api.emu.expire_credentials() > 0);
    let r = api
        .http
        .get(file["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>ExpiredToken</Code>")
    );
    // Asking Storage again gives working credentials.
    let (_, file) = api.get(&format!("files/{file_id}?federationToken=1")).await;
    assert_ne!(
        file["credentials"]["AccessKeyId"].as_str().unwrap(),
        old_key
    );
    assert_eq!(
        api.http
            .get(file["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A truncated slice: the stored gzip is cut, so it no longer decompresses.
    api.emu
        .add_fault(FaultRule {
            job: Some("tableExport".into()),
            truncate_slice_bytes: Some(12),
            ..Default::default()
        })
        .unwrap();
    let (_, job) = api
        .post_json(
            "tables/in.c-e.t/export-async",
            json!({"gzip": true, "limit": 5}),
        )
        .await;
    let job = api.wait(&job).await;
    assert_eq!(job["results"]["cacheHit"], false);
    let file_id = job["results"]["file"]["id"].as_u64().unwrap();
    let (_, file) = api.get(&format!("files/{file_id}?federationToken=1")).await;
    let manifest: Value = api
        .http
        .get(file["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slice = manifest["entries"][0]["url"]
        .as_str()
        .unwrap()
        .strip_prefix("s3://")
        .unwrap()
        .to_owned();
    let key_id = file["credentials"]["AccessKeyId"].as_str().unwrap();
    let auth = format!("AWS4-HMAC-SHA256 Credential={key_id}/x");
    let bytes = api
        .http
        .get(format!("{}/{slice}", api.emu.url()))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len(), 12);
    assert!(
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut String::new())
            .is_err()
    );

    // An S3 503 on the slice path, with Retry-After, as S3 XML.
    api.emu
        .add_fault(FaultRule {
            method: Some("GET".into()),
            path: Some("/kbc-sapi-files/*_part_*".into()),
            status: Some(503),
            retry_after: Some(2),
            ..Default::default()
        })
        .unwrap();
    let r = api
        .http
        .get(format!("{}/{slice}", api.emu.url()))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(r.text().await.unwrap().contains("<Code>SlowDown</Code>"));
    api.emu.shutdown().await;
}

#[tokio::test]
async fn s3_listing_with_delimiter_and_pages() {
    let api = start().await;
    let (_, f) = api.post_form("files/prepare", &[("name", "a.csv")]).await;
    let key_id = f["uploadParams"]["credentials"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("AWS4-HMAC-SHA256 Credential={key_id}/x");
    for key in ["d/a/1", "d/a/2", "d/b", "d/c/1", "e"] {
        let r = api
            .http
            .put(format!("{}/kbc-sapi-files/{key}", api.emu.url()))
            .header("Authorization", &auth)
            .body(key.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let list = |q: String| {
        let (http, url, auth) = (api.http.clone(), api.emu.url(), auth.clone());
        async move {
            http.get(format!("{url}/kbc-sapi-files?list-type=2&{q}"))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let xml = list("prefix=d/&delimiter=/".into()).await;
    assert!(
        xml.contains("<CommonPrefixes><Prefix>d/a/</Prefix></CommonPrefixes>"),
        "{xml}"
    );
    assert!(
        xml.contains("<CommonPrefixes><Prefix>d/c/</Prefix></CommonPrefixes>"),
        "{xml}"
    );
    assert!(
        xml.contains("<Key>d/b</Key>")
            && !xml.contains("<Key>d/a/1</Key>")
            && !xml.contains("<Key>e</Key>")
    );
    // Pages of two: d/a/1 d/a/2 | d/b d/c/1 | e
    let mut keys = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let xml = list(format!("max-keys=2&continuation-token={token}")).await;
        keys.extend(
            xml.split("<Key>")
                .skip(1)
                .map(|s| s.split("</Key>").next().unwrap().to_owned()),
        );
        match xml.split("<NextContinuationToken>").nth(1) {
            Some(rest) => token = rest.split('<').next().unwrap().replace('/', "%2F"),
            None => break,
        }
    }
    assert_eq!(keys, ["d/a/1", "d/a/2", "d/b", "d/c/1", "e"]);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn binary_prints_its_url_first_and_logs_requests_without_tokens() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "very-secret-token",
            "--store",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first
        .trim_end()
        .strip_prefix("listening on http://127.0.0.1:")
        .map(|port| {
            assert!(port.parse::<u16>().unwrap() > 0);
            format!("http://127.0.0.1:{port}")
        });
    let url = url.unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let r = reqwest::Client::new()
        .get(format!("{url}/v2/storage/tokens/verify"))
        .header("X-StorageApi-Token", "very-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // SIGTERM stops it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.starts_with("GET /v2/storage/tokens/verify 200 "),
        "{rest}"
    );
    assert!(!rest.contains("very-secret-token"));
}

#[tokio::test]
async fn one_failed_s3_part_upload_then_a_retry() {
    let api = start().await;
    let (_, f) = api.post_form("files/prepare", &[("name", "big.csv")]).await;
    let p = &f["uploadParams"];
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/x",
        p["credentials"]["AccessKeyId"].as_str().unwrap()
    );
    let url = format!(
        "{}/kbc-sapi-files/{}",
        api.emu.url(),
        p["key"].as_str().unwrap()
    );
    let xml = api
        .http
        .post(format!("{url}?uploads"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let upload_id = xml
        .split("<UploadId>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    api.emu
        .add_fault(FaultRule {
            method: Some("PUT".into()),
            query: Some("*partNumber=2&*".into()),
            status: Some(500),
            ..Default::default()
        })
        .unwrap();
    let put = |n: u32, body: &'static str| {
        let rb = api
            .http
            .put(format!("{url}?partNumber={n}&uploadId={upload_id}"))
            .header("Authorization", &auth)
            .body(body);
        async move { rb.send().await.unwrap().status() }
    };
    assert_eq!(put(1, "id\n1\n").await, StatusCode::OK);
    assert_eq!(put(2, "2\n").await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(put(2, "2\n").await, StatusCode::OK);
    let r = api
        .http
        .post(format!("{url}?uploadId={upload_id}"))
        .header("Authorization", &auth)
        .body("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, job) = api
        .post_json(
            "buckets/in.c-m/tables-async",
            json!({"name": "t", "dataFileId": f["id"]}),
        )
        .await;
    assert_eq!(job["code"], "storage.buckets.notFound");
    api.post_form("buckets", &[("name", "m")]).await;
    let (_, job) = api
        .post_json(
            "buckets/in.c-m/tables-async",
            json!({"name": "t", "dataFileId": f["id"]}),
        )
        .await;
    assert_eq!(api.wait(&job).await["results"]["rowsCount"], 2);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn jobs_cut_short_by_a_restart_end_in_error() {
    let dir = tempfile::tempdir().unwrap();
    let api = start_at(dir.path()).await;
    api.emu
        .seed_table("in.c-r.t", b"id\n1\n", &[])
        .await
        .unwrap();
    api.emu
        .add_fault(FaultRule {
            job: Some("tableExport".into()),
            hang: true,
            ..Default::default()
        })
        .unwrap();
    let (_, job) = api
        .post_json("tables/in.c-r.t/export-async", json!({}))
        .await;
    api.emu.shutdown().await;
    let api = start_at(dir.path()).await;
    let (_, j) = api.get(&format!("jobs/{}", job["id"])).await;
    assert_eq!(j["status"], "error");
    assert_eq!(j["error"]["code"], "applicationError");
    // The table still works.
    let (_, out) = api.export("in.c-r.t", json!({})).await;
    assert_eq!(out, "\"1\"\n");
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

#[tokio::test]
async fn the_briefs_wrong_calls_get_actionable_errors() {
    let api = start().await;
    api.emu
        .seed_table("in.c-w.t", b"id\n1\n", &[])
        .await
        .unwrap();
    let (s, e) = api
        .call(
            api.req(Method::POST, "buckets/in.c-w/tables-async?name=x")
                .header("Content-Type", "text/csv")
                .body("id\n1\n"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("files/prepare"),
        "{e}"
    );
    let (s, e) = api
        .post_form("tables/in.c-w.t/import-async", &[("dataString", "id\n2\n")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("deprecated sync"),
        "{e}"
    );
    let (s, e) = api
        .post_json("tables/in.c-w.t", json!({"primaryKey": ["id"]}))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(e["error"].as_str().unwrap().contains("primary-key"), "{e}");
    let (s, _) = api
        .call(api.req(Method::GET, "tables/in.c-w.t/export-async"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
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
async fn concurrent_jobs_on_one_table_run_one_at_a_time() {
    let api = start().await;
    api.emu
        .seed_table("in.c-cc.t", b"id,v\n0,x\n", &["id".to_string()])
        .await
        .unwrap();
    let mut files = Vec::new();
    for i in 1..=6 {
        let csv = (0..100).map(|r| format!("{i}-{r},v\n")).collect::<String>();
        files.push(
            api.upload("p.csv", format!("id,v\n{csv}").into_bytes())
                .await,
        );
    }
    // Start every import (and an export in between) before any finishes.
    let mut jobs = Vec::new();
    for (n, fid) in files.iter().enumerate() {
        let (s, job) = api
            .post_json(
                "tables/in.c-cc.t/import-async",
                json!({"dataFileId": fid, "incremental": true}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        jobs.push(job);
        if n == 2 {
            jobs.push(
                api.post_json("tables/in.c-cc.t/export-async", json!({}))
                    .await
                    .1,
            );
        }
    }
    let mut windows = Vec::new();
    for job in &jobs {
        let j = api.wait(job).await;
        assert_eq!(j["status"], "success", "{j}");
        windows.push((
            j["startTime"].as_str().unwrap().to_owned(),
            j["endTime"].as_str().unwrap().to_owned(),
        ));
    }
    let (_, t) = api.get("tables/in.c-cc.t").await;
    assert_eq!(t["rowsCount"], 601);
    // Serialised: sorted by start, each job starts no earlier than the previous one ended.
    windows.sort();
    for w in windows.windows(2) {
        assert!(w[1].0 >= w[0].1, "overlapping jobs: {w:?}");
    }
    api.emu.shutdown().await;
}

#[tokio::test]
async fn jobs_of_a_fixed_duration() {
    let api = start().await;
    api.emu
        .seed_table("in.c-d.t", b"id\n1\n", &[])
        .await
        .unwrap();
    let rule = json!({"job": "*", "delayMs": 400, "times": 1});
    let r = api
        .http
        .post(format!("{}/_emulator/faults", api.emu.url()))
        .header("X-StorageApi-Token", TOKEN)
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let started = std::time::Instant::now();
    let (_, job) = api
        .post_json("tables/in.c-d.t/export-async", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        api.get(&format!("jobs/{}", job["id"])).await.1["status"],
        "processing"
    );
    assert_eq!(api.wait(&job).await["status"], "success");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Used up.
    let rules: Value = api
        .http
        .get(format!("{}/_emulator/faults", api.emu.url()))
        .header("X-StorageApi-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules, json!([]));
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

#[tokio::test]
async fn public_url_is_the_base_of_every_absolute_url() {
    let dir = tempfile::tempdir().unwrap();
    let public = "https://storage.example.test:8443";
    let emu = Emulator::start_with_options(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: dir.path().to_owned(),
            tokens: vec![TOKEN.into()],
        },
        EmulatorOptions {
            tls: None,
            public_url: Some(format!("{public}/")),
            ..EmulatorOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(emu.url(), public);
    assert!(emu.local_url().starts_with("http://127.0.0.1:"));
    let api = Api {
        emu,
        http: reqwest::Client::new(),
        _dir: Some(dir),
    };
    let (_, index) = api
        .call(api.http.get(format!(
            "{}/v2/storage?exclude=components",
            api.emu.local_url()
        )))
        .await;
    for service in index["services"].as_array().unwrap() {
        assert_eq!(service["url"], public, "{index}");
    }
    let (_, token) = api.get("tokens/verify").await;
    assert_eq!(
        token["uri"],
        format!("{public}/v2/storage/tokens/1"),
        "{token}"
    );
    let (_, bucket) = api.post_form("buckets", &[("name", "pub")]).await;
    assert_eq!(
        bucket["uri"],
        format!("{public}/v2/storage/buckets/in.c-pub")
    );
    assert_eq!(
        bucket["tables"],
        format!("{public}/v2/storage/buckets/in.c-pub/tables")
    );
    let job = api.create_table("in.c-pub", "t", "id\n1\n", "id").await;
    assert!(
        job["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{public}/v2/storage/jobs/")),
        "{job}"
    );
    assert_eq!(
        job["results"]["uri"],
        format!("{public}/v2/storage/tables/in.c-pub.t")
    );

    // File URLs are presigned-style S3 URLs at the public base.
    let (s, f) = api
        .post_form(
            "files/prepare",
            &[("name", "a.csv"), ("federationToken", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let file_url = url::Url::parse(f["url"].as_str().unwrap()).unwrap();
    assert_eq!(file_url.origin().ascii_serialization(), public);
    assert_eq!(
        file_url.path(),
        format!(
            "/kbc-sapi-files/{}",
            f["uploadParams"]["key"].as_str().unwrap()
        )
    );
    let q: std::collections::HashMap<String, String> =
        file_url.query_pairs().into_owned().collect();
    let access_key = f["uploadParams"]["credentials"]["AccessKeyId"]
        .as_str()
        .unwrap();
    assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    let credential: Vec<&str> = q["X-Amz-Credential"].split('/').collect();
    assert_eq!(credential[0], access_key);
    assert_eq!(credential[1].len(), 8, "{credential:?}");
    assert_eq!(credential[2..], ["us-east-1", "s3", "aws4_request"]);
    assert!(
        q["X-Amz-Date"].ends_with('Z') && q["X-Amz-Date"].len() == 16,
        "{q:?}"
    );
    assert_eq!(q["X-Amz-SignedHeaders"], "host");
    assert!(q["X-Amz-Expires"].parse::<u32>().unwrap() > 0);
    let signature = &q["X-Amz-Signature"];
    assert!(
        signature.len() == 64 && signature.chars().all(|c| c.is_ascii_hexdigit()),
        "{signature}"
    );
    // What a proxy at the public URL forwards reaches the object: the same path and query, here.
    let uploaded = api.upload("b.csv", b"x\n1\n".to_vec()).await;
    let (_, detail) = api.get(&format!("files/{uploaded}")).await;
    let url = detail["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{public}/kbc-sapi-files/")),
        "{url}"
    );
    let local = url.replacen(public, &api.emu.local_url(), 1);
    let r = api.http.get(local).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"x\n1\n");
    api.emu.shutdown().await;

    // Nonsense is refused at start.
    for bad in ["ftp://x", "not a url", "https://x/?a=1"] {
        let dir = tempfile::tempdir().unwrap();
        let err = Emulator::start_with_options(
            EmulatorConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                store: dir.path().to_owned(),
                tokens: vec![TOKEN.into()],
            },
            EmulatorOptions {
                tls: None,
                public_url: Some(bad.into()),
                ..EmulatorOptions::default()
            },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(format!("{err:#}").contains("public URL"), "{err:#}");
    }
}

/// A reqwest client that sends every request for `host` to the emulator, as DNS would for a virtual-hosted
/// bucket name.
fn resolving(host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host, addr)
        .build()
        .unwrap()
}

fn s3_auth(access_key: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
    )
}

#[tokio::test]
async fn virtual_hosted_s3_requests_address_the_bucket() {
    let api = start().await;
    let addr = api.emu.addr();
    let port = addr.port();
    let (_, f) = api
        .post_form(
            "files/prepare",
            &[("name", "v.csv"), ("federationToken", "1")],
        )
        .await;
    let key = f["uploadParams"]["key"].as_str().unwrap().to_owned();
    let auth = s3_auth(
        f["uploadParams"]["credentials"]["AccessKeyId"]
            .as_str()
            .unwrap(),
    );

    // PUT virtual-hosted (AWS's regional name), read back path-style.
    let aws_host = "kbc-sapi-files.s3.us-east-1.amazonaws.com";
    let aws = resolving(aws_host, addr);
    let r = aws
        .put(format!("http://{aws_host}:{port}/{key}"))
        .header("Authorization", &auth)
        .body("id\n1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = api
        .http
        .get(format!("{}/kbc-sapi-files/{key}", api.emu.local_url()))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "id\n1\n");

    // GET, HEAD and ListObjectsV2 virtual-hosted; `<bucket>.localhost` is the emulator's own host.
    for host in [aws_host, "kbc-sapi-files.localhost"] {
        let http = resolving(host, addr);
        let r = http
            .get(format!("http://{host}:{port}/{key}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
        assert_eq!(r.text().await.unwrap(), "id\n1\n");
        let r = http
            .head(format!("http://{host}:{port}/{key}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
        let prefix = &key[..key.rfind('/').unwrap() + 1];
        let r = http
            .get(format!("http://{host}:{port}/?list-type=2&prefix={prefix}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        let xml = r.text().await.unwrap();
        assert!(xml.contains(&format!("<Key>{key}</Key>")), "{host}: {xml}");
    }
    // Path-style through AWS's endpoint name still works.
    let path_host = "s3.us-east-1.amazonaws.com";
    let r = resolving(path_host, addr)
        .get(format!("http://{path_host}:{port}/kbc-sapi-files/{key}"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "id\n1\n");
    // Another bucket is another bucket, whichever the path.
    let other = "other-bucket.s3.us-east-1.amazonaws.com";
    let r = resolving(other, addr)
        .get(format!("http://{other}:{port}/kbc-sapi-files/{key}"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("NoSuchBucket"));
    // Fault rules see the path-style twin of a virtual-hosted request.
    api.emu
        .add_fault(
            serde_json::from_value(json!({"path": "/kbc-sapi-files/*", "status": 503})).unwrap(),
        )
        .unwrap();
    let r = aws
        .get(format!("http://{aws_host}:{port}/{key}"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("SlowDown"));
    api.emu.shutdown().await;
}

/// A throwaway CA and a server certificate it signed for localhost, 127.0.0.1 and
/// kbc-sapi-files.localhost, as PEM files in `dir`: (CA, certificate, key).
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kbc-runner test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "kbc-sapi-files.localhost".to_owned(),
    ])
    .unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn tls_serves_https_to_clients_that_trust_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_with_options(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: dir.path().to_owned(),
            tokens: vec![TOKEN.into()],
        },
        EmulatorOptions {
            tls: Some(TlsFiles { cert, key }),
            public_url: None,
            ..EmulatorOptions::default()
        },
    )
    .await
    .unwrap();
    let addr = emu.addr();
    assert_eq!(emu.url(), format!("https://{addr}"));
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let trusting = || reqwest::Client::builder().add_root_certificate(root.clone());
    let api = Api {
        emu,
        http: trusting().build().unwrap(),
        _dir: Some(dir),
    };
    // The whole flow over HTTPS: API, S3 upload (files/prepare), a job, an export's presigned URL.
    api.post_form("buckets", &[("name", "tls")]).await;
    let job = api.create_table("in.c-tls", "t", "id,v\n1,a\n", "id").await;
    assert_eq!(job["status"], "success", "{job}");
    assert!(job["url"].as_str().unwrap().starts_with("https://"));
    let (_, out) = api.export("in.c-tls.t", json!({})).await;
    assert_eq!(out, "\"1\",\"a\"\n");
    // Virtual-hosted over TLS too (the certificate names the bucket host).
    let (_, f) = api
        .post_form(
            "files/prepare",
            &[("name", "x.csv"), ("federationToken", "1")],
        )
        .await;
    let host = "kbc-sapi-files.localhost";
    let r = trusting()
        .resolve(host, addr)
        .build()
        .unwrap()
        .put(format!(
            "https://{host}:{}/{}",
            addr.port(),
            f["uploadParams"]["key"].as_str().unwrap()
        ))
        .header(
            "Authorization",
            s3_auth(
                f["uploadParams"]["credentials"]["AccessKeyId"]
                    .as_str()
                    .unwrap(),
            ),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A client without the CA refuses the server; plain HTTP gets no answer.
    let err = reqwest::Client::new()
        .get(format!("https://{addr}/v2/storage/tokens/verify"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v2/storage/tokens/verify"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // The server still serves after a failed handshake.
    let (s, _) = api.get("tokens/verify").await;
    assert_eq!(s, StatusCode::OK);
    api.emu.shutdown().await;
}

/// `kbc-runner emulator --tls-cert --tls-key`, and our own client (`kbc-runner tables`) trusting its CA
/// through `SSL_CERT_FILE`: import creates the table over HTTPS (API and S3), export reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_over_tls_with_our_client_trusting_a_custom_ca() {
    use std::io::{BufRead, BufReader};
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let other_ca = tempfile::tempdir().unwrap();
    let (wrong_ca, _, _) = test_ca(other_ca.path());
    let dir = tempfile::tempdir().unwrap();
    let token = "tls-cli-token-5551234";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--token", token])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--store")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // Keep draining the request log so the emulator never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        rest
    });
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("in.csv");
    std::fs::write(&source, "id,name\n1,a\n2,b\n").unwrap();
    let exported = work.path().join("out.csv");
    let tables = |args: Vec<std::ffi::OsString>, ca: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"));
        cmd.arg("tables").args(args);
        for var in [
            "KBC_BRANCHID",
            "KEBOOLA_STACK_URL",
            "KEBOOLA_TOKEN",
            "SSL_CERT_DIR",
        ] {
            cmd.env_remove(var);
        }
        for var in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"] {
            cmd.env_remove(var);
        }
        cmd.env("KBC_URL", &url)
            .env("KBC_TOKEN", token)
            .env("SSL_CERT_FILE", ca);
        cmd
    };
    let run = |mut cmd: std::process::Command| async move {
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    let out = run(tables(
        vec![
            "import".into(),
            "in.c-tls.t".into(),
            source.clone().into(),
            "--create".into(),
            "--primary-key".into(),
            "id".into(),
        ],
        &ca,
    ))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(token), "{stderr}");
    let out = run(tables(
        vec![
            "export".into(),
            "in.c-tls.t".into(),
            "-o".into(),
            exported.clone().into(),
        ],
        &ca,
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sorted_lines(&std::fs::read_to_string(&exported).unwrap()),
        sorted_lines("\"id\",\"name\"\n\"1\",\"a\"\n\"2\",\"b\"\n")
    );
    // Trusting another CA, the client refuses the server.
    let out = run(tables(vec!["list".into()], &wrong_ca)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains(token), "{stderr}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(log.contains("PUT /kbc-sapi-files/"), "{log}");
    assert!(!log.contains(token));
}

/// `run --local-stack DIR --tls-cert --tls-key`: the example job against its in-process emulator over HTTPS,
/// the run's own client trusting the CA through `SSL_CERT_FILE`.
#[test]
fn local_stack_over_tls() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(root.path());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("local-stack/tables")).unwrap();
    std::fs::copy(repo.join("config.json"), data.join("config.json")).unwrap();
    for entry in std::fs::read_dir(repo.join("local-stack/tables")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            data.join("local-stack/tables").join(entry.file_name()),
        )
        .unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args(["run", "--data-dir"])
        .arg(&data)
        .arg("--local-stack")
        .arg(root.path().join("stack"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .env_remove("KBC_TOKEN")
        .env_remove("KBC_URL")
        .env_remove("KBC_RUNID")
        .env_remove("KBC_DATADIR")
        .env_remove("KEBOOLA_TOKEN")
        .env_remove("KEBOOLA_STACK_URL")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("emulator at https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("out.c-shop.order_summary"), "{stdout}");
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

#[test]
fn binary_reports_a_taken_port_as_a_user_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kbc-runner"))
        .args(["emulator", "--listen", &addr, "--token", "t", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// Development branches through the real API's routes: create (a `devBranchCreate` job whose results are
/// the branch), list (development branches first, then the default one), detail, delete; branch storage
/// chosen by the project setting; the index `features` settable.
#[tokio::test]
async fn dev_branches_and_branch_storage() {
    use kbc_emulator::Project;
    let api = start().await;
    let (s, job) = api
        .post_json(
            "dev-branches",
            json!({"name": "feature-x", "description": "d"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["operationName"], "devBranchCreate");
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    let branch = job["results"]["id"].as_u64().unwrap();
    assert_eq!(job["results"]["isDefault"], false);
    let (s, e) = api
        .post_json("dev-branches", json!({"name": "feature-x"}))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.devBranches.alreadyExists")
        )
    );
    let (_, list) = api.get("dev-branches").await;
    let ids: Vec<(u64, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_u64().unwrap(), b["isDefault"].as_bool().unwrap()))
        .collect();
    assert_eq!(ids, vec![(branch, false), (1, true)]);
    let (s, d) = api.get(&format!("dev-branches/{branch}")).await;
    assert_eq!((s, d["name"].as_str()), (StatusCode::OK, Some("feature-x")));

    // Without branch storage (the default), a development branch has no buckets of its own.
    let (_, token) = api.get("tokens/verify").await;
    assert_eq!(token["owner"]["features"], json!([]));
    let (s, e) = api.get(&format!("branch/{branch}/buckets")).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("storage.devBranches.noBranchStorage")
        )
    );

    // With branch storage, the branch's buckets and tables are its own, under the same ids.
    api.emu
        .set_project(Project {
            branch_storage: true,
            ..Default::default()
        })
        .unwrap();
    let (_, token) = api.get("tokens/verify").await;
    assert_eq!(
        token["owner"]["features"],
        json!(["protected-default-branch"])
    );
    api.post_json("buckets", json!({"name": "main", "stage": "in"}))
        .await;
    api.create_table("in.c-main", "t", "id\n1\n", "").await;
    let (s, b) = api
        .post_json(
            &format!("branch/{branch}/buckets"),
            json!({"name": "main", "stage": "in"}),
        )
        .await;
    assert_eq!(
        (s, b["id"].as_str()),
        (StatusCode::CREATED, Some("in.c-main")),
        "{b}"
    );
    let (s, l) = api.get(&format!("branch/{branch}/tables")).await;
    assert_eq!((s, l), (StatusCode::OK, json!([])));
    let file_id = api.upload("b.csv", b"id\n2\n3\n".to_vec()).await;
    let (s, job) = api
        .post_json(
            &format!("branch/{branch}/buckets/in.c-main/tables-async"),
            json!({"name": "t", "dataFileId": file_id}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert!(
        !job.to_string().contains("@branch"),
        "internal ids never show: {job}"
    );
    let job = api.wait(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["results"]["id"], "in.c-main.t");
    assert!(!job.to_string().contains("@branch"), "{job}");
    let (_, t) = api
        .get(&format!("branch/{branch}/tables/in.c-main.t"))
        .await;
    assert_eq!(t["rowsCount"], 2, "{t}");
    let (_, t) = api.get("tables/in.c-main.t").await;
    assert_eq!(t["rowsCount"], 1, "production is untouched: {t}");
    let (_, l) = api.get("buckets").await;
    assert_eq!(
        l.as_array().unwrap().len(),
        1,
        "production lists its own buckets: {l}"
    );
    let (s, _) = api.get("tables/in.c-main@branch1.t").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Deleting the branch drops its storage; the default branch cannot be deleted.
    let (s, job) = api
        .call(api.req(Method::DELETE, &format!("dev-branches/{branch}")))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(api.wait(&job).await["status"], "success");
    let (s, _) = api
        .get(&format!("branch/{branch}/tables/in.c-main.t"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.call(api.req(Method::DELETE, "dev-branches/1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, t) = api.get("tables/in.c-main.t").await;
    assert_eq!(t["rowsCount"], 1);

    // Stack features are the index's, settable; with `disable-legacy-bucket-prefix` names are kept.
    api.emu
        .set_project(Project {
            features: vec!["disable-legacy-bucket-prefix".into()],
            ..Default::default()
        })
        .unwrap();
    let (_, index) = api.call(api.http.get(api.url(""))).await;
    assert_eq!(index["features"], json!(["disable-legacy-bucket-prefix"]));
    let (s, b) = api
        .post_json("buckets", json!({"name": "c-kept", "stage": "out"}))
        .await;
    assert_eq!(
        (s, b["id"].as_str()),
        (StatusCode::CREATED, Some("out.c-kept"))
    );
    let (s, b) = api
        .post_json("buckets", json!({"name": "plain", "stage": "out"}))
        .await;
    assert_eq!(
        (s, b["id"].as_str()),
        (StatusCode::CREATED, Some("out.plain"))
    );
    api.emu.shutdown().await;
}
