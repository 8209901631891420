//! The probe's HTTP routes, under its prefix `/probe` (the kit nests them there).

use std::sync::Arc;

use agriportal_platform::Error;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::service::Notes;

/// `GET /probe/v1/tallies`.
pub fn router(notes: Arc<Notes>) -> Router {
    Router::new()
        .route("/v1/tallies", get(tallies))
        .with_state(notes)
}

async fn tallies(State(notes): State<Arc<Notes>>) -> Result<Json<serde_json::Value>, Error> {
    Ok(Json(
        serde_json::json!({ "tallies": notes.tallies().await? }),
    ))
}
