//! The probe's logic: check a note, store it.

use std::sync::Arc;

use agriportal_platform::{Error, Result};

use crate::store::{Store, Tally};

/// Takes notes and reads tallies.
pub struct Notes {
    store: Arc<Store>,
    max_chars: usize,
}

impl Notes {
    /// Notes over `store`, refusing texts over `max_chars`.
    pub fn new(store: Arc<Store>, max_chars: usize) -> Self {
        Notes { store, max_chars }
    }

    /// Takes a note.
    pub async fn note(&self, text: &str) -> Result<String> {
        if text.trim().is_empty() {
            return Err(Error::invalid("text is empty; write the note"));
        }
        let chars = text.chars().count();
        if chars > self.max_chars {
            return Err(Error::invalid(format!(
                "text has {chars} characters; the limit is {} (--probe-max-note-chars)",
                self.max_chars
            )));
        }
        self.store.note(text).await
    }

    /// Every tally.
    pub async fn tallies(&self) -> Result<Vec<Tally>> {
        self.store.tallies().await
    }
}
