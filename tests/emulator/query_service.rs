//! The Query Service (`/api/v1`): submit, status, results paging, failing statements, transactions, cancel,
//! validation and auth errors in its shape, the index's service entry, and fault rules on its paths.

use crate::support::{Api, TOKEN, start, text_rows};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn workspace(api: &Api) -> u64 {
    api.create_workspace(json!({})).await["id"]
        .as_u64()
        .unwrap()
}

async fn results(api: &Api, job: &str, stmt: &str, query: &str) -> (StatusCode, Value) {
    api.call(api.qs(
        Method::GET,
        &format!("queries/{job}/{stmt}/results?{query}"),
    ))
    .await
}

#[tokio::test]
async fn the_index_advertises_the_query_service() {
    let api = start().await;
    let (_, index) = api.get("").await;
    let services = index["services"].as_array().unwrap();
    assert!(
        services.contains(&json!({"id": "query", "url": api.emu.url()})),
        "{index}"
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn statements_run_in_order_and_results_page() {
    let api = start().await;
    let ws = workspace(&api).await;
    let id = api
        .submit(
            ws,
            &[
                "CREATE TABLE n AS SELECT range AS i, CASE WHEN range % 2 = 0 THEN NULL ELSE 'odd' END AS s FROM range(250)",
                "INSERT INTO n VALUES (1000, 'x'), (1001, 'y')",
                "SELECT i, s FROM n ORDER BY i",
            ],
            false,
        )
        .await;
    let job = api.wait_query(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["queryJobId"], id);
    assert_eq!(job["actorType"], "user");
    assert!(job["createdAt"].as_str().unwrap().ends_with('Z'));
    let st = job["statements"].as_array().unwrap();
    assert_eq!(st.len(), 3);
    assert!(st.iter().all(|s| s["status"] == "completed"), "{job}");
    assert_eq!(st[1]["rowsAffected"], 2);
    assert_eq!(st[2]["numberOfRows"], 252);
    assert!(st[2]["completedAt"].is_string() && st[2]["executedAt"].is_string());

    let select = st[2]["id"].as_str().unwrap();
    let (s, page) = results(&api, &id, select, "offset=0&pageSize=100").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["status"], "completed");
    assert_eq!(page["numberOfRows"], 252);
    assert_eq!(page["columns"][0]["name"], "i");
    assert_eq!(page["columns"][1]["type"], "text");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 100);
    assert_eq!(data[0], json!(["0", null]), "values are text, NULL is null");
    assert_eq!(data[1], json!(["1", "odd"]));
    let (_, last) = results(&api, &id, select, "offset=200&pageSize=100").await;
    let data = last["data"].as_array().unwrap();
    assert_eq!(data.len(), 52);
    assert_eq!(data[51], json!(["1001", "y"]));
    let (_, past) = results(&api, &id, select, "offset=500&pageSize=100").await;
    assert_eq!(past["data"], json!([]));
    // The default page is 500 rows.
    let (_, all) = results(&api, &id, select, "").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 252);
    // A statement without rows has an empty result with its count.
    let (_, insert) = results(&api, &id, st[1]["id"].as_str().unwrap(), "").await;
    assert_eq!(insert["data"], json!([]));
    assert_eq!(insert["rowsAffected"], 2);

    // pageSize outside 100..=10000 is refused in the Query Service's error shape.
    for bad in ["pageSize=99", "pageSize=10001", "pageSize=x"] {
        let (s, e) = results(&api, &id, select, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert_eq!(e["status"], "error");
        assert_eq!(e["error"], 400);
        assert!(
            e["exception"].is_string() && e["exceptionId"].is_string(),
            "{e}"
        );
        assert_eq!(e["context"], json!({}));
    }
    let (s, e) = results(&api, &id, "nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, _) = api.call(api.qs(Method::GET, "queries/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn a_failing_statement_stops_the_job() {
    let api = start().await;
    let ws = workspace(&api).await;
    let id = api
        .submit(
            ws,
            &[
                "CREATE TABLE a (x INT)",
                "SELECT * FROM missing_table",
                "CREATE TABLE b (x INT)",
            ],
            false,
        )
        .await;
    let job = api.wait_query(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let st = &job["statements"];
    assert_eq!(st[0]["status"], "completed");
    assert_eq!(st[1]["status"], "failed");
    let error = st[1]["error"].as_str().unwrap();
    assert!(
        error.contains("missing_table"),
        "the engine's message: {error}"
    );
    assert_eq!(st[2]["status"], "notExecuted");
    // Not transactional: the first statement stays done, the third never ran.
    assert_eq!(
        api.rows(
            ws,
            "SELECT table_name FROM information_schema.tables WHERE table_name IN ('a', 'b')"
        )
        .await,
        text_rows(&[&["a"]])
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn a_transactional_job_rolls_back_on_failure() {
    let api = start().await;
    let ws = workspace(&api).await;
    api.sql(ws, &["CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1)"])
        .await;
    let id = api
        .submit(
            ws,
            &[
                "INSERT INTO t VALUES (2)",
                "CREATE TABLE t2 AS SELECT 1 AS y",
                "SELECT 1/0::INT + nope",
            ],
            true,
        )
        .await;
    let job = api.wait_query(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        api.rows(ws, "SELECT count(*) FROM t").await,
        text_rows(&[&["1"]])
    );
    let id = api.submit(ws, &["SELECT * FROM t2"], false).await;
    assert_eq!(
        api.wait_query(&id).await["status"],
        "failed",
        "t2 was rolled back"
    );
    // A transactional job that succeeds commits.
    let id = api
        .submit(
            ws,
            &["INSERT INTO t VALUES (3)", "INSERT INTO t VALUES (4)"],
            true,
        )
        .await;
    assert_eq!(api.wait_query(&id).await["status"], "completed");
    assert_eq!(
        api.rows(ws, "SELECT count(*) FROM t").await,
        text_rows(&[&["3"]])
    );
    api.emu.shutdown().await;
}

#[tokio::test]
async fn cancel_interrupts_a_long_query() {
    let api = start().await;
    let ws = workspace(&api).await;
    let id = api
        .submit(
            ws,
            &["SELECT count(*) FROM range(100000000000)", "SELECT 1"],
            false,
        )
        .await;
    // Let it start.
    for _ in 0..200 {
        let (_, j) = api
            .call(api.qs(Method::GET, &format!("queries/{id}")))
            .await;
        if j["statements"][0]["status"] == "processing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (s, r) = api
        .call(
            api.qs(Method::POST, &format!("queries/{id}/cancel"))
                .json(&json!({"reason": "too slow"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"queryJobId": id}));
    let job = api.wait_query(&id).await;
    assert_eq!(job["status"], "canceled", "{job}");
    assert_eq!(job["cancellationReason"], "too slow");
    assert!(job["canceledAt"].is_string());
    // The statement itself stops: the workspace answers the next job promptly.
    let rows = api.rows(ws, "SELECT 42").await;
    assert_eq!(rows, text_rows(&[&["42"]]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "canceled after {:?}",
        started.elapsed()
    );
    let (_, job) = api
        .call(api.qs(Method::GET, &format!("queries/{id}")))
        .await;
    assert_eq!(job["statements"][0]["status"], "canceled", "{job}");
    assert_eq!(job["statements"][1]["status"], "notExecuted", "{job}");
    // A finished job cannot be canceled.
    let (s, e) = api
        .call(
            api.qs(Method::POST, &format!("queries/{id}/cancel"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    api.emu.shutdown().await;
}

#[tokio::test]
async fn submit_validates_its_request() {
    let api = start().await;
    let ws = workspace(&api).await;
    let submit = |branch: &str, ws: u64, body: Value| {
        api.call(
            api.qs(
                Method::POST,
                &format!("branches/{branch}/workspaces/{ws}/queries"),
            )
            .json(&body),
        )
    };
    let (s, e) = submit("1", ws, json!({"statements": [], "transactional": false})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["exception"], "Statements must not be empty");
    let (s, _) = submit("1", ws, json!({"statements": [""], "transactional": false})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = submit("default", ws, json!({"statements": ["SELECT 1"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = submit("1", 999_999, json!({"statements": ["SELECT 1"]})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"], 404);
    // A bad token is 401 in the Query Service's shape.
    let (s, e) = api
        .call(
            api.http
                .get(format!("{}/api/v1/queries/x", api.emu.local_url()))
                .header("X-StorageAPI-Token", format!("{TOKEN}-wrong")),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["status"], "error");
    assert!(e["exception"].is_string(), "{e}");
    // History lists the workspace's statements.
    api.sql(ws, &["SELECT 1"]).await;
    let (s, h) = api
        .call(api.qs(Method::GET, &format!("branches/1/workspaces/{ws}/queries")))
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["statements"][0]["query"], "SELECT 1");
    assert!(h["statements"][0]["queryJobId"].is_string());
    api.emu.shutdown().await;
}

#[tokio::test]
async fn fault_rules_apply_to_query_service_paths() {
    let api = start().await;
    let ws = workspace(&api).await;
    let r = api
        .http
        .post(format!("{}/_emulator/faults", api.emu.local_url()))
        .header("X-StorageApi-Token", TOKEN)
        .json(&json!({"method": "POST", "path": "/api/v1/branches/*/queries", "status": 403,
                      "code": "workspace.credentials", "message": "Failed to get workspace credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, e) = api
        .call(
            api.qs(Method::POST, &format!("branches/1/workspaces/{ws}/queries"))
                .json(&json!({"statements": ["SELECT 1"], "transactional": false})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["exception"], "Failed to get workspace credentials");
    assert_eq!(e["error"], 403);
    assert_eq!(
        api.stats().await["queryJobs"],
        0,
        "the faulted submit ran nothing"
    );
    // Once only: the next submit runs.
    api.sql(ws, &["SELECT 1"]).await;
    assert_eq!(api.stats().await["queryJobs"], 1);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn jobs_on_one_workspace_queue_and_a_queued_job_can_be_canceled() {
    let api = start().await;
    let ws = workspace(&api).await;
    let long = api
        .submit(ws, &["SELECT count(*) FROM range(100000000000)"], false)
        .await;
    let queued = api
        .submit(ws, &["CREATE TABLE never AS SELECT 1 AS x"], false)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, j) = api
        .call(api.qs(Method::GET, &format!("queries/{queued}")))
        .await;
    assert_eq!(j["status"], "enqueued", "waits for the running job: {j}");
    let (s, _) = api
        .call(
            api.qs(Method::POST, &format!("queries/{queued}/cancel"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .call(
            api.qs(Method::POST, &format!("queries/{long}/cancel"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api.wait_query(&long).await["status"], "canceled");
    let j = api.wait_query(&queued).await;
    assert_eq!(j["status"], "canceled");
    assert_eq!(j["cancellationReason"], "Canceled by user");
    // Wait until the runner has let go of it, then check it ran nothing.
    for _ in 0..100 {
        let (_, j) = api
            .call(api.qs(Method::GET, &format!("queries/{queued}")))
            .await;
        if j["statements"][0]["status"] == "notExecuted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, j) = api
        .call(api.qs(Method::GET, &format!("queries/{queued}")))
        .await;
    assert_eq!(j["statements"][0]["status"], "notExecuted", "{j}");
    let id = api.submit(ws, &["SELECT * FROM never"], false).await;
    assert_eq!(
        api.wait_query(&id).await["status"],
        "failed",
        "the canceled job never ran"
    );
    api.emu.shutdown().await;
}
