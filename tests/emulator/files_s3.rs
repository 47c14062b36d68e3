//! Files and the S3 storage: files/prepare and upload, credentials, listings, multipart retries, virtual-hosted buckets.

use crate::support::{s3_auth, start};
use kbc_emulator::FaultRule;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Read;

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

/// A reqwest client that sends every request for `host` to the emulator, as DNS would for a virtual-hosted
/// bucket name.
fn resolving(host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host, addr)
        .build()
        .unwrap()
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
