-- Credentials: the public part in columns, the secret sealed (ChaCha20-Poly1305 with the
-- server's key, which is never stored here) in `sealed`.
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    username    TEXT,
    vault_id    TEXT,
    sealed      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
