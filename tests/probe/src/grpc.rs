//! The tonic adapter of `agriportal.probe.v1.Probe`.

use std::sync::Arc;

use agriportal_proto::probe::v1 as pb;
use agriportal_proto::probe::v1::probe_server::{Probe, ProbeServer};
use tonic::{Request, Response, Status};

use crate::service::Notes;

/// The gRPC service, ready to mount.
pub fn server(notes: Arc<Notes>) -> ProbeServer<Adapter> {
    ProbeServer::new(Adapter { notes })
}

/// Delegates to [`Notes`].
pub struct Adapter {
    notes: Arc<Notes>,
}

#[tonic::async_trait]
impl Probe for Adapter {
    async fn note(
        &self,
        request: Request<pb::NoteRequest>,
    ) -> Result<Response<pb::NoteResponse>, Status> {
        let event_id = self.notes.note(&request.get_ref().text).await?;
        Ok(Response::new(pb::NoteResponse { event_id }))
    }
}
