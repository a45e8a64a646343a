//! `komora-origin seed`: a realistic data set for demos and benchmarks — offices, clients,
//! conversations on every platform, messages both ways, unread counts and shared media.
//!
//! Speed matters (the benchmark seeds 100k × 20): rows are generated in memory with their
//! ids assigned here (continuing after the current maximum) and written with multi-row
//! INSERTs, one transaction per batch of conversations. PostgreSQL identity sequences are
//! moved past the new ids at the end.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{AnyConnection, Row};

use crate::db::{now_ms, query, query_built, Backend, Db};
use crate::media::store::MediaStore;
use crate::store::PLATFORMS;

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Conversations to create (each with its own client).
    #[arg(long, default_value_t = 1000)]
    pub conversations: u64,
    /// Messages per conversation.
    #[arg(long, default_value_t = 20)]
    pub messages: u64,
    /// Random seed, for a reproducible data set.
    #[arg(long, default_value_t = 42)]
    pub rng_seed: u64,
}

/// Conversations written per transaction.
const BATCH: u64 = 500;
/// Bound parameters per statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;

const FIRST: &[&str] = &[
    "Anna", "Olena", "Marek", "Ivan", "Sofia", "Piotr", "Maria", "Taras", "Ewa", "Andrii",
    "Kateryna", "Tomasz", "Iryna", "Jakub", "Natalia", "Dmytro", "Zofia", "Oksana",
];
const LAST: &[&str] = &[
    "Kowalska",
    "Shevchenko",
    "Nowak",
    "Bondarenko",
    "Wiśniewski",
    "Kovalenko",
    "Wójcik",
    "Tkachenko",
    "Kamiński",
    "Kravchenko",
    "Lewandowska",
    "Oliinyk",
    "Zielińska",
    "Melnyk",
];
const INBOUND: &[&str] = &[
    "Hello! Is the apartment on Main Street still available?",
    "Can I book a viewing for Saturday morning?",
    "What documents do I need to bring?",
    "Thanks, see you tomorrow.",
    "Could you send me more photos of the kitchen?",
    "Is the price negotiable?",
    "I will be 10 minutes late, sorry.",
    "Do you also work on Sundays?",
];
const OUTBOUND: &[&str] = &[
    "Good afternoon! Yes, it is still available.",
    "Of course, Saturday at 10:00 works for us.",
    "Please bring your passport and a proof of income.",
    "Here are the photos you asked for.",
    "We are open Monday to Saturday, 9:00 to 18:00.",
    "Thank you for your message, a manager will reply shortly.",
];

/// A 1×1 transparent PNG: real image bytes for the demo attachments.
const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// A value bound into a generated multi-row INSERT.
enum V {
    I(i64),
    OI(Option<i64>),
    S(String),
    OS(Option<String>),
}

