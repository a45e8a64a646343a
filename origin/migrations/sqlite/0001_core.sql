-- Core data model: offices, clients, conversations, messages, media, API keys.
-- Times are BIGINT Unix milliseconds (UTC) on both backends so they sort and index alike.

-- A physical office; its IANA timezone decides business hours (e.g. "Europe/Warsaw").
CREATE TABLE offices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A person writing to us on any platform. Phone and email are optional.
CREATE TABLE clients (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT,
    email TEXT,
    created_at BIGINT NOT NULL
);

-- Client search by substring of name, phone or email: an FTS5 trigram index kept in step
-- with `clients` by triggers (the SQLite counterpart of pg_trgm).
CREATE VIRTUAL TABLE clients_fts USING fts5(
    name, phone, email,
    content = 'clients', content_rowid = 'id', tokenize = 'trigram'
);
CREATE TRIGGER clients_fts_ai AFTER INSERT ON clients BEGIN
    INSERT INTO clients_fts (rowid, name, phone, email)
    VALUES (new.id, new.name, coalesce(new.phone, ''), coalesce(new.email, ''));
END;
CREATE TRIGGER clients_fts_ad AFTER DELETE ON clients BEGIN
    INSERT INTO clients_fts (clients_fts, rowid, name, phone, email)
    VALUES ('delete', old.id, old.name, coalesce(old.phone, ''), coalesce(old.email, ''));
END;
CREATE TRIGGER clients_fts_au AFTER UPDATE ON clients BEGIN
    INSERT INTO clients_fts (clients_fts, rowid, name, phone, email)
    VALUES ('delete', old.id, old.name, coalesce(old.phone, ''), coalesce(old.email, ''));
    INSERT INTO clients_fts (rowid, name, phone, email)
    VALUES (new.id, new.name, coalesce(new.phone, ''), coalesce(new.email, ''));
END;

-- One chat with one client on one platform. `last_message_*` and `unread_count` are kept
-- in the same transaction as every message insert / read, so the inbox is one indexed
-- query with no aggregate over messages. `last_activity_at` starts at creation time.
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL
        CHECK (platform IN ('telegram', 'whatsapp', 'instagram', 'facebook', 'email')),
    client_id BIGINT NOT NULL REFERENCES clients (id),
    office_id BIGINT REFERENCES offices (id),
    external_chat_id TEXT NOT NULL,
    last_message_id BIGINT,
    last_activity_at BIGINT NOT NULL,
    unread_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (platform, external_chat_id)
);
-- Inbox, all platforms, newest activity first, keyset on (last_activity_at, id).
CREATE INDEX conversations_inbox ON conversations (last_activity_at DESC, id DESC);
-- Inbox filtered by platform.
CREATE INDEX conversations_platform_inbox
    ON conversations (platform, last_activity_at DESC, id DESC);
CREATE INDEX conversations_client ON conversations (client_id);
CREATE INDEX conversations_office ON conversations (office_id);

-- One message; direction 'in' (from the client) or 'out' (from us).
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    text TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    read_at BIGINT,
    delivery_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (delivery_status IN ('pending', 'sent', 'delivered', 'read', 'failed', 'received'))
);
-- Messages of a conversation by time (offset and keyset pages).
CREATE INDEX messages_conversation_time
    ON messages (conversation_id, created_at DESC, id DESC);
-- Unread inbound messages of a conversation (marking read; recounting unread).
CREATE INDEX messages_unread ON messages (conversation_id)
    WHERE read_at IS NULL AND direction = 'in';

-- Content-addressed media: stored once per sha256 under `object_key` in the object store.
CREATE TABLE media (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    original_name TEXT,
    object_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Which media a message carries, in order.
CREATE TABLE message_media (
    message_id BIGINT NOT NULL REFERENCES messages (id),
    media_id BIGINT NOT NULL REFERENCES media (id),
    position BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, media_id)
);
CREATE INDEX message_media_media ON message_media (media_id);

-- API keys: only the sha256 (hex) of the bearer token is stored.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
