//! The end-to-end suites, one module each, in one test binary: linking
//! fleetd, RocksDB and the harness once instead of once per suite is most
//! of a warm build. Every test still runs in its own process under
//! `cargo nextest`.

mod common;

mod access;
mod cluster;
mod config;
mod console;
mod cors;
mod devices;
mod fleetctl_generic;
mod fuzz_requests;
mod generic_clients;
mod iam;
mod meta;
mod metrics;
mod openapi;
mod projector_crash;
mod provisioning;
mod regions;
mod rest;
mod tls;
mod upgrade;
mod watch;
