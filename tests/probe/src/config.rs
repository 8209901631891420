//! The probe's settings and names.

use clap::Args;
use serde::Serialize;

/// The probe's own settings: one flag, to show that a service's settings reach the command
/// line and `agriportal targets` with nothing added outside its crate.
#[derive(Args, Clone, Debug, Serialize)]
pub struct ProbeConfig {
    /// Longest note the probe takes, in characters.
    #[arg(long, env = "AGRIPORTAL_PROBE_MAX_NOTE_CHARS", default_value_t = 200)]
    pub probe_max_note_chars: usize,
}

/// Target, schema and SQLite file name.
pub const NAME: &str = "probe";

/// The durable of the probe's consumer.
pub const CONSUMER: &str = "probe-tally";
