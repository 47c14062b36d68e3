//! Development branches (`dev-branches`: list, detail, create, delete as jobs) and branch storage.
//!
//! The default branch is implicit (id 1, also reachable as `default`). A project chooses in its settings
//! ([`Project::branch_storage`], in `meta.json`) whether development branches have their own storage:
//!
//! - with it, `branch/{id}/buckets|tables/...` of a development branch work on the branch's own buckets
//!   and tables, which start empty. They live in the same maps as production's, under ids marked with
//!   `@branch{id}` on the bucket name (a character bucket names cannot have, so they never collide); the
//!   marker is added to ids in the request path and removed from every JSON answer, so clients only ever
//!   see the plain ids;
//! - without it, branch-scoped table and bucket requests of a development branch are refused (the real
//!   API's answer is not documented; a client that follows the platform never sends them).
//!
//! Files are shared by all branches here (file ids are global), which is all a table transfer needs.

use super::{ApiResult, Call, DEFAULT_BRANCH_ID, accepted, ok};
use crate::app::App;
use crate::body::Params;
use crate::error::ApiError;
use crate::faults::JobFault;
use crate::jobs::{self, JobResult};
use crate::store::DevBranch;
use crate::timefmt::{iso, now_secs};
use axum::http::{HeaderMap, Method};
use serde_json::{Value, json};
use std::sync::Arc;

/// The `dev-branches/…` routes.
pub(super) fn route(call: &Call<'_>, rest: &[&str]) -> Option<ApiResult> {
    let app = call.app;
    Some(match (&call.method, rest) {
        (&Method::GET, []) => list_branches(app),
        (&Method::POST, []) => create_branch(app, &call.params),
        (&Method::GET, [id]) => get_branch(app, id),
        (&Method::DELETE, [id]) => delete_branch(app, id),
        _ => return None,
    })
}

/// The marker of a branch's ids: `in.c-main` in branch 5 is `in.c-main@branch5` inside the store.
pub(super) const MARK: &str = "@branch";

/// A bucket id as stored: marked for a development branch with branch storage.
pub(super) fn mark_bucket(bucket_id: &str, branch: Option<u64>) -> String {
    match branch {
        Some(b) => format!("{bucket_id}{MARK}{b}"),
        None => bucket_id.to_owned(),
    }
}

/// A table id as stored (`in.c-main.t` → `in.c-main@branch5.t`).
pub(super) fn mark_table(table_id: &str, branch: Option<u64>) -> String {
    match (branch, table_id.rsplit_once('.')) {
        (Some(_), Some((bucket, name))) => format!("{}.{name}", mark_bucket(bucket, branch)),
        _ => table_id.to_owned(),
    }
}

/// Whether a stored bucket or table id belongs to the scope (`None` = production).
pub(super) fn in_scope(id: &str, branch: Option<u64>) -> bool {
    match branch {
        None => !id.contains(MARK),
        // The marker ends the bucket name: `in.c-main@branch5[.table]`.
        Some(b) => id
            .split('.')
            .nth(1)
            .and_then(|name| name.rsplit_once(MARK))
            .is_some_and(|(_, digits)| digits.parse::<u64>() == Ok(b)),
    }
}

