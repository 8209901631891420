//! Time series that do not scan: the daily rollups summed by day, week and month for every
//! province and partner, and for all of them (`sales_series`, `households_series`), so a year
//! of national figures by day reads 366 rows and by month 12. This file holds the rules: what
//! a change of the daily cells adds to those rows, which rows a query reads, and the cache of
//! answers until the next change.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use time::{Date, Duration};

use crate::domain::{Granularity, Overflow, SeriesQuery, SERIES_YEARS};

/// (granularity, province or `''`, partner or `''`, first day of the period) — the primary key
/// of the series tables, in its order, so rows are written in key order like every rollup.
pub type SeriesKey = (&'static str, String, &'static str, String);

/// Granularities kept, with their names in the tables.
const KEPT: [Granularity; 3] = [Granularity::Day, Granularity::Week, Granularity::Month];

/// What a change of the daily cells adds to the series rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeriesDeltas {
    /// Sales: grams, đồng, orders.
    pub sales: BTreeMap<SeriesKey, [i64; 3]>,
    /// Households registered (every status).
    pub households: BTreeMap<SeriesKey, i64>,
}

/// A day as the rollups write it (`YYYY-MM-DD`), if it is a real date of the years a series
/// may ask for; other days have no series rows (the migration's backfill skips them alike).
fn series_day(day: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(day, format)
        .ok()
        .filter(|d| (SERIES_YEARS.0..=SERIES_YEARS.1).contains(&d.year()))
}

/// A series key while a change is summed: the province borrowed from the daily cells and
/// the period's start as a date, so the twelve keys of a cell cost no allocation; only the
/// distinct keys become [`SeriesKey`]s, once, at the end (allocating a province and a start
/// string for each of a cell's twelve keys was most of `SeriesDeltas::of`, itself about 8 %
/// of the CPU of `bench ingest`).
type Summing<'a> = (Granularity, &'a str, &'static str, Date);

/// The series keys a daily cell of a day whose periods start at `starts` (one per kept
/// granularity), `province` and `partner` counts in: each kept granularity, at the four
/// levels (province and partner, province, partner, nation).
fn keys<'a>(
    starts: [Date; 3],
    province: &'a str,
    partner: &'static str,
) -> impl Iterator<Item = Summing<'a>> {
    KEPT.into_iter().zip(starts).flat_map(move |(g, start)| {
        [
            (g, province, partner, start),
            (g, province, "", start),
            (g, "", partner, start),
            (g, "", "", start),
        ]
    })
}

/// The key as the tables hold it.
fn owned((g, province, partner, start): Summing<'_>) -> SeriesKey {
    (g.name(), province.to_string(), partner, start.to_string())
}

/// The periods' starts of each day seen, parsed once per distinct day (`None`: no series).
#[derive(Default)]
struct Starts<'a>(HashMap<&'a str, Option<[Date; 3]>>);

impl<'a> Starts<'a> {
    fn of(&mut self, day: &'a str) -> Option<[Date; 3]> {
        *self
            .0
            .entry(day)
            .or_insert_with(|| series_day(day).map(|d| KEPT.map(|g| g.start_of(d))))
    }
}

fn add<const N: usize>(cell: &mut [i64; N], by: &[i64; N]) -> Result<(), Overflow> {
    let mut sum = *cell;
    for (a, b) in sum.iter_mut().zip(by) {
        *a = a.checked_add(*b).ok_or(Overflow)?;
    }
    *cell = sum;
    Ok(())
}

