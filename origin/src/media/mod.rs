//! Content-addressed media: the object store behind it (`store`), streaming uploads that
//! hash as they go (`upload`), signed, expiring URLs (`signing`), and cache-friendly, safe
//! serving with ranges and conditional requests (`serve`).

pub mod download;
pub mod serve;
pub mod signing;
pub mod store;
pub mod upload;
