//! Development branches and branch storage.

use crate::support::start;
use reqwest::{Method, StatusCode};
use serde_json::json;

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
