//! How the emulator is reached: HTTPS with a custom CA (in-process, the binary, a local stack) and the public URL.

use crate::support::{Api, TOKEN, s3_auth, sorted_lines};
use kbc_emulator::{Emulator, EmulatorConfig, EmulatorOptions, TlsFiles};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

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

/// A throwaway CA and a server certificate it signed for localhost, 127.0.0.1 and
/// kbc-sapi-files.localhost, as PEM files in `dir`: (CA, certificate, key).
#[tokio::test]
async fn tls_serves_https_to_clients_that_trust_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::common::tls::test_ca(certs.path());
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
    let (ca, cert, key) = crate::common::tls::test_ca(certs.path());
    let other_ca = tempfile::tempdir().unwrap();
    let (wrong_ca, _, _) = crate::common::tls::test_ca(other_ca.path());
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
    let (ca, cert, key) = crate::common::tls::test_ca(root.path());
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
