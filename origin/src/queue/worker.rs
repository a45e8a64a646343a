//! The engine's worker (`komora_queue::worker`) on the origin's [`TaskContext`]: it runs the
//! built-in kinds of [`super::tasks::builtin_handlers`].

pub use komora_queue::worker::*;

use super::tasks::TaskContext;

/// The origin's worker.
pub type Worker = komora_queue::Worker<TaskContext>;
