//! Reporting periods with DHIS2's ids (`202611`, `2026Q4`, `2026`), when each opens and its
//! default deadline. Shared because two services reason about the same periods: the indicators
//! service (which periods take values, who is late) and the gateway (completeness and progress
//! read models).

use std::fmt;

use time::{Date, Duration, Month, OffsetDateTime, UtcOffset};

/// Vietnam's time zone (UTC+7, no daylight saving): periods and deadlines are Vietnamese days.
pub const VIETNAM: UtcOffset = time::macros::offset!(+7);

/// The day the 34 provinces replaced the 63: a period that ends before it is history, whose
/// values may be entered under a pre-2025 province code.
pub const MERGER: Date = time::macros::date!(2025 - 07 - 01);

/// The first year a period may be in (the plan started in 2021).
pub const FIRST_YEAR: i32 = 2021;
/// The last year a period may be in: far enough for any plan, near enough to catch typos.
pub const LAST_YEAR: i32 = 2100;

/// The kind of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodType {
    /// A calendar month.
    Month,
    /// A calendar quarter.
    Quarter,
    /// A calendar year.
    Year,
}

impl PeriodType {
    /// Lower-case name, as the public API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodType::Month => "month",
            PeriodType::Quarter => "quarter",
            PeriodType::Year => "year",
        }
    }

    /// Parses `month`, `quarter` or `year`.
    pub fn parse(text: &str) -> Option<PeriodType> {
        match text {
            "month" => Some(PeriodType::Month),
            "quarter" => Some(PeriodType::Quarter),
            "year" => Some(PeriodType::Year),
            _ => None,
        }
    }
}

/// One period: a month, quarter or year.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    kind: PeriodType,
    /// Month 1–12, quarter 1–4, 0 for a year.
    index: u8,
}

/// The reporting deadlines, in days after a period ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// A month's deadline is this day of the next month (default the 5th).
    pub month_day: u8,
    /// A quarter's deadline is this many days after it ends (default 15).
    pub quarter_days: u16,
    /// A year's deadline is this many days after it ends (default 31).
    pub year_days: u16,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            month_day: 5,
            quarter_days: 15,
            year_days: 31,
        }
    }
}

impl Period {
    /// A month; `None` outside the allowed years or for a month not in 1–12.
    pub fn month(year: i32, month: u8) -> Option<Period> {
        Period::new(year, PeriodType::Month, month)
    }

    /// A quarter; `None` outside the allowed years or for a quarter not in 1–4.
    pub fn quarter(year: i32, quarter: u8) -> Option<Period> {
        Period::new(year, PeriodType::Quarter, quarter)
    }

    /// A year; `None` outside the allowed years.
    pub fn year(year: i32) -> Option<Period> {
        Period::new(year, PeriodType::Year, 0)
    }

    fn new(year: i32, kind: PeriodType, index: u8) -> Option<Period> {
        let index_ok = match kind {
            PeriodType::Month => (1..=12).contains(&index),
            PeriodType::Quarter => (1..=4).contains(&index),
            PeriodType::Year => index == 0,
        };
        ((FIRST_YEAR..=LAST_YEAR).contains(&year) && index_ok).then_some(Period {
            year,
            kind,
            index,
        })
    }

