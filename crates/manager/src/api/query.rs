//! The query strings of the list routes, from one table ([`LISTS`]) that both the handlers
//! read them by and the OpenAPI document describes them from. Every parameter is optional
//! and given at most once; a parameter the route does not take, a value that does not parse,
//! is not finite, is out of range or is not one of its set is refused with 400 naming the
//! parameter and what it takes.

use super::{ApiError, DEFAULT_LIMIT};
use crate::store::{JournalQuery, MigrationQuery, MoveQuery, PlanQuery, MAX_READ};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use drover_api::names::VM_NAME_SHAPE;
use drover_core::control::{JournalEntry, MoveState, PlanState};
use serde_json::{json, Value};

/// What a parameter takes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any text (an id; matched exactly).
    Text,
    /// A VM name (drover-api's shape).
    VmName,
    /// One of these words.
    OneOf(fn() -> Vec<&'static str>),
    /// A finite time on the manager's clock, s.
    Seconds,
    /// A whole number from 0 (a journal sequence number).
    Sequence,
    /// `true` or `false`.
    Flag,
    /// Rows to answer: 1 to [`MAX_READ`], default [`DEFAULT_LIMIT`].
    Limit,
}

/// One query parameter of a list route.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

const fn p(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        description,
    }
}

fn plan_states() -> Vec<&'static str> {
    PlanState::ALL.iter().map(|s| s.name()).collect()
}

fn move_states() -> Vec<&'static str> {
    MoveState::NAMES.to_vec()
}

fn subjects() -> Vec<&'static str> {
    JournalEntry::SUBJECTS.to_vec()
}

const LIMIT: Param = p("limit", Kind::Limit, "rows to answer");

/// Every list route's path and its query parameters.
pub const LISTS: &[(&str, &[Param])] = &[
    (
        "/v1/plans",
        &[
            p(
                "state",
                Kind::OneOf(plan_states),
                "only plans in this state",
            ),
            p(
                "since_s",
                Kind::Seconds,
                "only plans made at or after this time, s",
            ),
            LIMIT,
        ],
    ),
    (
        "/v1/moves",
        &[
            p("plan_id", Kind::Text, "only this plan's moves"),
            p("vm", Kind::VmName, "only this VM's moves"),
            p(
                "state",
                Kind::OneOf(move_states),
                "only moves in this state",
            ),
            LIMIT,
        ],
    ),
    (
        "/v1/migrations",
        &[p("vm", Kind::VmName, "only this VM's migrations"), LIMIT],
    ),
    (
        "/v1/events",
        &[
            p("subject", Kind::OneOf(subjects), "only lines about this"),
            p(
                "id",
                Kind::Text,
                "only lines about this plan, move, host or settings version",
            ),
            p("since_s", Kind::Seconds, "lines at or after this time, s"),
            p("until_s", Kind::Seconds, "lines before this time, s"),
            p(
                "after_seq",
                Kind::Sequence,
                "lines after this one (paging forward)",
            ),
            p(
                "before_seq",
                Kind::Sequence,
                "lines before this one (paging backward)",
            ),
            p(
                "newest_first",
                Kind::Flag,
                "newest lines first (default false)",
            ),
            LIMIT,
        ],
    ),
];

/// The parameters of the list at `path` (none for any other route).
pub fn params_of(path: &str) -> &'static [Param] {
    LISTS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&[], |(_, params)| params)
}

/// A parameter as an OpenAPI parameter object.
pub fn openapi(param: &Param) -> Value {
    let schema = match param.kind {
        Kind::Text => json!({"type": "string", "minLength": 1}),
        Kind::VmName => json!({"type": "string", "minLength": 1, "maxLength": 64}),
        Kind::OneOf(set) => json!({"type": "string", "enum": set()}),
        Kind::Seconds => json!({"type": "number"}),
        Kind::Sequence => json!({"type": "integer", "minimum": 0}),
        Kind::Flag => json!({"type": "boolean", "default": false}),
        Kind::Limit => {
            json!({"type": "integer", "minimum": 1, "maximum": MAX_READ, "default": DEFAULT_LIMIT})
        }
    };
    json!({"name": param.name, "in": "query", "required": false,
           "description": param.description, "schema": schema})
}

/// A list route's query string, checked against its parameters.
pub struct Params {
    path: &'static str,
    pairs: Vec<(String, String)>,
}

