//! Content-addressed media: the object store behind it (`store`), streaming uploads that
//! hash as they go (`upload`), and cache-friendly, safe serving with ranges (`serve`).

pub mod serve;
pub mod store;
pub mod upload;
