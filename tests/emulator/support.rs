//! What the emulator tests share: an emulator started in-process with a client (`Api`) and its helpers.

use kbc_emulator::Emulator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

pub(crate) const TOKEN: &str = "test-token";

pub(crate) struct Api {
    pub(crate) emu: Emulator,
    pub(crate) http: reqwest::Client,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start_at(dir.path()).await;
    api._dir = Some(dir);
    api
}

pub(crate) async fn start_at(path: &std::path::Path) -> Api {
    let emu = crate::common::stack::start_emulator(path, TOKEN)
        .await
        .unwrap();
    Api {
        emu,
        http: reqwest::Client::new(),
        _dir: None,
    }
}

impl Api {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v2/storage/{}", self.emu.local_url(), path)
    }

    pub(crate) fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-StorageApi-Token", TOKEN)
    }

    pub(crate) async fn call(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.req(Method::GET, path)).await
    }

    pub(crate) async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.req(Method::POST, path).json(&body)).await
    }

    pub(crate) async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.call(self.req(Method::POST, path).form(form)).await
    }

    /// Polls a job until it ends.
    pub(crate) async fn wait(&self, job: &Value) -> Value {
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
    pub(crate) async fn upload(&self, name: &str, bytes: Vec<u8>) -> u64 {
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

    pub(crate) async fn create_table(
        &self,
        bucket: &str,
        name: &str,
        csv: &str,
        pk: &str,
    ) -> Value {
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

    pub(crate) async fn import(&self, table: &str, csv: &str, incremental: bool) -> Value {
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
    pub(crate) async fn export(&self, table: &str, params: Value) -> (Value, String) {
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

pub(crate) fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

pub(crate) fn s3_auth(access_key: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
    )
}

impl Api {
    /// Creates a workspace (async job) and returns the workspace object.
    pub(crate) async fn create_workspace(&self, body: Value) -> Value {
        let (s, job) = self.post_json("workspaces?async=1", body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["operationName"], "workspaceCreate");
        let job = self.wait(&job).await;
        assert_eq!(job["status"], "success", "{job}");
        job["results"].clone()
    }

    /// A Query Service request (`/api/v1/{path}`).
    pub(crate) fn qs(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1/{path}", self.emu.local_url()))
            .header("X-StorageAPI-Token", TOKEN)
    }

    /// Submits statements to a workspace of the default branch; returns the query job id.
    pub(crate) async fn submit(&self, ws: u64, statements: &[&str], transactional: bool) -> String {
        let (s, r) = self
            .call(
                self.qs(Method::POST, &format!("branches/1/workspaces/{ws}/queries"))
                    .json(&json!({"statements": statements, "transactional": transactional})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert!(r["sessionId"].is_string(), "{r}");
        r["queryJobId"].as_str().expect("a query job id").to_owned()
    }

    /// Polls a query job until it is completed, failed or canceled.
    pub(crate) async fn wait_query(&self, id: &str) -> Value {
        for _ in 0..600 {
            let (s, j) = self
                .call(self.qs(Method::GET, &format!("queries/{id}")))
                .await;
            assert_eq!(s, StatusCode::OK, "{j}");
            if ["completed", "failed", "canceled"].contains(&j["status"].as_str().unwrap_or("")) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("query job {id} did not finish");
    }

    /// Runs statements to the end and checks the job completed.
    pub(crate) async fn sql(&self, ws: u64, statements: &[&str]) -> Value {
        let id = self.submit(ws, statements, false).await;
        let j = self.wait_query(&id).await;
        assert_eq!(j["status"], "completed", "{j}");
        j
    }

    /// All rows of a query (one statement), first page of up to 10000.
    pub(crate) async fn rows(&self, ws: u64, query: &str) -> Vec<Vec<Value>> {
        let j = self.sql(ws, &[query]).await;
        let (job, stmt) = (
            j["queryJobId"].as_str().unwrap(),
            j["statements"][0]["id"].as_str().unwrap(),
        );
        let (s, r) = self
            .call(self.qs(
                Method::GET,
                &format!("queries/{job}/{stmt}/results?pageSize=10000"),
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        serde_json::from_value(r["data"].clone()).unwrap()
    }

    /// `GET /_emulator/stats`.
    pub(crate) async fn stats(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/_emulator/stats", self.emu.local_url()))
            .header("X-StorageApi-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

/// Rows of strings, for comparing with query results.
pub(crate) fn text_rows(rows: &[&[&str]]) -> Vec<Vec<Value>> {
    rows.iter()
        .map(|r| r.iter().map(|v| Value::from(*v)).collect())
        .collect()
}