type Raw = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn bad(name: &str, value: &str, expected: &str) -> ApiError {
    let value: String = value.chars().take(64).collect();
    ApiError::BadRequest(format!("{name} '{value}': expected {expected}"))
}

impl Params {
    /// The pairs of `raw`, each a parameter of the list at `path`, none twice.
    ///
    /// # Errors
    /// 400 for a query that does not parse, an unknown or a repeated parameter.
    pub fn read(raw: Raw, path: &'static str) -> Result<Self, ApiError> {
        let Query(pairs) = raw.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let known = params_of(path);
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.iter().any(|p| p.name == name) {
                let names: Vec<&str> = known.iter().map(|p| p.name).collect();
                let name: String = name.chars().take(64).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {name}; {path} takes {}",
                    names.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(seen, _)| seen == name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name} is given twice"
                )));
            }
        }
        Ok(Params { path, pairs })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A text parameter ([`Kind::Text`], [`Kind::VmName`], [`Kind::OneOf`]), checked as
    /// [`LISTS`] says.
    fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(v) = self.raw(name) else {
            return Ok(None);
        };
        let kind = params_of(self.path)
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.kind);
        match kind.unwrap_or(Kind::Text) {
            Kind::VmName => VM_NAME_SHAPE
                .check(v)
                .map_err(|e| ApiError::BadRequest(e.named(name)))?,
            Kind::OneOf(set) if !set().contains(&v) => {
                return Err(bad(name, v, &format!("one of {}", set().join(", "))))
            }
            _ if v.is_empty() => return Err(bad(name, v, "a non-empty value")),
            _ => {}
        }
        Ok(Some(v.to_string()))
    }

    fn seconds(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.raw(name)
            .map(|v| match v.parse::<f64>() {
                Ok(s) if s.is_finite() => Ok(s),
                _ => Err(bad(name, v, "a finite number of seconds")),
            })
            .transpose()
    }

    fn sequence(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.raw(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(name, v, "a whole number from 0"))
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.raw(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(bad(name, v, "true or false")),
        }
    }

    /// `limit`: 1 to [`MAX_READ`] as the CLI takes it; [`DEFAULT_LIMIT`] when not given.
    fn limit(&self) -> Result<u32, ApiError> {
        let Some(v) = self.raw("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match v.parse::<i64>() {
            Ok(n) if (1..=i64::from(MAX_READ)).contains(&n) => Ok(n as u32),
            _ => Err(bad(
                "limit",
                v,
                &format!("a whole number from 1 to {MAX_READ} (default {DEFAULT_LIMIT})"),
            )),
        }
    }

    /// `GET /v1/plans`' query.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn plans(raw: Raw) -> Result<PlanQuery, ApiError> {
        let q = Params::read(raw, "/v1/plans")?;
        Ok(PlanQuery {
            state: q.text("state")?,
            since_s: q.seconds("since_s")?,
            limit: q.limit()?,
        })
    }

    /// `GET /v1/moves`' query.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn moves(raw: Raw) -> Result<MoveQuery, ApiError> {
        let q = Params::read(raw, "/v1/moves")?;
        Ok(MoveQuery {
            plan_id: q.text("plan_id")?,
            vm: q.text("vm")?,
            state: q.text("state")?,
            limit: q.limit()?,
        })
    }

    /// `GET /v1/migrations`' query.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn migrations(raw: Raw) -> Result<MigrationQuery, ApiError> {
        let q = Params::read(raw, "/v1/migrations")?;
        Ok(MigrationQuery {
            vm: q.text("vm")?,
            limit: q.limit()?,
        })
    }

    /// `GET /v1/events`' query.
    ///
    /// # Errors
    /// 400 naming the parameter.
    pub fn events(raw: Raw) -> Result<JournalQuery, ApiError> {
        let q = Params::read(raw, "/v1/events")?;
        Ok(JournalQuery {
            since_s: q.seconds("since_s")?,
            until_s: q.seconds("until_s")?,
            subject: q.text("subject")?,
            id: q.text("id")?,
            after_seq: q.sequence("after_seq")?,
            before_seq: q.sequence("before_seq")?,
            newest_first: q.flag("newest_first")?,
            limit: q.limit()?,
        })
    }
}
