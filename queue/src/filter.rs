//! Which tasks an operator means: a [`TaskFilter`] (state view, kind, queue, payload text,
//! plus an application's own restriction) turned into a SQL condition with bound values.
//! Listing ([`crate::inspect`]) and bulk actions ([`crate::control`]) share it, so "act on
//! everything this filter matches" acts on exactly the tasks the list shows.

use crate::TaskState;

/// A task state as the console shows it: `queued` split into due and scheduled, and
/// "retrying" (queued again after a failed run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Every queued task, due or not.
    Queued,
    /// Queued and due now: waiting for a worker.
    Due,
    /// Queued with a `run_at` in the future (a schedule or a retry delay).
    Scheduled,
    /// Queued again after a failed run (has a last error).
    Retrying,
    Running,
    Done,
    Dead,
    DeliveryUnknown,
}

impl View {
    pub const ALL: [View; 8] = [
        View::Queued,
        View::Due,
        View::Scheduled,
        View::Retrying,
        View::Running,
        View::Done,
        View::Dead,
        View::DeliveryUnknown,
    ];

    /// The name in URLs and forms.
    pub const fn as_str(self) -> &'static str {
        match self {
            View::Queued => "queued",
            View::Due => "due",
            View::Scheduled => "scheduled",
            View::Retrying => "retrying",
            View::Running => "running",
            View::Done => "done",
            View::Dead => "dead",
            View::DeliveryUnknown => "delivery_unknown",
        }
    }

    pub fn parse(s: &str) -> Option<View> {
        View::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The condition (on `tasks` columns, `$now` the current time's placeholder).
    fn condition(self, now: &str) -> String {
        match self {
            View::Queued => "state = 'queued'".into(),
            View::Due => format!("state = 'queued' AND run_at <= {now}"),
            View::Scheduled => format!("state = 'queued' AND run_at > {now}"),
            View::Retrying => "state = 'queued' AND last_error IS NOT NULL".into(),
            View::Running => "state = 'running'".into(),
            View::Done => "state = 'done'".into(),
            View::Dead => "state = 'dead'".into(),
            View::DeliveryUnknown => format!("state = '{}'", TaskState::DeliveryUnknown.as_str()),
        }
    }
}

/// A value bound into a filter's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// An application's own condition on `tasks` (e.g. "tasks of the key's offices"): SQL from
/// constant fragments where each `$?` is the next bound value of `binds`. Never built
/// from input: values go through `binds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// What a task list or a bulk action covers. Every field narrows; the default is every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub view: Option<View>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Case-insensitive substring of the payload's JSON text.
    pub text: Option<String>,
    pub restriction: Option<Restriction>,
}

/// A condition with its binds, placeholders numbered from a given start.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    /// The next placeholder, binding `b`.
    pub fn mark(&mut self, first: usize, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", first + self.binds.len() - 1)
    }

    /// Binds every value, in order, onto `q`.
    pub fn bind_all<'q>(
        &self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        for b in &self.binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(s) => q.bind(s.clone()),
            };
        }
        q
    }
}

/// `%`, `_` and `\` taken literally in a LIKE pattern (with `ESCAPE '\'`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl TaskFilter {
    /// The condition (`1 = 1` when empty) with placeholders from `$first`, at `now_ms`.
    pub fn to_sql(&self, first: usize, now_ms: i64) -> Sql {
        let mut sql = Sql::default();
        let mut parts: Vec<String> = Vec::new();
        if let Some(v) = self.view {
            let now = if matches!(v, View::Due | View::Scheduled) {
                sql.mark(first, Bind::Int(now_ms))
            } else {
                String::new()
            };
            parts.push(v.condition(&now));
        }
        if let Some(k) = &self.kind {
            let m = sql.mark(first, Bind::Text(k.clone()));
            parts.push(format!("kind = {m}"));
        }
        if let Some(q) = &self.queue {
            let m = sql.mark(first, Bind::Text(q.clone()));
            parts.push(format!("queue = {m}"));
        }
        if let Some(t) = &self.text {
            let m = sql.mark(first, Bind::Text(like_escape(t)));
            parts.push(format!("LOWER(payload) LIKE {m} ESCAPE '\\'"));
        }
        if let Some(r) = &self.restriction {
            let mut text = String::new();
            let mut binds = r.binds.iter();
            let mut rest = r.sql.as_str();
            while let Some(at) = rest.find("$?") {
                text.push_str(&rest[..at]);
                let b = binds.next().cloned().unwrap_or(Bind::Int(0));
                text.push_str(&sql.mark(first, b));
                rest = &rest[at + 2..];
            }
            text.push_str(rest);
            parts.push(format!("({text})"));
        }
        sql.text = if parts.is_empty() {
            "1 = 1".into()
        } else {
            parts.join(" AND ")
        };
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_binds() {
        let f = TaskFilter {
            view: Some(View::Scheduled),
            kind: Some("send".into()),
            text: Some("50%_".into()),
            restriction: Some(Restriction {
                sql: "id IN ($?, $?)".into(),
                binds: vec![Bind::Int(7), Bind::Int(8)],
            }),
            ..TaskFilter::default()
        };
        let s = f.to_sql(3, 1000);
        assert_eq!(
            s.text,
            "state = 'queued' AND run_at > $3 AND kind = $4 AND \
             LOWER(payload) LIKE $5 ESCAPE '\\' AND (id IN ($6, $7))"
        );
        assert_eq!(
            s.binds,
            vec![
                Bind::Int(1000),
                Bind::Text("send".into()),
                Bind::Text("%50\\%\\_%".into()),
                Bind::Int(7),
                Bind::Int(8)
            ]
        );
        assert_eq!(TaskFilter::default().to_sql(1, 0).text, "1 = 1");
    }
}