impl SeriesDeltas {
    /// The series rows' change for a change of the daily cells (the same −previous/+current
    /// sums, summed again by period and level, checked).
    ///
    /// Each daily cell counts in twelve series keys (three granularities, four levels), and a
    /// fold of many events brings tens of thousands of cells: inserted one by one into the
    /// `BTreeMap` of string tuples they cost about half of `up`'s CPU in `bench ingest`
    /// (release, `perf`: `memcmp` under its searches). So the cells of one day, province and
    /// partner (consecutive, since the daily cells come in key order, categories last) are
    /// summed first, the keys summed in a hash map, and the distinct keys sorted once.
    pub fn of<'a>(
        sales_daily: impl IntoIterator<Item = ((&'a str, &'a str, &'static str), [i64; 3])>,
        households_daily: impl IntoIterator<Item = ((&'a str, &'a str, &'static str), i64)>,
    ) -> Result<SeriesDeltas, Overflow> {
        let mut starts = Starts::default();
        let mut sales: HashMap<Summing<'a>, [i64; 3]> = HashMap::new();
        for ((day, province, partner), cell) in runs(sales_daily, add)? {
            let Some(day) = starts.of(day) else { continue };
            for key in keys(day, province, partner) {
                add(sales.entry(key).or_default(), &cell)?;
            }
        }
        let mut households: HashMap<Summing<'a>, i64> = HashMap::new();
        let sum = |a: &mut i64, b: &i64| {
            *a = a.checked_add(*b).ok_or(Overflow)?;
            Ok(())
        };
        for ((day, province, partner), n) in runs(households_daily, sum)? {
            let Some(day) = starts.of(day) else { continue };
            for key in keys(day, province, partner) {
                sum(households.entry(key).or_default(), &n)?;
            }
        }
        // A correction within one period nets to zero there: nothing to write.
        Ok(SeriesDeltas {
            sales: sales
                .into_iter()
                .filter(|(_, v)| v.iter().any(|n| *n != 0))
                .map(|(k, v)| (owned(k), v))
                .collect(),
            households: households
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(k, n)| (owned(k), n))
                .collect(),
        })
    }
}

/// `cells` with consecutive equal keys summed by `add` (in their order, so the sums and any
/// overflow do not depend on a hash map's order).
fn runs<K: PartialEq, V: Default>(
    cells: impl IntoIterator<Item = (K, V)>,
    add: impl Fn(&mut V, &V) -> Result<(), Overflow>,
) -> Result<Vec<(K, V)>, Overflow> {
    let mut out: Vec<(K, V)> = Vec::new();
    for (key, value) in cells {
        match out.last_mut() {
            Some((last, sum)) if *last == key => add(sum, &value)?,
            _ => {
                let mut sum = V::default();
                add(&mut sum, &value)?;
                out.push((key, sum));
            }
        }
    }
    Ok(out)
}

/// Which rows answer a query: its whole periods from the rows of its granularity, and the
/// days of a period it covers only in part (at its start or end) from the daily rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Granularity of the whole periods.
    pub granularity: &'static str,
    /// First and last period start read at that granularity (`None`: none).
    pub periods: Option<(Date, Date)>,
    /// Ranges of days read from the daily rows (inclusive), at most two.
    pub days: Vec<(Date, Date)>,
}

/// The last day of the period starting at `start`.
fn period_end(g: Granularity, start: Date) -> Option<Date> {
    match g {
        Granularity::Day => Some(start),
        Granularity::Week => start.checked_add(Duration::days(6)),
        Granularity::Month => {
            let next = if start.month() == time::Month::December {
                Date::from_calendar_date(start.year() + 1, time::Month::January, 1)
            } else {
                Date::from_calendar_date(start.year(), start.month().next(), 1)
            };
            next.ok().and_then(|d| d.previous_day())
        }
    }
}

/// The rows a query reads.
pub fn plan(query: &SeriesQuery) -> ReadPlan {
    let g = query.granularity;
    let all_days = ReadPlan {
        granularity: g.name(),
        periods: None,
        days: vec![(query.from, query.to)],
    };
    if g == Granularity::Day {
        return all_days;
    }
    // The first whole period starts at `from` or after the period `from` falls in; the last
    // one ends at `to` or before the period `to` falls in.
    let first = if g.start_of(query.from) == query.from {
        Some(query.from)
    } else {
        period_end(g, g.start_of(query.from)).and_then(|d| d.next_day())
    };
    let last_start = g.start_of(query.to);
    let last = if period_end(g, last_start) == Some(query.to) {
        Some(last_start)
    } else {
        last_start
            .previous_day()
            .map(|d| g.start_of(d))
            .filter(|d| *d >= query.from)
    };
    let (Some(first), Some(last)) = (first, last) else {
        return all_days;
    };
    if first > last {
        return all_days;
    }
    let mut days = Vec::new();
    if query.from < first {
        if let Some(before) = first.previous_day() {
            days.push((query.from, before));
        }
    }
    if let Some(after) = period_end(g, last).and_then(|d| d.next_day()) {
        if after <= query.to {
            days.push((after, query.to));
        }
    }
    ReadPlan {
        granularity: g.name(),
        periods: Some((first, last)),
        days,
    }
}

/// Answers kept until the figures change: each entry is valid for the figures' version it was
/// read at (or later), and the whole cache is dropped when the version moves. Bounded: past
/// [`SeriesCache::CAPACITY`] entries it starts again empty, so odd queries cannot fill memory.
pub struct SeriesCache<K, V> {
    inner: Mutex<(i64, HashMap<K, Slot<V>>)>,
}

/// One key's answer, or the read of it under way: readers of a key that is not there yet
/// wait for the one read instead of each reading the store (when the version moves, every
/// dashboard polling a chart asks at once).
type Slot<V> = Arc<tokio::sync::OnceCell<Arc<V>>>;

impl<K: Hash + Eq, V> Default for SeriesCache<K, V> {
    fn default() -> Self {
        SeriesCache {
            inner: Mutex::new((i64::MIN, HashMap::new())),
        }
    }
}

impl<K: Hash + Eq, V> SeriesCache<K, V> {
    /// Entries kept at most (a dashboard's charts ask a few dozen distinct queries).
    pub const CAPACITY: usize = 1024;

