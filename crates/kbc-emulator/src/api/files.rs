//! The Files API: `files/prepare` with S3 upload parameters, list, detail (with federated credentials),
//! delete, tags, refresh.

use super::{ApiResult, Call, json_response, ok};
use crate::app::App;
use crate::body::Params;
use crate::error::ApiError;
use crate::store::{FILES_BUCKET, FileRecord, Meta, REGION, object_id};
use crate::timefmt::{iso, iso_colon, now_secs};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The `files/…` routes.
pub(super) fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    let (app, params) = (call.app, &call.params);
    Some(match (&call.method, rest) {
        (&Method::POST, ["prepare"]) => prepare_file(app, params),
        (&Method::GET, []) => list_files(app, params),
        (&Method::POST, []) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "notAllowed",
            "POST files does not exist: call POST files/prepare, upload to S3 with the returned uploadParams, then use the file id.",
        )),
        (&Method::GET, [id]) => get_file(app, id, params),
        (&Method::DELETE, [id]) => delete_file(app, id),
        (&Method::POST, [id, "tags"]) => add_tag(app, id, params),
        (&Method::DELETE, [id, "tags", tag]) => {
            edit_file(app, id, |f| f.tags.retain(|t| t.as_str() != *tag))
        }
        (&Method::PUT | &Method::POST, [id, "refresh"]) => refresh(app, id),
        _ => return None,
    })
}

/// `GET files/{id}` (`federationToken=1` adds S3 credentials, fresh ones when the file's have expired).
fn get_file(app: &App, id: &str, params: &Params) -> ApiResult {
    let fed = params.bool("federationToken", false)?;
    let f = if fed {
        fresh_credentials(app, id)?
    } else {
        find_file(app, id)?
    };
    ok(file_json(app, &f, fed, false))
}

/// `POST files/{id}/tags {tag}`.
fn add_tag(app: &App, id: &str, params: &Params) -> ApiResult {
    let tag = params.nonempty("tag").ok_or_else(|| {
        ApiError::bad_request("storage.files.validation", "Parameter \"tag\" is required")
    })?;
    edit_file(app, id, |f| {
        if !f.tags.contains(&tag) {
            f.tags.push(tag.clone());
        }
    })
}

/// `PUT|POST files/{id}/refresh`: fresh credentials and upload parameters.
fn refresh(app: &App, id: &str) -> ApiResult {
    let f = fresh_credentials(app, id)?;
    ok(file_json(app, &f, true, true))
}

/// A presigned-style URL for an object at the emulator's (public) base URL, shaped like a real S3 presigned
/// GET: `X-Amz-Algorithm`, `-Credential` (the file's access key, today, the region), `-Date`, `-Expires`,
/// `-SignedHeaders` and `-Signature`. Our S3 front authorises it by the access key alone; the signature is
/// not checked.
fn object_url(app: &App, key: &str, access_key_id: &str) -> String {
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

fn credentials_json(meta: &Meta, access_key_id: &str) -> Value {
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

fn file_json(app: &App, f: &FileRecord, federation: bool, upload: bool) -> Value {
    let meta = app.store.read();
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
            meta.objects.get(&object_id(FILES_BUCKET, &f.key)).map_or(f.size_bytes, |o| o.size)
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

fn prepare_file(app: &App, params: &Params) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.files.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let is_sliced = params.bool("isSliced", false)?;
    let is_encrypted = params.bool("isEncrypted", true)?;
    let is_public = params.bool("isPublic", false)?;
    let is_permanent = params.bool("isPermanent", false)?;
    let size_bytes = params.int("sizeBytes")?.unwrap_or(0).max(0) as u64;
    let f = app.store.update(|meta| {
        let id = meta.next_id();
        let access_key_id = meta.issue_access_key();
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
        let f = FileRecord {
            id,
            name: name.clone(),
            key: format!("exp-15/1/files/{day}/{id}.{safe}"),
            is_sliced,
            is_encrypted,
            is_public,
            is_permanent,
            size_bytes,
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
    })?;
    Ok(json_response(
        StatusCode::CREATED,
        file_json(app, &f, false, true),
    ))
}

/// The file, with a newly issued access key when its key has expired (as asking Storage again for federated
/// credentials gives fresh ones).
fn fresh_credentials(app: &App, id: &str) -> Result<FileRecord, ApiError> {
    let f = find_file(app, id)?;
    let expired = app
        .store
        .read()
        .access_keys
        .get(&f.access_key_id)
        .is_none_or(|k| k.expiration <= now_secs());
    if !expired {
        return Ok(f);
    }
    app.store.try_update(|meta| {
        if !meta.files.contains_key(&f.id) {
            return Err(ApiError::not_found(
                "storage.files.notFound",
                format!("File {id} not found"),
            ));
        }
        let key = meta.issue_access_key();
        let file = meta.files.entry(f.id).or_insert(f);
        file.access_key_id = key;
        Ok(file.clone())
    })
}

fn find_file(app: &App, id: &str) -> Result<FileRecord, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| app.store.read().files.get(&id).cloned())
        .ok_or_else(|| {
            ApiError::not_found("storage.files.notFound", format!("File {id} not found"))
        })
}

fn list_files(app: &App, params: &Params) -> ApiResult {
    let limit = params.int("limit")?.unwrap_or(100).clamp(0, 1000) as usize;
    let offset = params.int("offset")?.unwrap_or(0).max(0) as usize;
    let tags = params.array("tags");
    let since_id = params.int("sinceId")?;
    let max_id = params.int("maxId")?;
    let files: Vec<FileRecord> = {
        let meta = app.store.read();
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

fn delete_file(app: &App, id: &str) -> ApiResult {
    let f = find_file(app, id)?;
    let blobs: Vec<String> = app.store.update(|meta| {
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
    })?;
    app.store.remove_blobs(blobs);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn edit_file(app: &App, id: &str, f: impl FnOnce(&mut FileRecord)) -> ApiResult {
    let file = find_file(app, id)?;
    app.store.update(|meta| {
        if let Some(m) = meta.files.get_mut(&file.id) {
            f(m);
        }
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
