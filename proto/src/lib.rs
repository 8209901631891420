//! Generated protobuf types, gRPC clients and servers of every agriportal service.
//!
//! One module per protobuf package (`agriportal.<service>.v1`); the `.proto` files in this crate
//! are the contracts between services, partners and dashboards.

#![allow(clippy::all, missing_docs)]

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
    }
}

/// `agriportal.gateway.v1`: national dashboard figures.
pub mod gateway {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agriportal.gateway.v1");
    }
}

/// Encoded `FileDescriptorSet` of every package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agriportal_descriptor");
