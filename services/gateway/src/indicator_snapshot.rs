//! The indicators' part of the in-memory snapshot ([`crate::snapshot`]): the catalogue's list
//! (`GET /api/v1/indicators`) and each indicator's default view (`GET
//! /api/v1/indicators/{code}` without `period` or `province`), their JSON serialised once per
//! change, and a bounded cache of the other queries' answers, which lives and dies with the
//! snapshot it belongs to (a new version starts with an empty one).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use agriportal_platform::Result;
use time::Date;

use crate::http::{indicator_body, indicators_body};
use crate::indicators::{unknown_indicator, IndicatorProgressView, IndicatorSummaryView};
use crate::snapshot::JsonBody;

/// A view and the JSON body the HTTP API answers for it, serialised once.
#[derive(Debug)]
pub struct Answer<V> {
    /// What the gRPC adapter and the CSV files are made from.
    pub view: V,
    /// Byte for byte what the handler answers.
    pub json: JsonBody,
}

impl Answer<Vec<IndicatorSummaryView>> {
    /// The list and its body.
    pub fn list(view: Vec<IndicatorSummaryView>) -> Result<Self> {
        let json = JsonBody::of(&indicators_body(&view))?;
        Ok(Answer { view, json })
    }
}

impl Answer<IndicatorProgressView> {
    /// One indicator's view and its body.
    pub fn one(view: IndicatorProgressView) -> Result<Self> {
        let json = JsonBody::of(&indicator_body(&view))?;
        Ok(Answer { view, json })
    }
}

/// A query the snapshot does not hold precomputed, as its cache keys it (parameters trimmed
/// as the queries trim them).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Query {
    /// `GET /api/v1/indicators` (or the gRPC list) with a period or a province.
    List {
        /// Period asked (may be empty).
        period: String,
        /// Province asked (may be empty).
        province: String,
    },
    /// `GET /api/v1/indicators/{code}` with a period or a province.
    One {
        /// Indicator code.
        code: String,
        /// Period asked (may be empty).
        period: String,
        /// Province asked (may be empty).
        province: String,
    },
}

/// A cached answer.
#[derive(Clone, Debug)]
pub enum Cached {
    /// Of a [`Query::List`].
    List(Arc<Answer<Vec<IndicatorSummaryView>>>),
    /// Of a [`Query::One`].
    One(Arc<Answer<IndicatorProgressView>>),
}

impl Cached {
    /// Bytes the entry holds, estimated as twice its JSON (the view beside it holds the same
    /// strings and numbers in a form of about that size).
    fn weight(&self) -> usize {
        let json = match self {
            Cached::List(a) => a.json.bytes.len(),
            Cached::One(a) => a.json.bytes.len(),
        };
        json.saturating_mul(2)
    }
}

/// Answers of the queries the snapshot does not precompute, at most [`QueryCache::MAX_ENTRIES`]
/// and [`QueryCache::MAX_BYTES`]; past either, the oldest entries make room. Only successful
/// answers are kept, so every key was a valid query (short, checked parameters).
#[derive(Default)]
pub struct QueryCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<Query, Cached>,
    /// Keys, oldest first.
    order: VecDeque<Query>,
    bytes: usize,
}

impl QueryCache {
    /// Entries kept at most (a dashboard polls a few queries; an entry form asks one per
    /// province).
    pub const MAX_ENTRIES: usize = 256;
    /// Bytes kept at most (estimated, see `Cached::weight`): a province's answer with its
    /// communes is tens of kilobytes.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;

    /// The answer kept for `key`.
    pub fn get(&self, key: &Query) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(key).cloned()
    }

    /// Keeps `value` for `key`, dropping the oldest entries while over a bound; an answer
    /// larger than the whole budget is not kept.
    pub fn put(&self, key: Query, value: Cached) {
        let weight = value.weight();
        if weight > Self::MAX_BYTES {
            return;
        }
        // A lock poisoned by a panic elsewhere still holds a consistent map (every change
        // below is made whole before the next).
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.weight();
            inner.order.retain(|k| k != &key);
        }
        while inner.entries.len() >= Self::MAX_ENTRIES || inner.bytes + weight > Self::MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.weight();
            }
        }
        inner.bytes += weight;
        inner.order.push_back(key.clone());
        inner.entries.insert(key, value);
    }

    /// Entries and bytes (estimated) kept now.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.entries.len(), inner.bytes)
    }
}

