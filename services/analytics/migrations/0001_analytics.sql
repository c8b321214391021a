-- Analytics (services/analytics): pseudonymised contributions, the consent view, exclusions.
-- Applied with search_path = the analytics schema, after the common outbox/inbox migration.
--
-- No table holds a customer number: every row is keyed by `subject`, the customer's pseudonym
-- HMAC-SHA256(pseudonym_key, customer_id), computed by the service as messages arrive. Without
-- the key (a secret of the service, never stored here) no row can be linked to the register.

-- The latest consent state of each customer (consent.state.v1, stored without the customer
-- number), applied only when its version is higher than the one held. `allowed` holds the
-- analytics purposes allowed now (the state and the exclusions taken together). A subject with
-- no row, or a placeholder (version 0, no state), is not counted.
CREATE TABLE consent_view (
    subject     bytea PRIMARY KEY CHECK (octet_length(subject) = 32),
    version     bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    state       jsonb NULL,
    allowed     text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Exclusions: analytics' stops. An analytics withdrawal or objection (or a consent message
-- that could not be applied: fail_closed) excludes the subject at `consent_version`; only a
-- state with a higher version that allows analytics again deletes the exclusion.
CREATE TABLE exclusions (
    subject          bytea NOT NULL,
    purpose          text NOT NULL CHECK (purpose IN ('analytics', 'web_analytics')),
    consent_version  bigint NOT NULL CHECK (consent_version >= 0),
    reason           text NOT NULL
        CHECK (reason IN ('withdrawal', 'objection', 'erasure', 'fail_closed')),
    directive_id     uuid NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, purpose)
);

-- Row-level contributions: one per version of a customer's register entry seen, with only
-- its clear metadata (never an encrypted field). `changes` is how many register changes the
-- version adds to the previous one held (a snapshot can cover several commands). Deleted on
-- an analytics withdrawal or objection, on a refusal, and when the register forgets the
-- customer (a tombstone).
CREATE TABLE contributions (
    subject       bytea NOT NULL,
    version       bigint NOT NULL CHECK (version >= 1),
    month         date NOT NULL CHECK (extract(day FROM month) = 1),
    changes       integer NOT NULL CHECK (changes >= 1),
    registered    boolean NOT NULL,
    data_classes  text[] NOT NULL DEFAULT '{}',
    sources       text[] NOT NULL DEFAULT '{}',
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
