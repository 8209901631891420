//! The probe's store: notes with their events (outbox), tallies, blocked words.

use agriportal_platform::outbox::{self, Outbox, OutboxEvent};
use agriportal_platform::storage::{Database, Migrations, Tx};
use agriportal_platform::{with_db, with_tx, Error, Result};
use agriportal_proto::probe::v1 as pb;

/// The probe's migrations; the kit appends its own tables.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
}

/// The probe's store.
pub struct Store {
    db: Database,
    outbox: Outbox,
}

/// A tally row.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
pub struct Tally {
    /// The note's text.
    pub text: String,
    /// How many times it was noted.
    pub count: i64,
}

impl Store {
    /// The store on the kit's opened database.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Store { db, outbox }
    }

    /// Stores a note and its event in one transaction.
    pub async fn note(&self, text: &str) -> Result<String> {
        let event = pb::Noted {
            event_id: uuid::Uuid::now_v7().to_string(),
            text: text.to_string(),
        };
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("INSERT INTO notes (event_id, text) VALUES ($1, $2)")
                .bind(&event.event_id)
                .bind(text)
                .execute(&mut *conn)
                .await?;
        });
        outbox::enqueue(&mut tx, &OutboxEvent::new(&pb::NOTED, &event)).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(event.event_id)
    }

    /// Counts `texts` inside the consumer's transaction; a blocked word fails the whole apply,
    /// and the word `overflow` stands for figures that can never be added (a permanent error,
    /// parked at once).
    pub async fn tally(&self, tx: &mut Tx, texts: &[&str]) -> Result<()> {
        for text in texts {
            if *text == "overflow" {
                return Err(Error::overflow("the probe's `overflow` note"));
            }
            let blocked: Option<String> = with_tx!(tx, |conn| {
                sqlx::query_scalar("SELECT word FROM blocked_words WHERE word = $1")
                    .bind(text)
                    .fetch_optional(&mut *conn)
                    .await?
            });
            if let Some(word) = blocked {
                return Err(Error::invalid(format!("the word `{word}` is blocked")));
            }
            with_tx!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO tallies (text, count) VALUES ($1, 1) \
                     ON CONFLICT (text) DO UPDATE SET count = tallies.count + 1",
                )
                .bind(text)
                .execute(&mut *conn)
                .await?;
            });
        }
        Ok(())
    }

    /// Every tally.
    pub async fn tallies(&self) -> Result<Vec<Tally>> {
        Ok(with_db!(&self.db.pool, |pool| {
            sqlx::query_as("SELECT text, count FROM tallies ORDER BY text")
                .fetch_all(pool)
                .await?
        }))
    }
}