    /// Parses a DHIS2 period id: `YYYYMM`, `YYYYQn` or `YYYY`. The error says what was expected.
    pub fn parse(text: &str) -> Result<Period, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "period \"{text}\" is not a period id: write a month as 202611, a quarter as \
                 2026Q4 or a year as 2026"
            )
        };
        if !text.is_ascii() || text.len() < 4 {
            return Err(bad());
        }
        let (year, rest) = text.split_at(4);
        let year: i32 = year.parse().map_err(|_| bad())?;
        let out_of_range =
            || format!("period \"{text}\" is outside the years {FIRST_YEAR} to {LAST_YEAR}");
        let (kind, index) = match rest.as_bytes() {
            [] => (PeriodType::Year, 0),
            [b'Q', q @ b'1'..=b'4'] => (PeriodType::Quarter, q - b'0'),
            [m1 @ b'0'..=b'1', m2 @ b'0'..=b'9'] => {
                let month = (m1 - b'0') * 10 + (m2 - b'0');
                if !(1..=12).contains(&month) {
                    return Err(format!("period \"{text}\": there is no month {month}"));
                }
                (PeriodType::Month, month)
            }
            _ => return Err(bad()),
        };
        Period::new(year, kind, index).ok_or_else(out_of_range)
    }

    /// The period's kind.
    pub fn kind(self) -> PeriodType {
        self.kind
    }

    /// Its calendar year.
    pub fn year_number(self) -> i32 {
        self.year
    }

    /// The first day.
    pub fn start(self) -> Date {
        let month = match self.kind {
            PeriodType::Month => self.index,
            PeriodType::Quarter => (self.index - 1) * 3 + 1,
            PeriodType::Year => 1,
        };
        first_of(self.year, month)
    }

    /// The last day.
    pub fn end(self) -> Date {
        self.next().start().previous_day().unwrap_or(Date::MIN)
    }

    /// The day it opens for reporting: the day after it ends.
    pub fn opens_on(self) -> Date {
        self.next().start()
    }

    /// Whether it is open for reporting on `today` (Vietnam's date).
    pub fn is_open(self, today: Date) -> bool {
        today >= self.opens_on()
    }

    /// The last day values count as on time.
    pub fn deadline(self, deadlines: &Deadlines) -> Date {
        match self.kind {
            PeriodType::Month => {
                let next = self.next().start();
                let day = deadlines.month_day.clamp(1, 28);
                Date::from_calendar_date(next.year(), next.month(), day).unwrap_or(next)
            }
            PeriodType::Quarter => self.end() + Duration::days(i64::from(deadlines.quarter_days)),
            PeriodType::Year => self.end() + Duration::days(i64::from(deadlines.year_days)),
        }
    }

    /// The period before, of the same kind (saturating at the first allowed year).
    pub fn previous(self) -> Period {
        let (year, index) = match self.kind {
            PeriodType::Month if self.index == 1 => (self.year - 1, 12),
            PeriodType::Quarter if self.index == 1 => (self.year - 1, 4),
            PeriodType::Year => (self.year - 1, 0),
            _ => (self.year, self.index - 1),
        };
        Period::new(year, self.kind, index).unwrap_or(self)
    }

    /// The period after, of the same kind (its start is computed even past the last year).
    pub fn next(self) -> Period {
        let (year, index) = match self.kind {
            PeriodType::Month if self.index == 12 => (self.year + 1, 1),
            PeriodType::Quarter if self.index == 4 => (self.year + 1, 1),
            PeriodType::Year => (self.year + 1, 0),
            _ => (self.year, self.index + 1),
        };
        Period {
            year,
            kind: self.kind,
            index,
        }
    }

    /// Whether the whole period lies before the 2025 merger of provinces.
    pub fn before_merger(self) -> bool {
        self.end() < MERGER
    }

    /// The period of `kind` that contains `day`.
    pub fn containing(kind: PeriodType, day: Date) -> Option<Period> {
        let month = u8::from(day.month());
        match kind {
            PeriodType::Month => Period::month(day.year(), month),
            PeriodType::Quarter => Period::quarter(day.year(), (month - 1) / 3 + 1),
            PeriodType::Year => Period::year(day.year()),
        }
    }

    /// The latest period of `kind` that is open on `today`: the one that ended most recently.
    pub fn latest_open(kind: PeriodType, today: Date) -> Option<Period> {
        Period::containing(kind, today).map(Period::previous)
    }

    /// Whether `day` lies in this period.
    pub fn contains(self, day: Date) -> bool {
        self.start() <= day && day <= self.end()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeriodType::Month => write!(f, "{:04}{:02}", self.year, self.index),
            PeriodType::Quarter => write!(f, "{:04}Q{}", self.year, self.index),
            PeriodType::Year => write!(f, "{:04}", self.year),
        }
    }
}

/// Today's date in Vietnam.
pub fn vietnam_today(now: OffsetDateTime) -> Date {
    now.to_offset(VIETNAM).date()
}

