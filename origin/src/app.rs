//! Builds the HTTP application: routes, shared state, and the listener it serves on.
//!
//! SKELETON — owned by the origin API work (issue 2).

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
}
