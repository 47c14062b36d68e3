//! The control API (`/_emulator`): seeding, dumping, fault rules; and seeding a folder.

use crate::support::{TOKEN, start};
use kbc_emulator::FaultRule;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

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
