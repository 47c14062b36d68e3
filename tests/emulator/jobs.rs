//! Jobs and the store: restarts, jobs cut short, one job at a time per table, jobs of a fixed duration.

use crate::support::{TOKEN, start, start_at};
use kbc_emulator::FaultRule;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

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
