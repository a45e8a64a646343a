//! Komora edge.
