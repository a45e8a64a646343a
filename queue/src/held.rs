//! A pool connection that one of the worker's loops (its claims, its completion flusher)
//! keeps across its statements instead of checking one out for each.
//!
//! The origin's pool pings a PostgreSQL connection before every checkout, so that one the
//! server dropped is replaced instead of failing a request: a round trip, and a wake-up of
//! the server, per statement. A loop that writes back to back does not need that: it keeps
//! its connection, and after any error closes it, so its next statement checks out a fresh
//! (pinged) one. A cut connection thus costs the one statement that found it cut, which the
//! loop already treats as a failed write (claims are tried again next round, completions
//! with backoff).
//!
//! Small pools lend per statement as before: two connections kept by the worker would leave
//! too few for the handlers and the heartbeat.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

/// Pools with fewer connections than this are not kept from.
const KEEP_FROM: u32 = 4;

pub(crate) struct Held {
    pool: AnyPool,
    conn: Option<PoolConnection<Any>>,
    keep: bool,
}

impl Held {
    pub(crate) fn new(pool: &AnyPool) -> Held {
        Held {
            pool: pool.clone(),
            conn: None,
            keep: pool.options().get_max_connections() >= KEEP_FROM,
        }
    }

    /// The kept connection, checking one out first when there is none.
    pub(crate) async fn conn(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// After a statement on [`Held::conn`]: a failed one closes the connection (it may be
    /// the connection that failed); in a small pool it goes back either way.
    pub(crate) fn after(&mut self, ok: bool) {
        if !ok {
            if let Some(mut c) = self.conn.take() {
                c.close_on_drop();
            }
        } else if !self.keep {
            self.conn = None;
        }
    }

    /// Gives the connection back to the pool (the next [`Held::conn`] checks one out).
    pub(crate) fn release(&mut self) {
        self.conn = None;
    }
}
