//! The saga filters shared by the list, the counts and the bulk actions, checked and
//! turned into a store query. Every filter is served by an index (migrations 0007 and
//! 0009; tests/store_plans.rs shows the plans).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

use super::AppState;
use super::model::{BulkFilter, ListParams, StatusCounts};
use crate::runtime::intake::nul_path;
use crate::store::{self, SagaFilter};

/// Longest text filter accepted.
const MAX_TEXT: usize = 256;
/// Deepest input path accepted.
const MAX_DEPTH: usize = 16;
/// Counts stop here.
pub const COUNT_CAP: i64 = 100_000;

/// The filter fields as a request gives them.
#[derive(Debug, Default)]
pub struct Search<'a> {
    pub definition: Option<&'a str>,
    pub status: Option<&'static str>,
    pub key: Option<&'a str>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub step: Option<&'a str>,
    pub failure: Option<&'a str>,
    pub key_prefix: Option<&'a str>,
    /// `<JSON pointer>=<value>`.
    pub input: Option<&'a str>,
}

impl<'a> Search<'a> {
    pub fn of_list(p: &'a ListParams) -> Search<'a> {
        Search {
            definition: p.definition.as_deref(),
            status: p.status.map(|s| s.as_str()),
            key: p.key.as_deref(),
            created_after: p.created_after,
            created_before: p.created_before,
            updated_after: p.updated_after,
            updated_before: p.updated_before,
            step: p.step.as_deref(),
            failure: p.failure.as_deref(),
            key_prefix: p.key_prefix.as_deref(),
            input: p.input.as_deref(),
        }
    }

    pub fn of_bulk(f: &'a BulkFilter) -> Search<'a> {
        Search {
            definition: f.definition.as_deref(),
            status: f.status.map(|s| s.as_str()),
            key: f.key.as_deref(),
            created_after: f.created_after,
            created_before: f.created_before,
            updated_after: f.updated_after,
            updated_before: f.updated_before,
            step: f.step.as_deref(),
            failure: f.failure.as_deref(),
            key_prefix: f.key_prefix.as_deref(),
            input: f.input.as_deref(),
        }
    }

    /// The store filter, or what is wrong with the request. `Ok(None)`: no saga can
    /// match (PostgreSQL text cannot hold U+0000).
    pub fn filter(&self) -> Result<Option<SagaFilter>, String> {
        let texts = [
            self.definition,
            self.key,
            self.step,
            self.failure,
            self.key_prefix,
        ];
        if texts.iter().flatten().any(|t| t.len() > MAX_TEXT)
            || self.input.is_some_and(|t| t.len() > 2 * MAX_TEXT)
        {
            return Err(format!(
                "text filters hold at most {MAX_TEXT} bytes (input: {})",
                2 * MAX_TEXT
            ));
        }
        // Fewer than 3 characters cannot use the trigram index: every failed saga is read.
        if self.failure.is_some_and(|f| f.chars().count() < 3) {
            return Err("failure needs at least 3 characters".into());
        }
        let input_contains = match self.input {
            None => None,
            Some(input) => {
                let Some((path, value)) = input.split_once('=') else {
                    return Err("input is `<JSON pointer>=<value>`, e.g. /customer_id=c-42".into());
                };
                Some(containment(path, value)?)
            }
        };
        let nul_in_input = input_contains
            .as_ref()
            .is_some_and(|c| nul_path(c).is_some());
        if texts.iter().flatten().any(|t| t.contains('\0')) || nul_in_input {
            return Ok(None);
        }
        let own = |t: Option<&str>| t.map(str::to_owned);
        Ok(Some(SagaFilter {
            definition: own(self.definition),
            status: self.status.map(str::to_owned),
            key: own(self.key),
            created_after: self.created_after,
            created_before: self.created_before,
            updated_after: self.updated_after,
            updated_before: self.updated_before,
            step: own(self.step),
            failure: own(self.failure),
            key_prefix: own(self.key_prefix).filter(|p| !p.is_empty()),
            input_contains,
            after: None,
        }))
    }

    /// A fixed text form of the filters: a list cursor is valid for them only.
    pub fn fingerprint(&self) -> String {
        let time = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.timestamp_micros().to_string())
                .unwrap_or_default()
        };
        format!(
            "{:?}|{:?}|{:?}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
            self.definition,
            self.status,
            self.key,
            time(&self.created_after),
            time(&self.created_before),
            time(&self.updated_after),
            time(&self.updated_before),
            self.step,
            self.failure,
            self.key_prefix,
            self.input,
        )
    }
}

/// `{"a": {"b": value}}` for the JSON pointer `/a/b`: what `input @> …` matches.
fn containment(path: &str, value: &str) -> Result<Json, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("input starts with a JSON pointer such as /customer/id".into());
    };
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if segments.len() > MAX_DEPTH || segments.iter().any(String::is_empty) {
        return Err(format!(
            "the input's pointer has 1 to {MAX_DEPTH} non-empty segments"
        ));
    }
    let mut v: Json =
        serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_owned()));
    // `{}` or `[]` as JSON would match every object or array there (a scan of the whole
    // index): they are taken as the strings they are.
    let empty = matches!(&v, Json::Object(m) if m.is_empty())
        || matches!(&v, Json::Array(a) if a.is_empty());
    if empty {
        v = Json::String(value.to_owned());
    }
    for segment in segments.into_iter().rev() {
        let mut map = Map::new();
        map.insert(segment, v);
        v = Json::Object(map);
    }
    Ok(v)
}

/// Matching sagas by status.
pub async fn status_counts(
    state: &AppState,
    filter: &SagaFilter,
) -> Result<StatusCounts, store::StoreError> {
    let rows = store::count_by_status_where(&state.applier.store.pool, filter, COUNT_CAP).await?;
    let total: i64 = rows.iter().map(|(_, n)| n).sum();
    Ok(StatusCounts {
        counts: rows.into_iter().collect(),
        capped: total >= COUNT_CAP,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn input_paths_become_containment_documents() {
        assert_eq!(
            containment("/customer/id", "c-1").unwrap(),
            serde_json::json!({"customer": {"id": "c-1"}})
        );
        assert_eq!(
            containment("/amount", "42").unwrap(),
            serde_json::json!({"amount": 42})
        );
        assert_eq!(
            containment("/a~1b", "\"x\"").unwrap(),
            serde_json::json!({"a/b": "x"})
        );
        assert!(containment("customer", "x").is_err());
        assert!(containment("/a//b", "x").is_err());
    }
}