/// `INSERT INTO table (cols) VALUES (...), (...)`, split to respect [`MAX_PARAMS`].
async fn insert_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<V>>,
) -> Result<(), sqlx::Error> {
    let per_stmt = (MAX_PARAMS / cols.len()).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<V>> = rows.by_ref().take(per_stmt).collect();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
        let mut n = 0;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..cols.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                // SQLite resolves each `$N` by a linear search of the names seen so far
                // (quadratic on 30k parameters); anonymous `?` is positional and free.
                n += 1;
                match backend {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${n}")),
                }
            }
            sql.push(')');
        }
        let mut q = query_built(sql);
        for row in chunk {
            for v in row {
                q = match v {
                    V::I(x) => q.bind(x),
                    V::OI(x) => q.bind(x),
                    V::S(x) => q.bind(x),
                    V::OS(x) => q.bind(x),
                };
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn max_id(db: &Db, table: &str) -> Result<i64, sqlx::Error> {
    let row = query_built(format!("SELECT coalesce(max(id), 0) FROM {table}"))
        .fetch_one(&db.pool)
        .await?;
    row.try_get(0)
}

/// Stores the demo attachments (idempotent) and returns their media ids.
async fn seed_media(db: &Db, store: &MediaStore) -> anyhow::Result<Vec<i64>> {
    use object_store::ObjectStoreExt;
    use sha2::{Digest, Sha256};
    let mut items: Vec<(Vec<u8>, &str, String)> =
        vec![(PNG_1X1.to_vec(), "image/png", "pixel.png".into())];
    for i in 1..=4 {
        let text = format!("Contract draft #{i}\nTerms and conditions follow.\n");
        items.push((text.into_bytes(), "text/plain", format!("contract-{i}.txt")));
    }
    let mut ids = Vec::new();
    for (bytes, ctype, name) in items {
        let sha = hex::encode(Sha256::digest(&bytes));
        let key = object_store::path::Path::from(crate::store::media::object_key(&sha));
        let size = bytes.len() as i64;
        store.put(&key, bytes.into()).await?;
        let (row, _) = crate::store::media::insert(db, &sha, size, ctype, Some(&name)).await?;
        ids.push(row.id);
    }
    Ok(ids)
}

/// Seeds `args.conversations` conversations of `args.messages` messages; returns a summary.
pub async fn seed(db: &Db, store: &MediaStore, args: &SeedArgs) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(args.rng_seed);
    let media_ids = seed_media(db, store).await?;

    let mut offices = Vec::new();
    {
        let mut conn = db.pool.acquire().await?;
        for (name, tz) in [
            ("Warsaw", "Europe/Warsaw"),
            ("Kyiv", "Europe/Kyiv"),
            ("Lisbon", "Europe/Lisbon"),
        ] {
            offices.push(crate::store::clients::create_office(&mut conn, name, tz).await?);
        }
    }

    let mut client_id = max_id(db, "clients").await?;
    let mut conv_id = max_id(db, "conversations").await?;
    let mut msg_id = max_id(db, "messages").await?;
    let now = now_ms();
    let ninety_days: i64 = 90 * 24 * 3600 * 1000;
    let per_conv = args.messages as i64;

    let mut done: u64 = 0;
    while done < args.conversations {
        let n = BATCH.min(args.conversations - done);
        let mut clients = Vec::new();
        let mut convs = Vec::new();
        let mut msgs = Vec::new();
        let mut links = Vec::new();
        for _ in 0..n {
            client_id += 1;
            conv_id += 1;
            let first = FIRST[rng.gen_range(0..FIRST.len())];
            let last = LAST[rng.gen_range(0..LAST.len())];
            let phone = rng
                .gen_bool(0.8)
                .then(|| format!("+48{:09}", rng.gen_range(100_000_000..999_999_999u32)));
            let email = rng.gen_bool(0.5).then(|| {
                format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    client_id,
                    rng.gen_range(0..100)
                )
            });
            let created = now - ninety_days - rng.gen_range(0..ninety_days);
            clients.push(vec![
                V::I(client_id),
                V::S(format!("{first} {last}")),
                V::OS(phone),
                V::OS(email),
                V::I(created),
            ]);
            let platform = PLATFORMS[rng.gen_range(0..PLATFORMS.len())];
            let office = offices[rng.gen_range(0..offices.len())];
            // Last activity spread over 90 days; messages step back a few minutes each.
            let last_at = now - rng.gen_range(0..ninety_days);
            let unread = if rng.gen_bool(0.3) {
                rng.gen_range(1..=3).min(per_conv)
            } else {
                0
            };
            let mut t = last_at - per_conv * 600_000;
            let first_msg = msg_id + 1;
            for k in 0..per_conv {
                msg_id += 1;
                t += rng.gen_range(1..600_000);
                let is_unread = k >= per_conv - unread;
                let inbound = is_unread || rng.gen_bool(0.5);
                let (dir, text, status, read_at) = if inbound {
                    let text = INBOUND[rng.gen_range(0..INBOUND.len())];
                    ("in", text, "received", (!is_unread).then_some(t + 60_000))
                } else {
                    let text = OUTBOUND[rng.gen_range(0..OUTBOUND.len())];
                    ("out", text, "delivered", None)
                };
                msgs.push(vec![
                    V::I(msg_id),
                    V::I(conv_id),
                    V::S(dir.into()),
                    V::S(text.into()),
                    V::I(t),
                    V::OI(read_at),
                    V::S(status.into()),
                ]);
                if rng.gen_bool(0.05) {
                    let m = media_ids[rng.gen_range(0..media_ids.len())];
                    links.push(vec![V::I(msg_id), V::I(m), V::I(0)]);
                }
            }
            let last_msg = (per_conv > 0).then_some(msg_id);
            let activity = if per_conv > 0 { t } else { last_at };
            convs.push(vec![
                V::I(conv_id),
                V::S(platform.into()),
                V::I(client_id),
                V::OI(Some(office)),
                V::S(format!("{platform}-{conv_id}-{first_msg}")),
                V::OI(last_msg),
                V::I(activity),
                V::I(unread),
                V::I(created),
            ]);
        }
        let mut tx = db.pool.begin().await?;
        insert_rows(
            &mut tx,
            db.backend,
            "clients",
            &["id", "name", "phone", "email", "created_at"],
            clients,
        )
        .await?;
        insert_rows(
            &mut tx,
            db.backend,
            "conversations",
            &[
                "id",
                "platform",
                "client_id",
                "office_id",
                "external_chat_id",
                "last_message_id",
                "last_activity_at",
                "unread_count",
                "created_at",
            ],
            convs,
        )
        .await?;
        insert_rows(
            &mut tx,
            db.backend,
            "messages",
            &[
                "id",
                "conversation_id",
                "direction",
                "text",
                "created_at",
                "read_at",
                "delivery_status",
            ],
            msgs,
        )
        .await?;
        insert_rows(
            &mut tx,
            db.backend,
            "message_media",
            &["message_id", "media_id", "position"],
            links,
        )
        .await?;
        tx.commit().await?;
        done += n;
    }

    if db.backend == Backend::Postgres {
        // Explicit ids do not move identity sequences; later inserts would collide.
        for table in ["clients", "conversations", "messages"] {
            query_built(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 (SELECT coalesce(max(id), 1) FROM {table}))"
            ))
            .execute(&db.pool)
            .await?;
        }
        query("ANALYZE").execute(&db.pool).await?;
    } else {
        query("ANALYZE").execute(&db.pool).await?;
    }
    Ok(format!(
        "seeded {} conversations × {} messages in {:.1}s",
        args.conversations,
        args.messages,
        started.elapsed().as_secs_f64()
    ))
}
