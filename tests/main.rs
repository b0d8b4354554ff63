//! End-to-end tests: a real server on 127.0.0.1:0 with a temporary database, driven through the
//! Rust SDK over a real socket.

mod harness;

mod admin;
mod auth;
mod chaos;
mod cli;
mod cluster;
mod estimates;
mod faults;
mod isolation;
mod jobs;
mod limits;
mod manifests;
mod media;
mod observability;
mod postgres;
mod providers;
mod reliability;
mod rules;
mod store;
mod transport;
