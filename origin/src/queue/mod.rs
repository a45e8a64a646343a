//! Durable priority task queues in the origin's own database, and the worker that runs them.
//!
//! (Skeleton: owned by the queue work; the API calls [`enqueue`] inside its own transaction.)

pub mod config;
