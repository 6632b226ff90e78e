//! resource-service's integration tests: the service started in-process on a random port.

mod access;
mod helpers;
mod pagination;
mod persons;
mod serving;
mod store;
