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

/// `agriportal.indicators.v1`: the reporting workflow of the plan's key indicators.
pub mod indicators {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.indicators.v1");

        /// A province started a report (no values: drafts stay in the indicators service).
        pub const REPORT_STARTED: crate::Topic<ReportStarted> =
            crate::Topic::new("indicators.report_started");
        /// A report was submitted for review (no values).
        pub const REPORT_SUBMITTED: crate::Topic<ReportSubmitted> =
            crate::Topic::new("indicators.report_submitted");
        /// A report was approved, with its values: they are public from now on.
        pub const REPORT_APPROVED: crate::Topic<ReportApproved> =
            crate::Topic::new("indicators.report_approved");
        /// A submitted report was returned to its province.
        pub const REPORT_RETURNED: crate::Topic<ReportReturned> =
            crate::Topic::new("indicators.report_returned");
        /// An approved report was reopened: its values are withdrawn until approved again.
        pub const REPORT_REOPENED: crate::Topic<ReportReopened> =
            crate::Topic::new("indicators.report_reopened");
        /// A target was set or removed.
        pub const TARGET_SET: crate::Topic<TargetSet> = crate::Topic::new("indicators.target_set");
        /// An indicator was added or edited (and each one once when the catalogue is seeded).
        pub const CATALOGUE_CHANGED: crate::Topic<CatalogueChanged> =
            crate::Topic::new("indicators.catalogue_changed");

        macro_rules! events {
            ($($event:ident),*) => {$(
                impl crate::Event for $event {
                    fn event_id(&self) -> &str {
                        &self.event_id
                    }
                }
            )*};
        }
        events!(
            ReportStarted,
            ReportSubmitted,
            ReportApproved,
            ReportReturned,
            ReportReopened,
            TargetSet,
            CatalogueChanged
        );
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
