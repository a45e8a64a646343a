//! Messaging: inbound webhooks (`webhook`), the send task (`send`), and the platforms'
//! HTTP APIs (`platform`).

pub mod platform;
pub mod send;
pub mod webhook;
