//! The API index (`GET /v2/storage`, no token needed) and the token resource (`tokens/verify`): what a
//! client reads first to learn the stack's services and features and the token's project.

use super::{ApiResult, Call, ok, php_map};
use crate::app::App;
use crate::body::{Params, parse_query};
use crate::store::REGION;
use crate::timefmt::iso;
use axum::http::Method;
use serde_json::{Value, json};

/// The `tokens/…` routes.
pub(super) fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    match (&call.method, rest) {
        (&Method::GET, ["verify"]) => Some(ok(token_json(call.app))),
        _ => None,
    }
}

/// `GET /v2/storage`: the index (`exclude=components` leaves the component list out).
pub(super) fn index(app: &App, query: Option<&str>) -> ApiResult {
    let q = Params(parse_query(query));
    let mut v = json!({
        "api": "storage",
        "documentation": "https://keboola.docs.apiary.io/",
        "version": "v2",
        // The Query Service shares the listener (`/api/v1`).
        "services": [{"id": "import", "url": app.base_url}, {"id": "storage", "url": app.base_url}, {"id": "query", "url": app.base_url}],
        "features": app.store.read().project.features,
        "urlTemplates": {},
    });
    let exclude = q.str("exclude").unwrap_or_default();
    if !exclude.contains("components") {
        v["components"] = json!([]);
    }
    ok(v)
}

fn token_json(app: &App) -> Value {
    let (rows, bytes) = {
        let meta = app.store.read();
        meta.tables.values().fold((0u64, 0u64), |(r, b), t| {
            (r + t.rows_count, b + t.data_size_bytes)
        })
    };
    let project = app.store.read().project.clone();
    let mut features = project.project_features.clone();
    if project.branch_storage && !features.iter().any(|f| f == "protected-default-branch") {
        // How the platform's job runner learns that the project has branch storage.
        features.push("protected-default-branch".into());
    }
    let bucket_permissions: serde_json::Map<String, Value> = app
        .store
        .read()
        .buckets
        .keys()
        .map(|k| (k.clone(), json!("manage")))
        .collect();
    json!({
        "id": "1",
        "created": iso(0),
        "refreshed": iso(0),
        "description": "emulator token",
        "uri": format!("{}/v2/storage/tokens/1", app.base_url),
        "isMasterToken": true,
        "canManageBuckets": true,
        "canManageTokens": true,
        "canReadAllFileUploads": true,
        "canPurgeTrash": true,
        "canManageProtectedDefaultBranch": true,
        "canCreateJobs": true,
        "expires": null,
        "isExpired": false,
        "isDisabled": false,
        "isBYODB": false,
        "dailyCapacity": 0,
        "bucketPermissions": php_map(Value::Object(bucket_permissions)),
        "creatorToken": {"id": 1, "description": "emulator"},
        "componentAccess": [],
        "admin": {"id": 1, "name": "Emulator Admin", "features": [], "isOrganizationMember": true, "role": "admin"},
        "organization": {"id": 1},
        "owner": {
            "name": "Local emulator", "id": "1", "type": "production", "region": REGION,
            "created": iso(0), "expires": null, "features": features,
            "dataSizeBytes": bytes, "rowsCount": rows, "hasSnowflake": true, "hasBigquery": false,
            "defaultBackend": "snowflake", "limits": {}, "metrics": {}, "isDisabled": false,
            "dataRetentionTimeInDays": 7, "assignedBackends": ["snowflake"], "fileStorageProvider": "aws",
        },
    })
}