    /// The answer kept for `key` at figures' `version`, if any.
    pub fn get(&self, version: i64, key: &K) -> Option<Arc<V>> {
        let inner = self.inner.lock().ok()?;
        (inner.0 == version).then(|| inner.1.get(key)?.get().cloned())?
    }

    /// Keeps `value` for `key`, read at figures' `version` (an answer read at an older version
    /// than the cache holds is not kept).
    pub fn put(&self, version: i64, key: K, value: Arc<V>) {
        if let Some(slot) = self.slot(version, key) {
            // A read under way for the key may have filled it first: either answer is of
            // this version or later.
            let _ = slot.set(value);
        }
    }

    /// The answer for `key` at figures' `version`: the one kept, else `read`'s, kept (unless
    /// the cache holds a newer version already). Concurrent callers for one key and version
    /// share one `read`; if it fails, each waiting caller tries its own in turn.
    pub async fn get_or_read<E, F, Fut>(&self, version: i64, key: K, read: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let Some(slot) = self.slot(version, key) else {
            return read().await.map(Arc::new);
        };
        slot.get_or_try_init(|| async { read().await.map(Arc::new) })
            .await
            .cloned()
    }

    /// `key`'s slot at `version` (made if missing); none for a version older than the cache's.
    fn slot(&self, version: i64, key: K) -> Option<Slot<V>> {
        let mut inner = self.inner.lock().ok()?;
        if inner.0 != version {
            if version < inner.0 {
                return None;
            }
            *inner = (version, HashMap::new());
        }
        if inner.1.len() >= Self::CAPACITY && !inner.1.contains_key(&key) {
            inner.1.clear();
        }
        Some(inner.1.entry(key).or_default().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Metric;
    use time::macros::date;

    fn query(g: Granularity, from: Date, to: Date) -> SeriesQuery {
        SeriesQuery {
            metric: Metric::SalesGrams,
            granularity: g,
            from,
            to,
            province: None,
            partner: None,
        }
    }

    #[test]
    fn whole_periods_come_from_their_rows_and_partial_ones_from_days() {
        let p = plan(&query(
            Granularity::Month,
            date!(2026 - 01 - 15),
            date!(2026 - 04 - 10),
        ));
        assert_eq!(
            p.periods,
            Some((date!(2026 - 02 - 01), date!(2026 - 03 - 01)))
        );
        assert_eq!(
            p.days,
            vec![
                (date!(2026 - 01 - 15), date!(2026 - 01 - 31)),
                (date!(2026 - 04 - 01), date!(2026 - 04 - 10))
            ]
        );
        // A whole year by month: 12 rows, no days.
        let year = plan(&query(
            Granularity::Month,
            date!(2026 - 01 - 01),
            date!(2026 - 12 - 31),
        ));
        assert_eq!(
            (year.periods, year.days.len()),
            (Some((date!(2026 - 01 - 01), date!(2026 - 12 - 01))), 0)
        );
        // Within one month: days only.
        let inside = plan(&query(
            Granularity::Month,
            date!(2026 - 02 - 03),
            date!(2026 - 02 - 20),
        ));
        assert_eq!(inside.periods, None);
        assert_eq!(
            inside.days,
            vec![(date!(2026 - 02 - 03), date!(2026 - 02 - 20))]
        );
        // Weeks start on Monday: 2026-11-02 is one, 2026-11-15 a Sunday.
        let weeks = plan(&query(
            Granularity::Week,
            date!(2026 - 11 - 02),
            date!(2026 - 11 - 18),
        ));
        assert_eq!(
            weeks.periods,
            Some((date!(2026 - 11 - 02), date!(2026 - 11 - 09)))
        );
        assert_eq!(
            weeks.days,
            vec![(date!(2026 - 11 - 16), date!(2026 - 11 - 18))]
        );
    }

    #[test]
    fn a_cell_counts_at_every_level_and_a_correction_within_a_period_writes_nothing() {
        let d = SeriesDeltas::of(
            [
                (("2026-11-02", "79", "voso"), [10, 30, 1]),
                (("2026-11-03", "79", "voso"), [-10, -30, -1]),
                (("2026-02-30", "79", "voso"), [5, 5, 5]),
            ],
            [],
        )
        .unwrap();
        // The two days' rows (4 levels each); the week and month net to zero; the impossible
        // day counts nowhere.
        assert_eq!(d.sales.len(), 8, "{d:?}");
        assert_eq!(
            d.sales
                .get(&("day", String::new(), "", "2026-11-02".to_string())),
            Some(&[10, 30, 1])
        );
        assert!(
            SeriesDeltas::of([(("2026-11-02", "79", "voso"), [i64::MAX, 0, 0])], [])
                .and_then(|mut a| {
                    let b = SeriesDeltas::of([(("2026-11-03", "79", "voso"), [1, 0, 0])], [])?;
                    for (k, v) in b.sales {
                        add(a.sales.entry(k).or_default(), &v)?;
                    }
                    Ok(a)
                })
                .is_err()
        );
    }

    /// Many cells at once (several categories of one day, province and partner in a row, as
    /// a fold of events brings them, and the same key again later) give the sums of each
    /// cell's own rows.
    #[test]
    fn cells_given_together_sum_like_each_alone() {
        let cells = [
            (("2026-11-02", "01", "postmart"), [1, 2, 1]),
            (("2026-11-02", "01", "postmart"), [10, 20, 1]),
            (("2026-11-02", "01", "postmart"), [100, 200, 1]),
            (("2026-11-02", "79", "postmart"), [7, 7, 7]),
            (("2026-11-04", "01", "voso"), [5, 50, 2]),
            (("2026-11-02", "01", "postmart"), [-1, -2, -1]),
        ];
        let together = SeriesDeltas::of(cells, [(("2026-11-02", "01", "voso"), 3)]).unwrap();
        let mut alone = SeriesDeltas::default();
        for cell in cells {
            for (k, v) in SeriesDeltas::of([cell], []).unwrap().sales {
                add(alone.sales.entry(k).or_default(), &v).unwrap();
            }
        }
        alone.sales.retain(|_, v| v.iter().any(|n| *n != 0));
        assert_eq!(together.sales, alone.sales);
        assert_eq!(
            together.sales.get(&(
                "day",
                "01".to_string(),
                "postmart",
                "2026-11-02".to_string()
            )),
            Some(&[110, 220, 2])
        );
        assert_eq!(
            together
                .sales
                .get(&("month", String::new(), "", "2026-11-01".to_string())),
            Some(&[122, 277, 11])
        );
        assert_eq!(together.households.len(), 12);
    }

    #[test]
    fn the_cache_holds_answers_of_one_version() {
        let cache: SeriesCache<u8, u8> = SeriesCache::default();
        cache.put(1, 7, Arc::new(70));
        assert_eq!(cache.get(1, &7).as_deref(), Some(&70));
        assert_eq!(cache.get(2, &7), None, "the figures changed");
        cache.put(2, 8, Arc::new(80));
        assert_eq!(cache.get(2, &7), None, "dropped with version 1");
        cache.put(1, 7, Arc::new(70));
        assert_eq!(cache.get(2, &7), None, "an older answer is not kept");
    }

    /// Callers of one key at one version wait for a single read; a new version reads again;
    /// a failed read is not kept.
    #[tokio::test]
    async fn concurrent_misses_share_one_read_until_the_version_moves() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache: Arc<SeriesCache<u8, usize>> = Arc::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let read = |answer: usize| {
            let (reads, gate) = (reads.clone(), gate.clone());
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                // Held until every caller is waiting.
                let _permit = gate.acquire().await.map_err(|_| "closed")?;
                Ok::<usize, &str>(answer)
            }
        };
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (cache, read) = (cache.clone(), read(10));
            callers.spawn(async move { cache.get_or_read(1, 7, read).await });
        }
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
        while let Some(answer) = callers.join_next().await {
            assert_eq!(*answer.unwrap().unwrap(), 10);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for 16 callers");
        assert_eq!(cache.get(1, &7).as_deref(), Some(&10));
        // The figures changed: read again, and the new answer is what is kept.
        assert_eq!(*cache.get_or_read(2, 7, read(20)).await.unwrap(), 20);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(*cache.get_or_read(2, 7, read(30)).await.unwrap(), 20);
        // A caller still at the old version reads for itself, and nothing is kept from it.
        assert_eq!(*cache.get_or_read(1, 7, read(40)).await.unwrap(), 40);
        assert_eq!(cache.get(2, &7).as_deref(), Some(&20));
        // A failure is the caller's alone.
        let failed = cache
            .get_or_read(2, 8, || async { Err::<usize, &str>("store down") })
            .await;
        assert_eq!(failed.err(), Some("store down"));
        assert_eq!(*cache.get_or_read(2, 8, read(50)).await.unwrap(), 50);
    }
}