/// Vietnam's date of a time in milliseconds since the Unix epoch.
pub fn vietnam_date_of_ms(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(vietnam_today)
        .unwrap_or(Date::MIN)
}

fn first_of(year: i32, month: u8) -> Date {
    let month = Month::try_from(month).unwrap_or(Month::January);
    Date::from_calendar_date(year, month, 1).unwrap_or(Date::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn ids_parse_and_print_as_dhis2_writes_them() {
        for id in ["202611", "2026Q4", "2026", "202101", "2100Q1"] {
            assert_eq!(Period::parse(id).unwrap().to_string(), id);
        }
        assert_eq!(Period::parse(" 202611 ").unwrap().to_string(), "202611");
        for bad in [
            "", "2026-11", "202613", "202600", "2026Q5", "2026q4", "20261", "2020", "Năm2026",
        ] {
            let err = Period::parse(bad).unwrap_err();
            assert!(err.contains("period"), "{bad}: {err}");
        }
        assert!(Period::parse("202613").unwrap_err().contains("no month 13"));
        assert!(Period::parse("2020").unwrap_err().contains("2021 to 2100"));
    }

    #[test]
    fn bounds_open_days_and_deadlines() {
        let nov = Period::parse("202611").unwrap();
        assert_eq!(nov.start(), date!(2026 - 11 - 01));
        assert_eq!(nov.end(), date!(2026 - 11 - 30));
        assert_eq!(nov.opens_on(), date!(2026 - 12 - 01));
        assert_eq!(nov.deadline(&Deadlines::default()), date!(2026 - 12 - 05));
        let dec = Period::parse("202612").unwrap();
        assert_eq!(dec.deadline(&Deadlines::default()), date!(2027 - 01 - 05));
        let q4 = Period::parse("2026Q4").unwrap();
        assert_eq!(q4.start(), date!(2026 - 10 - 01));
        assert_eq!(q4.end(), date!(2026 - 12 - 31));
        assert_eq!(q4.deadline(&Deadlines::default()), date!(2027 - 01 - 15));
        let feb = Period::parse("202802").unwrap();
        assert_eq!(feb.end(), date!(2028 - 02 - 29));
        let year = Period::parse("2026").unwrap();
        assert_eq!(year.end(), date!(2026 - 12 - 31));
        assert_eq!(year.deadline(&Deadlines::default()), date!(2027 - 01 - 31));
        assert!(!nov.is_open(date!(2026 - 11 - 30)));
        assert!(nov.is_open(date!(2026 - 12 - 01)));
    }

    #[test]
    fn neighbours_containing_and_latest_open() {
        let jan = Period::parse("202601").unwrap();
        assert_eq!(jan.previous().to_string(), "202512");
        assert_eq!(jan.previous().next(), jan);
        assert_eq!(
            Period::parse("2026Q1").unwrap().previous().to_string(),
            "2025Q4"
        );
        let today = date!(2026 - 12 - 02);
        assert_eq!(
            Period::latest_open(PeriodType::Month, today)
                .unwrap()
                .to_string(),
            "202611"
        );
        assert_eq!(
            Period::latest_open(PeriodType::Quarter, today)
                .unwrap()
                .to_string(),
            "2026Q3"
        );
        assert_eq!(
            Period::latest_open(PeriodType::Year, today)
                .unwrap()
                .to_string(),
            "2025"
        );
        assert!(Period::parse("202506").unwrap().before_merger());
        assert!(!Period::parse("202507").unwrap().before_merger());
        assert!(!Period::parse("2025Q2").unwrap().next().before_merger());
        assert!(Period::parse("2025Q2").unwrap().before_merger());
        assert!(Period::parse("202611")
            .unwrap()
            .contains(date!(2026 - 11 - 15)));
    }

    #[test]
    fn vietnam_days_start_at_17_utc() {
        assert_eq!(
            vietnam_today(datetime!(2026-11-30 16:59 UTC)),
            date!(2026 - 11 - 30)
        );
        assert_eq!(
            vietnam_today(datetime!(2026-11-30 17:00 UTC)),
            date!(2026 - 12 - 01)
        );
        assert_eq!(vietnam_date_of_ms(0), date!(1970 - 01 - 01));
    }
}
