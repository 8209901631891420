//! Generated protobuf types, gRPC clients and servers of every agriportal service, and the
//! typed subjects of the events they publish.
//!
//! One module per protobuf package (`agriportal.<service>.v1`); the `.proto` files in this crate
//! are the contracts between services, partners and dashboards. A service's events are declared
//! in its package module as [`Topic`] constants, so producer and consumer share one declaration.

#![allow(clippy::all, missing_docs)]

pub mod topic;

pub use topic::{Event, Topic};

/// `agriportal.common.v1`: types shared by every service.
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.common.v1");
    }
}

/// `agriportal.marketplace.v1`: partner ingest and the events it emits.
pub mod marketplace {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.marketplace.v1");

        /// The sales lines a batch added or corrected (one event per batch that changed any).
        pub const SALES_RECORDED: crate::Topic<SalesRecorded> =
            crate::Topic::new("marketplace.sales_recorded");
        /// The households a batch added or changed (one event per batch that changed any).
        pub const HOUSEHOLDS_RECORDED: crate::Topic<HouseholdsRecorded> =
            crate::Topic::new("marketplace.households_recorded");

        impl crate::Event for SalesRecorded {
            fn event_id(&self) -> &str {
                &self.event_id
            }
        }
        impl crate::Event for HouseholdsRecorded {
            fn event_id(&self) -> &str {
                &self.event_id
            }
        }
    }
}

/// `agriportal.gateway.v1`: national dashboard figures.
pub mod gateway {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.gateway.v1");
    }
}

/// `agriportal.probe.v1`: the kit's probe, a service that exists only in the tests.
pub mod probe {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.probe.v1");

        /// A note was taken.
        pub const NOTED: crate::Topic<Noted> = crate::Topic::new("probe.noted");

        impl crate::Event for Noted {
            fn event_id(&self) -> &str {
                &self.event_id
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of every package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agriportal_descriptor");
