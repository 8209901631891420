//! End-to-end tests of the `agriportal` binary's library and of the binary itself: the
//! partner → marketplace → bus → gateway flow, in embedded mode and on PostgreSQL + JetStream.

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod authz;
mod binary;
mod browser;
mod communes;
mod connections;
mod db_roles;
mod deploy;
mod flow;
mod gateway_indicators;
mod household_facts;
mod indicators;
mod kit;
mod nats_security;
mod openapi;
mod postgres_tls;
mod reconcile;
mod support;
mod tls;
mod web;
