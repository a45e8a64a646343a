-- Access control: every API key has a role; an operator key sees only its offices.
-- Keys may expire, and record when they were last used.

-- 'admin' (everything, including /admin/*) or 'operator' (only the offices listed in
-- api_key_offices). Keys created before roles existed keep what is_admin said.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'operator'
    CHECK (role IN ('admin', 'operator'));
UPDATE api_keys SET role = 'admin' WHERE is_admin;
ALTER TABLE api_keys DROP COLUMN is_admin;
-- Unix ms after which the key no longer authenticates; NULL = never expires.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
-- Unix ms of the last authenticated request (kept to about a minute).
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;

-- The offices an operator key may see.
CREATE TABLE api_key_offices (
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id),
    office_id BIGINT NOT NULL REFERENCES offices (id),
    PRIMARY KEY (api_key_id, office_id)
);

-- Media a key uploaded (or re-uploaded: it had the bytes): an operator may attach those,
-- and media already on its offices' messages, but not another office's by id.
CREATE TABLE media_grants (
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id),
    media_id BIGINT NOT NULL REFERENCES media (id),
    PRIMARY KEY (api_key_id, media_id)
);

-- An operator's inbox: its offices' conversations by last activity.
CREATE INDEX conversations_office_inbox
    ON conversations (office_id, last_activity_at DESC, id DESC);
