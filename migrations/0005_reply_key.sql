-- The key that signs reply tokens when none is configured (security.reply_keys): made
-- once by the first replica to start, then read by every replica, so all of them sign
-- and check with the same key without any configuration.
CREATE TABLE reply_key (
    id         smallint PRIMARY KEY CHECK (id = 1),
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
