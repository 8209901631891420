//! End-to-end tests of the `agriportal` binary's library and of the binary itself: the
//! partner → marketplace → bus → gateway flow, in embedded mode and on PostgreSQL + JetStream.

mod abuse;
mod authz;
mod binary;
mod deploy;
mod flow;
mod kit;
mod reconcile;
mod support;