/// The indicators as of one figures' version and one day.
pub struct IndicatorsSnapshot {
    /// `meta.figures_version` read before the views (they are at least that new; a commit
    /// during the read moves the version past it, and the next round builds again).
    pub version: i64,
    /// Vietnam's date they were built on: the default periods follow the date, so a snapshot
    /// of another day is not answered from.
    pub day: Date,
    /// The default list.
    pub list: Arc<Answer<Vec<IndicatorSummaryView>>>,
    /// Each indicator's default view, by code.
    pub views: BTreeMap<String, Arc<Answer<IndicatorProgressView>>>,
    /// The other queries' answers at this version.
    pub cache: QueryCache,
}

impl IndicatorsSnapshot {
    /// The snapshot of these default views (catalogue order), read at `version` on `day`.
    /// The list is made from the views: an indicator's entry in it is its default view's
    /// indicator, period and national figure, which the list's query computes alike.
    pub fn of(version: i64, day: Date, views: Vec<IndicatorProgressView>) -> Result<Self> {
        let list = views
            .iter()
            .map(|v| IndicatorSummaryView {
                indicator: v.indicator.clone(),
                period: v.period,
                national: v.national.clone(),
                province: None,
            })
            .collect();
        let list = Arc::new(Answer::list(list)?);
        let views = views
            .into_iter()
            .map(|v| Ok((v.indicator.code.clone(), Arc::new(Answer::one(v)?))))
            .collect::<Result<_>>()?;
        Ok(IndicatorsSnapshot {
            version,
            day,
            list,
            views,
            cache: QueryCache::default(),
        })
    }

    /// The default view of the indicator `code` (trimmed, as the query trims it).
    pub fn view(&self, code: &str) -> Result<Arc<Answer<IndicatorProgressView>>> {
        self.views
            .get(code.trim())
            .cloned()
            .ok_or_else(|| unknown_indicator(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn answer(bytes: usize) -> Cached {
        Cached::List(Arc::new(Answer {
            view: Vec::new(),
            json: JsonBody {
                bytes: Bytes::from(vec![b' '; bytes]),
                etag: String::new(),
            },
        }))
    }

    fn key(i: usize) -> Query {
        Query::List {
            period: i.to_string(),
            province: String::new(),
        }
    }

    #[test]
    fn the_cache_is_bounded_in_entries_and_bytes_dropping_the_oldest() {
        let cache = QueryCache::default();
        for i in 0..QueryCache::MAX_ENTRIES + 10 {
            cache.put(key(i), answer(10));
        }
        assert_eq!(
            cache.size(),
            (QueryCache::MAX_ENTRIES, QueryCache::MAX_ENTRIES * 20)
        );
        assert!(cache.get(&key(0)).is_none(), "the oldest made room");
        assert!(cache.get(&key(QueryCache::MAX_ENTRIES + 9)).is_some());
        // Entries of a third of the budget each: three never fit, the oldest goes.
        let third = QueryCache::MAX_BYTES / 6 + 1;
        let cache = QueryCache::default();
        for i in 0..3 {
            cache.put(key(i), answer(third));
        }
        let (entries, bytes) = cache.size();
        assert_eq!(entries, 2);
        assert!(bytes <= QueryCache::MAX_BYTES);
        assert!(cache.get(&key(0)).is_none() && cache.get(&key(2)).is_some());
        // Too large for the whole budget: not kept, nothing dropped for it.
        cache.put(key(9), answer(QueryCache::MAX_BYTES));
        assert_eq!(cache.size().0, 2);
        // The same key again replaces its entry, counted once.
        cache.put(key(2), answer(1));
        assert_eq!(cache.size(), (2, third * 2 + 2));
    }
}
