//! Typed event subjects: each event's subject and payload type are declared once, next to its
//! contract (in this crate, beside the generated types), and producers and consumers both use
//! that declaration, so a subject string is never written twice.

use std::fmt;
use std::marker::PhantomData;

/// An event message: a protobuf message that carries its own unique id. Consumers record that
/// id in their inbox, so an event re-published under another bus message id is still known.
pub trait Event: prost::Message + Default + Send + Sync + 'static {
    /// The event's unique id (`event_id`, field 1 of every event message).
    fn event_id(&self) -> &str;
}

/// A subject on the bus and the event type published on it.
///
/// Subjects are relative, `<service>.<event>` (the bus puts the deployment's prefix in front);
/// the first part names the service that publishes them, which is how a consumer's filter
/// (`<service>.>`) is derived from the topics it handles.
pub struct Topic<M> {
    subject: &'static str,
    // `fn() -> M`: a topic only names the type; it holds no `M` and is `Send + Sync` whatever `M`.
    payload: PhantomData<fn() -> M>,
}

impl<M> Topic<M> {
    /// The topic of `subject` (`<service>.<event>`, lower case, one dot).
    pub const fn new(subject: &'static str) -> Self {
        Topic {
            subject,
            payload: PhantomData,
        }
    }

    /// The relative subject, `<service>.<event>`.
    pub const fn subject(&self) -> &'static str {
        self.subject
    }

    /// The publishing service's part of the subject.
    pub fn service(&self) -> &'static str {
        service_of(self.subject)
    }
}

impl<M: Event> Topic<M> {
    /// Decodes a payload published on this topic.
    pub fn decode(&self, payload: &[u8]) -> Result<M, prost::DecodeError> {
        M::decode(payload)
    }

    /// Encodes an event for this topic.
    pub fn encode(&self, event: &M) -> Vec<u8> {
        event.encode_to_vec()
    }
}

/// The service part (before the first dot) of a relative subject.
pub fn service_of(subject: &str) -> &str {
    subject.split('.').next().unwrap_or(subject)
}

// Manual impls: derives would require `M: Clone` etc., which a type marker does not need.
impl<M> Clone for Topic<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Topic<M> {}
impl<M> fmt::Debug for Topic<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_names_its_subject_and_service() {
        let topic = crate::marketplace::v1::SALES_RECORDED;
        assert_eq!(topic.subject(), "marketplace.sales_recorded");
        assert_eq!(topic.service(), "marketplace");
        let event = crate::marketplace::v1::SalesRecorded {
            event_id: "e1".into(),
            ..Default::default()
        };
        let decoded = topic.decode(&topic.encode(&event)).unwrap();
        assert_eq!(decoded.event_id(), "e1");
    }
}
