//! The indicators service's settings (its reporting deadlines), names and limits.

use agriportal_platform::period::Deadlines;
use clap::Args;
use serde::Serialize;

/// Schema (PostgreSQL) or file stem (SQLite) of this service's store, and its target name.
pub const NAME: &str = "indicators";

/// Fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "agriportal.indicators.v1.Indicators";

/// Largest CSV file an import takes, in bytes.
pub const MAX_IMPORT_BYTES: usize = 2 * 1024 * 1024;

/// Most data lines an import takes (the header not counted).
pub const MAX_IMPORT_LINES: usize = 10_000;

/// Most values one SaveReport call takes.
pub const MAX_VALUES_PER_SAVE: usize = 1_000;

/// Longest comment on a value or a review, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// The indicators service's own settings.
#[derive(Args, Clone, Debug, Serialize)]
pub struct IndicatorsConfig {
    /// A month's report is due on this day of the next month (Vietnam time; the day counts).
    #[arg(
        long,
        env = "AGRIPORTAL_INDICATORS_MONTH_DEADLINE_DAY",
        default_value_t = 5,
        value_parser = clap::value_parser!(u8).range(1..=28)
    )]
    pub indicators_month_deadline_day: u8,

    /// A quarter's report is due this many days after the quarter ends.
    #[arg(
        long,
        env = "AGRIPORTAL_INDICATORS_QUARTER_DEADLINE_DAYS",
        default_value_t = 15
    )]
    pub indicators_quarter_deadline_days: u16,

    /// A year's report is due this many days after the year ends.
    #[arg(
        long,
        env = "AGRIPORTAL_INDICATORS_YEAR_DEADLINE_DAYS",
        default_value_t = 31
    )]
    pub indicators_year_deadline_days: u16,
}

impl IndicatorsConfig {
    /// The deadlines these settings set.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            month_day: self.indicators_month_deadline_day,
            quarter_days: self.indicators_quarter_deadline_days,
            year_days: self.indicators_year_deadline_days,
        }
    }
}

impl Default for IndicatorsConfig {
    fn default() -> Self {
        let d = Deadlines::default();
        IndicatorsConfig {
            indicators_month_deadline_day: d.month_day,
            indicators_quarter_deadline_days: d.quarter_days,
            indicators_year_deadline_days: d.year_days,
        }
    }
}
