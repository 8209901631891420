//! Event intake: the marketplace's events, folded into the rollups. The kit's consumer
//! (`agriportal_platform::consumer`) fetches, claims each event in the inbox, calls
//! [`Rollup::apply`] inside the same transaction, commits, then acks; this file only says
//! which topics the gateway reads and what each event changes.

use std::sync::Arc;

use agriportal_platform::bus::Message;
use agriportal_platform::consumer::{Decoded, Handler, Subscriptions};
use agriportal_platform::storage::Tx;
use agriportal_platform::{Error, Result};
use agriportal_proto::marketplace::v1 as mpb;
use async_trait::async_trait;

use crate::domain::Deltas;
use crate::snapshot::Snapshots;
use crate::store::GatewayStore;

/// Folds the marketplace's events into the rollups of a store.
pub struct Rollup {
    store: Arc<dyn GatewayStore>,
    snapshots: Option<Arc<Snapshots>>,
}

impl Rollup {
    /// The rollup of `store`.
    pub fn new(store: Arc<dyn GatewayStore>) -> Self {
        Rollup {
            store,
            snapshots: None,
        }
    }

    /// Tells `snapshots` of every commit that applied events, so the in-memory figures are
    /// rebuilt at once rather than at the next poll.
    pub fn notifying(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }
}

/// The topics the rollup reads, each turned into the deltas it makes. A payload that decodes
/// but would overflow or names an unknown partner is refused here, and so parked.
pub fn subscriptions() -> Subscriptions<Deltas> {
    Subscriptions::new()
        .on(mpb::SALES_RECORDED, |event| {
            let mut deltas = Deltas::default();
            deltas.add_sales(&event)?;
            Ok(deltas)
        })
        .on(mpb::HOUSEHOLDS_RECORDED, |event| {
            let mut deltas = Deltas::default();
            deltas.add_households(&event)?;
            Ok(deltas)
        })
}

/// Decodes one bus message as the consumer does (the fuzz target drives this).
pub fn decode(message: &Message) -> std::result::Result<Decoded<Deltas>, String> {
    subscriptions().decode(message)
}

#[async_trait]
impl Handler for Rollup {
    type Event = Deltas;

    fn subscriptions(&self) -> Subscriptions<Deltas> {
        subscriptions()
    }

    async fn apply(&self, tx: &mut Tx, events: &[&Decoded<Deltas>]) -> Result<()> {
        // One event is its own sum: no copy of its cells.
        if let [only] = events {
            return self.store.apply(tx, &only.event).await;
        }
        let mut total = Deltas::default();
        for event in events {
            // A batch whose sum would overflow is refused whole; the consumer then applies
            // its events one at a time, and parks the one that overflows alone.
            total.merge(&event.event).map_err(|overflow| {
                Error::overflow(format!("{overflow} (summing a batch of events)"))
            })?;
        }
        self.store.apply(tx, &total).await
    }

    fn committed(&self, _applied: usize) {
        if let Some(snapshots) = &self.snapshots {
            snapshots.changed();
        }
    }
}
