//! Komora edge: a pingora caching proxy for the CRM media origin, with a memory + disk cache.

pub mod admin;
pub mod config;
pub mod eviction;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod service;
pub mod storage;
