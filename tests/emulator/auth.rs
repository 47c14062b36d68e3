//! Authentication and error shapes: the real API's 401s, and actionable answers to calls clients get wrong.

use crate::support::start;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
