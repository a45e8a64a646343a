//! Builds the HTTP application: routes, shared state, and the listener it serves on.
