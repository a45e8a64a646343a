//! The autobot: the office's working hours (`hours`) and the task that answers inbound
//! messages with the RAG API when the office is closed (`reply`).

pub mod hours;
pub mod reply;
