"""The control plane's schema, as numbered migrations in portable SQL.

Each entry is applied once, in order, and recorded by the store that runs it;
an entry is never edited after it shipped (add a new one). The SQL keeps to
what SQLite and PostgreSQL both accept (``DOUBLE PRECISION``, ``BIGINT``,
``TEXT``), so every store implementation runs the same migrations, except where
the two differ (``relay.pg_store._DIALECT_TEXT`` gives PostgreSQL its own text).
A migration in ``REBUILDS`` rebuilds a table, as SQLite alters a constraint:
SQLite runs it with foreign keys off (a pragma that cannot change inside a
transaction) and checks them all before it commits.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    """,
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL UNIQUE,
        models TEXT,
        expires_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX api_keys_cluster ON api_keys (cluster_id);
    CREATE TABLE nodes (
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        node_id TEXT NOT NULL,
        name TEXT NOT NULL,
        models TEXT NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (cluster_id, node_id)
    );
    CREATE TABLE usage_records (
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        request_id TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        day TEXT NOT NULL,
        key_id TEXT,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        route TEXT NOT NULL,
        node TEXT NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        ttfb_ms DOUBLE PRECISION,
        duration_ms DOUBLE PRECISION NOT NULL,
        error TEXT,
        PRIMARY KEY (cluster_id, request_id)
    );
    CREATE INDEX usage_records_time ON usage_records (cluster_id, time_ms);
    """,
    """
    CREATE TABLE node_keys (
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        node_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        bound_at DOUBLE PRECISION NOT NULL,
        removed_at DOUBLE PRECISION,
        PRIMARY KEY (cluster_id, node_id, fingerprint)
    );
    CREATE INDEX node_keys_fingerprint ON node_keys (cluster_id, fingerprint);
    """,
    """
    ALTER TABLE clusters ADD COLUMN ca_id TEXT;
    ALTER TABLE clusters ADD COLUMN ca_key TEXT;
    CREATE INDEX clusters_ca ON clusters (ca_id);
    """,
    """
    CREATE TABLE previous_tokens (
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        token_hash TEXT NOT NULL,
        ca_id TEXT,
        ca_key TEXT,
        retired_at DOUBLE PRECISION NOT NULL,
        accepted_until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (cluster_id, token_hash)
    );
    CREATE INDEX previous_tokens_hash ON previous_tokens (token_hash);
    CREATE INDEX previous_tokens_ca ON previous_tokens (ca_id);
    """,
    # Users who sign in (relay/users.py), what they own, their sessions and tokens.
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        subject TEXT NOT NULL,
        name TEXT NOT NULL,
        email TEXT,
        role TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        disabled_at DOUBLE PRECISION,
        UNIQUE (provider, subject)
    );
    CREATE TABLE cluster_members (
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        user_id TEXT NOT NULL REFERENCES users (id),
        role TEXT NOT NULL,
        added_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (cluster_id, user_id)
    );
    CREATE INDEX cluster_members_user ON cluster_members (user_id);
    CREATE TABLE invitations (
        code_hash TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL REFERENCES clusters (id),
        created_by TEXT NOT NULL REFERENCES users (id),
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        used_by TEXT,
        used_at DOUBLE PRECISION
    );
    ALTER TABLE api_keys ADD COLUMN user_id TEXT REFERENCES users (id);
    CREATE INDEX api_keys_user ON api_keys (user_id);
    CREATE TABLE user_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX user_tokens_user ON user_tokens (user_id);
    CREATE TABLE user_sessions (
        id_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id),
        csrf TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX user_sessions_user ON user_sessions (user_id);
    """,
    # Sign-ins waiting for their callback, so that any relay sharing the store finishes them.
    """
    CREATE TABLE pending_signins (
        cookie_hash TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        state TEXT NOT NULL,
        nonce TEXT NOT NULL,
        verifier TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX pending_signins_created ON pending_signins (created_at);
    """,
    # Cluster names unique per owner (a taken name told anyone that it exists), and among
    # the clusters nobody owns (made with the admin token or the CLI).
    """
    CREATE TABLE clusters_rebuilt (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        ca_id TEXT,
        ca_key TEXT,
        owner_id TEXT REFERENCES users (id)
    );
    INSERT INTO clusters_rebuilt (id, name, token_hash, created_at, ca_id, ca_key, owner_id)
        SELECT id, name, token_hash, created_at, ca_id, ca_key,
            (SELECT m.user_id FROM cluster_members m
             WHERE m.cluster_id = clusters.id AND m.role = 'owner')
        FROM clusters;
    DROP TABLE clusters;
    ALTER TABLE clusters_rebuilt RENAME TO clusters;
    CREATE INDEX clusters_ca ON clusters (ca_id);
    CREATE UNIQUE INDEX clusters_owner_name ON clusters (owner_id, name)
        WHERE owner_id IS NOT NULL;
    CREATE UNIQUE INDEX clusters_unowned_name ON clusters (name) WHERE owner_id IS NULL;
    """,
)

REBUILDS = frozenset({8})
"""Migrations (1-based) that rebuild a table (see the module docstring)."""

CLUSTER_NAMES_PG = """
    ALTER TABLE clusters DROP CONSTRAINT IF EXISTS clusters_name_key;
    ALTER TABLE clusters ADD COLUMN owner_id TEXT REFERENCES users (id);
    UPDATE clusters SET owner_id = (SELECT m.user_id FROM cluster_members m
        WHERE m.cluster_id = clusters.id AND m.role = 'owner');
    CREATE UNIQUE INDEX clusters_owner_name ON clusters (owner_id, name)
        WHERE owner_id IS NOT NULL;
    CREATE UNIQUE INDEX clusters_unowned_name ON clusters (name) WHERE owner_id IS NULL;
"""
"""Migration 8 on PostgreSQL, which drops a constraint in place."""
