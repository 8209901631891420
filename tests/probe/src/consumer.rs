//! The probe's consumer: its own `probe.noted` events, tallied.

use std::sync::Arc;

use agriportal_platform::consumer::{Decoded, Handler, Subscriptions};
use agriportal_platform::storage::Tx;
use agriportal_platform::Result;
use agriportal_proto::probe::v1 as pb;
use async_trait::async_trait;

use crate::store::Store;

/// Tallies notes.
pub struct Tally {
    store: Arc<Store>,
}

impl Tally {
    /// The tally of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Tally { store }
    }
}

#[async_trait]
impl Handler for Tally {
    type Event = String;

    fn subscriptions(&self) -> Subscriptions<String> {
        Subscriptions::new().on(pb::NOTED, |event| Ok(event.text))
    }

    async fn apply(&self, tx: &mut Tx, events: &[&Decoded<String>]) -> Result<()> {
        let texts: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        self.store.tally(tx, &texts).await
    }
}
