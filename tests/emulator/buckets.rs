//! Buckets: create, detail, update and delete, also under `branch/default/` paths.

use crate::support::start;
use reqwest::{Method, StatusCode};
use serde_json::json;

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
