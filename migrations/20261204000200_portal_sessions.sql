-- Console sessions (API.md, "Console"). `POST /api/portal/sessions` stores a session whose
-- link token travels in the console URL's fragment; the console exchanges that token, once, for
-- a session token it keeps in the browser tab. Only SHA-256 digests of the two tokens are stored:
-- each is 256 random bits, so a fast digest is as safe as a slow hash, and it lets every console
-- request be checked against this table (revocation and expiry take effect at once, on every
-- ingest instance, with no cache to invalidate).
--
-- A session ends at `expires_at`, or when revoked (its row is deleted). Rows of ended sessions
-- are deleted when the organisation creates its next session.
CREATE TABLE portal_sessions (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    -- A read-only session may call only GET routes.
    read_only       boolean NOT NULL,
    -- SHA-256 of the link's token while the link is unused; NULL once exchanged (a link works once).
    link_digest     bytea UNIQUE,
    -- SHA-256 of the session token, once the link was exchanged.
    token_digest    bytea UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    exchanged_at    timestamptz,
    PRIMARY KEY (organization_id, id),
    CHECK (expires_at > created_at)
);
