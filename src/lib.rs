//! The `agriportal` binary's library: how services are assembled into one process (`up`) or
//! run alone (`serve --target`), plus the demo simulator and the benchmark. Tests use these
//! same entry points, bound to port 0.

pub mod app;
pub mod bench;
pub mod bench_read;
pub mod bench_scale;
pub mod cli;
pub mod client;
pub mod demo;
