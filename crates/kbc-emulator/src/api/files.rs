//! The Files API: `files/prepare` with S3 upload parameters, list, detail (with federated credentials),
//! delete, tags, refresh.

use super::*;

/// A presigned-style URL for an object at the emulator's (public) base URL, shaped like a real S3 presigned
/// GET: `X-Amz-Algorithm`, `-Credential` (the file's access key, today, the region), `-Date`, `-Expires`,
/// `-SignedHeaders` and `-Signature`. Our S3 front authorises it by the access key alone; the signature is
/// not checked.
pub(super) fn object_url(app: &App, key: &str, access_key_id: &str) -> String {
    use md5::{Digest, Md5};
    // SigV4's URI encoding: everything but the unreserved characters.
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string();
    let path: String = key.split('/').map(enc).collect::<Vec<_>>().join("/");
    let now = chrono::Utc::now();
    // 64 hex digits like a SigV4 signature, stable for one key and access key.
    let signature: String = ["emulator-a", "emulator-b"]
        .iter()
        .flat_map(|salt| Md5::digest(format!("{salt}\n{access_key_id}\n{key}")).to_vec())
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}/{FILES_BUCKET}/{path}?X-Amz-Content-Sha256=UNSIGNED-PAYLOAD&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={}&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature={signature}",
        app.base_url,
        enc(&format!(
            "{access_key_id}/{}/{REGION}/s3/aws4_request",
            now.format("%Y%m%d")
        )),
        now.format("%Y%m%dT%H%M%SZ"),
    )
}

pub(super) fn credentials_json(meta: &Meta, access_key_id: &str) -> Value {
    match meta.access_keys.get(access_key_id) {
        Some(k) => json!({
            "AccessKeyId": access_key_id,
            "SecretAccessKey": k.secret,
            "SessionToken": k.session_token,
            "Expiration": iso_colon(k.expiration),
        }),
        None => Value::Null,
    }
}

pub(super) fn file_json(app: &App, f: &FileMeta, federation: bool, upload: bool) -> Value {
    let meta = app.store.lock();
    let url_key = if f.is_sliced {
        format!("{}manifest", f.key)
    } else {
        f.key.clone()
    };
    let mut v = json!({
        "id": f.id,
        "created": iso(f.created),
        "isPublic": f.is_public,
        "isSliced": f.is_sliced,
        "isEncrypted": f.is_encrypted,
        "name": f.name,
        "fileType": if f.name.contains(".csv") { "csv" } else { "file" },
        "url": object_url(app, &url_key, &f.access_key_id),
        "provider": "aws",
        "region": REGION,
        // A plain file's size is what was uploaded (clients may send no or a wrong sizeBytes to prepare).
        "sizeBytes": if f.is_sliced { f.size_bytes } else {
            meta.objects.get(&crate::store::object_id(FILES_BUCKET, &f.key)).map_or(f.size_bytes, |o| o.size)
        },
        "tags": f.tags,
        "maxAgeDays": if f.is_permanent { Value::Null } else { json!(15) },
        "runId": f.run_id,
        "runIds": f.run_id.iter().collect::<Vec<_>>(),
        "creatorToken": {"id": 1, "description": "emulator token"},
        "contentType": f.content_type,
    });
    if federation {
        v["s3Path"] = json!({"bucket": FILES_BUCKET, "key": f.key});
        v["credentials"] = credentials_json(&meta, &f.access_key_id);
    }
    if upload {
        let mut params = json!({
            "key": f.key,
            "bucket": FILES_BUCKET,
            "acl": "private",
            "credentials": credentials_json(&meta, &f.access_key_id),
        });
        if f.is_encrypted {
            params["x-amz-server-side-encryption"] = json!("AES256");
        }
        v["uploadParams"] = params;
    }
    v
}

pub(super) fn prepare_file(app: &App, params: &Params) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.files.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let is_sliced = params.bool("isSliced", false)?;
    let f = {
        let mut meta = app.store.lock();
        let id = meta.next_id();
        let access_key_id = Store::issue_access_key(&mut meta);
        let now = now_secs();
        let day = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .format("%Y/%m/%d")
            .to_string();
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let f = FileMeta {
            id,
            name: name.clone(),
            key: format!("exp-15/1/files/{day}/{id}.{safe}"),
            is_sliced,
            is_encrypted: params.bool("isEncrypted", true)?,
            is_public: params.bool("isPublic", false)?,
            is_permanent: params.bool("isPermanent", false)?,
            size_bytes: params.int("sizeBytes")?.unwrap_or(0).max(0) as u64,
            tags: params.array("tags"),
            created: now,
            run_id: None,
            access_key_id,
            content_type: params
                .nonempty("contentType")
                .unwrap_or_else(|| "application/octet-stream".into()),
        };
        meta.files.insert(id, f.clone());
        f
    };
    persist(app)?;
    Ok(json_response(
        StatusCode::CREATED,
        file_json(app, &f, false, true),
    ))
}

/// The file, with a newly issued access key when its key has expired (as asking Storage again for federated
/// credentials gives fresh ones).
pub(super) fn fresh_credentials(app: &App, id: &str) -> Result<FileMeta, ApiError> {
    let f = find_file(app, id)?;
    let renewed = {
        let mut meta = app.store.lock();
        let expired = meta
            .access_keys
            .get(&f.access_key_id)
            .is_none_or(|k| k.expiration <= now_secs());
        if !expired {
            return Ok(f);
        }
        let key = Store::issue_access_key(&mut meta);
        let file = meta.files.get_mut(&f.id).ok_or_else(|| {
            ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
        })?;
        file.access_key_id = key;
        file.clone()
    };
    persist(app)?;
    Ok(renewed)
}

pub(super) fn find_file(app: &App, id: &str) -> Result<FileMeta, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| app.store.lock().files.get(&id).cloned())
        .ok_or_else(|| {
            ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
        })
}

pub(super) fn list_files(app: &App, params: &Params) -> ApiResult {
    let limit = params.int("limit")?.unwrap_or(100).clamp(0, 1000) as usize;
    let offset = params.int("offset")?.unwrap_or(0).max(0) as usize;
    let tags = params.array("tags");
    let since_id = params.int("sinceId")?;
    let max_id = params.int("maxId")?;
    let files: Vec<FileMeta> = {
        let meta = app.store.lock();
        meta.files
            .values()
            .rev()
            .filter(|f| tags.iter().all(|t| f.tags.contains(t)))
            .filter(|f| since_id.is_none_or(|s| f.id as i64 > s))
            .filter(|f| max_id.is_none_or(|m| f.id as i64 <= m))
            .skip(offset)
            .take(limit)
            .cloned()
            .collect()
    };
    ok(Value::Array(
        files
            .iter()
            .map(|f| file_json(app, f, false, false))
            .collect(),
    ))
}

pub(super) fn delete_file(app: &App, id: &str) -> ApiResult {
    let f = find_file(app, id)?;
    let blobs: Vec<String> = {
        let mut meta = app.store.lock();
        meta.files.remove(&f.id);
        let prefix = format!("{FILES_BUCKET}/{}", f.key);
        let keys: Vec<String> = meta
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| meta.objects.remove(k))
            .map(|o| o.blob)
            .collect()
    };
    persist(app)?;
    for b in blobs {
        let _ = std::fs::remove_file(app.store.blob_path(&b));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn edit_file(app: &App, id: &str, f: impl FnOnce(&mut FileMeta)) -> ApiResult {
    let file = find_file(app, id)?;
    {
        let mut meta = app.store.lock();
        if let Some(m) = meta.files.get_mut(&file.id) {
            f(m);
        }
    }
    persist(app)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