/// Removes every branch marker from a text (a JSON answer).
pub(super) fn unmark(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(MARK) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str(MARK);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Removes a `branch/{id}/` prefix from the request's path segments and returns the development branch
/// with its own storage that the request works in (None: production, or a branch route that is not about
/// buckets and tables), and the numeric id of the branch the request addresses (1: the default branch).
pub(super) fn strip_branch_prefix(
    app: &App,
    headers: &HeaderMap,
    segs: &mut Vec<String>,
) -> Result<(Option<u64>, u64), ApiError> {
    if segs.first().map(String::as_str) != Some("branch") || segs.len() < 2 {
        return Ok((None, DEFAULT_BRANCH_ID));
    }
    // The default branch's index needs no token, as production's does not; any other branch id is only
    // looked up for a caller with a token.
    if segs[1] != "default" && segs[1] != DEFAULT_BRANCH_ID.to_string() {
        app.authenticate(headers)?;
    }
    let mut branch = None;
    let mut addressed = DEFAULT_BRANCH_ID;
    if let Scope::Dev(id) = scope_of(app, &segs[1])? {
        addressed = id;
        let storage_route = matches!(segs.get(2).map(String::as_str), Some("buckets" | "tables"));
        if storage_route {
            if !has_branch_storage(app) {
                return Err(no_branch_storage(id));
            }
            branch = Some(id);
        }
    }
    segs.drain(..2);
    Ok((branch, addressed))
}

/// The storage scope of a branch's workspace: its own buckets and tables with branch storage, production's
/// otherwise (as the branch's table requests are).
pub(crate) fn storage_scope(app: &App, branch_id: u64) -> Option<u64> {
    (branch_id != DEFAULT_BRANCH_ID && has_branch_storage(app)).then_some(branch_id)
}

/// Whether `id` is the numeric id of a branch of the project (the Query Service needs real ids).
pub(crate) fn branch_exists(app: &App, id: u64) -> bool {
    id == DEFAULT_BRANCH_ID || app.store.read().dev_branches.contains_key(&id)
}

/// Marks the bucket or table id of a branch-scoped request's path (`buckets/{id}`, `tables/{id}`) as stored.
pub(super) fn mark_ids(segs: &mut [String], branch: Option<u64>) {
    if branch.is_some() && segs.len() >= 2 {
        segs[1] = match segs[0].as_str() {
            "buckets" => mark_bucket(&segs[1], branch),
            _ => mark_table(&segs[1], branch),
        };
    }
}

/// The branch a `branch/{id}/` request addresses.
enum Scope {
    /// Production (no prefix, `default`, or the default branch's id).
    Production,
    /// A development branch.
    Dev(u64),
}

/// Finds the branch of a `branch/{id}` prefix; an unknown branch is 404.
fn scope_of(app: &App, branch: &str) -> Result<Scope, ApiError> {
    if branch == "default" || branch == DEFAULT_BRANCH_ID.to_string() {
        return Ok(Scope::Production);
    }
    let known = branch
        .parse::<u64>()
        .ok()
        .filter(|id| app.store.read().dev_branches.contains_key(id));
    known.map(Scope::Dev).ok_or_else(|| {
        ApiError::not_found(
            "storage.devBranches.notFound",
            format!("Branch \"{branch}\" not found"),
        )
    })
}

/// Whether development branches have their own storage in this project.
fn has_branch_storage(app: &App) -> bool {
    app.store.read().project.branch_storage
}

/// The refusal of a branch-scoped storage request in a project without branch storage.
fn no_branch_storage(branch: u64) -> ApiError {
    ApiError::bad_request(
        "storage.devBranches.noBranchStorage",
        format!(
            "The project has no branch storage, so branch {branch} has no buckets or tables of its own \
             (the emulator refuses this; use production paths with the branch's c-{branch}-… buckets)."
        ),
    )
}

fn branch_json(b: &DevBranch) -> Value {
    json!({"id": b.id, "name": b.name, "description": b.description, "created": iso(b.created),
           "isDefault": false, "creatorToken": {"id": 1, "description": "emulator token"}})
}

fn default_branch_json() -> Value {
    json!({"id": DEFAULT_BRANCH_ID, "name": "Main", "description": "", "created": iso(0),
           "isDefault": true, "creatorToken": {"id": 1, "description": "emulator token"}})
}

/// `GET dev-branches`: the development branches, then the default branch (the blueprint's order).
fn list_branches(app: &App) -> ApiResult {
    let meta = app.store.read();
    let mut all: Vec<Value> = meta.dev_branches.values().map(branch_json).collect();
    all.push(default_branch_json());
    ok(Value::Array(all))
}

/// `GET dev-branches/{id}`.
fn get_branch(app: &App, id: &str) -> ApiResult {
    match scope_of(app, id)? {
        Scope::Production => ok(default_branch_json()),
        Scope::Dev(b) => {
            let branch = app.store.read().dev_branches.get(&b).map(branch_json);
            // Deleted since `scope_of` looked: the same 404 as an unknown id.
            ok(branch.ok_or_else(|| {
                ApiError::not_found(
                    "storage.devBranches.notFound",
                    format!("Branch \"{id}\" not found"),
                )
            })?)
        }
    }
}

/// `POST dev-branches {name, description}`: a `devBranchCreate` job whose results are the branch.
fn create_branch(app: &Arc<App>, params: &Params) -> ApiResult {
    let name = params.nonempty("name").ok_or_else(|| {
        ApiError::bad_request(
            "storage.devBranches.validation",
            "Parameter \"name\" is required.",
        )
    })?;
    let description = params.str("description").unwrap_or_default();
    {
        let meta = app.store.read();
        if name == "Main" || meta.dev_branches.values().any(|b| b.name == name) {
            return Err(ApiError::bad_request(
                "storage.devBranches.alreadyExists",
                format!("There already is a branch with name \"{name}\"."),
            ));
        }
    }
    let job = jobs::create(
        app,
        "devBranchCreate",
        None,
        json!({"values": {"name": name, "description": description}}),
    )?;
    let work = move |app: &App, _: Option<JobFault>| -> JobResult {
        let branch = app.store.update(|meta| {
            let id = meta.next_id();
            let branch = DevBranch {
                id,
                name,
                description,
                created: now_secs(),
            };
            meta.dev_branches.insert(id, branch.clone());
            branch
        })?;
        Ok(branch_json(&branch))
    };
    jobs::spawn(app, &job, None, work);
    accepted(&job)
}

/// `DELETE dev-branches/{id}`: a `devBranchDelete` job; the branch's own buckets and tables go with it.
fn delete_branch(app: &Arc<App>, id: &str) -> ApiResult {
    let Scope::Dev(branch) = scope_of(app, id)? else {
        return Err(ApiError::bad_request(
            "storage.devBranches.cannotDeleteDefaultBranch",
            "The default branch cannot be deleted.",
        ));
    };
    let job = jobs::create(app, "devBranchDelete", None, json!({"branchId": branch}))?;
    let work = move |app: &App, _: Option<JobFault>| -> JobResult {
        let gone: Vec<String> = app.store.update(|meta| {
            meta.dev_branches.remove(&branch);
            let scope = Some(branch);
            meta.buckets.retain(|id, _| !in_scope(id, scope));
            let tables: Vec<String> = meta
                .tables
                .keys()
                .filter(|id| in_scope(id, scope))
                .cloned()
                .collect();
            for t in &tables {
                meta.tables.remove(t);
            }
            tables
        })?;
        for t in gone {
            let _ = std::fs::remove_dir_all(app.store.table_dir(&t));
        }
        Ok(Value::Null)
    };
    jobs::spawn(app, &job, None, work);
    accepted(&job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_marked_and_unmarked() {
        assert_eq!(mark_table("in.c-main.t", Some(5)), "in.c-main@branch5.t");
        assert_eq!(mark_bucket("in.c-main", Some(5)), "in.c-main@branch5");
        assert_eq!(mark_table("in.c-main.t", None), "in.c-main.t");
        assert!(in_scope("in.c-main@branch5.t", Some(5)));
        assert!(!in_scope("in.c-main@branch5.t", Some(55)));
        assert!(!in_scope("in.c-main@branch5.t", None));
        assert!(in_scope("in.c-main.t", None));
        assert_eq!(
            unmark(
                r#"{"id":"in.c-main@branch5.t","uri":"/tables/in.c-main@branch5.t","x":"a@branch"}"#
            ),
            r#"{"id":"in.c-main.t","uri":"/tables/in.c-main.t","x":"a@branch"}"#
        );
    }
}
