-- Consent and objections (services/consent). Applied with search_path = the consent schema,
-- after the common outbox/inbox migration. No personal data is stored here: the customer is
-- named by the customer number only, and an objection's free-text grounds are not kept.

-- One row per customer: the current state (a projection of consent_events) and the consent
-- version, bumped by every change. The writer locks this row `FOR UPDATE` before it appends
-- history, so one customer's changes are serialised and versions never collide.
--   purposes:   {"<purpose>": {"status", "version", "notice_version", "photo_ids",
--                "changed_at"}} for every purpose with a record;
--   objections: {"<kind>": "<occurred_at>"} for every active objection (a suppression);
--   holds:      {"<command event_id>": "<reason>"} for every command that failed (fail closed).
CREATE TABLE consent_current (
    customer_id  text PRIMARY KEY,
    version      bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    purposes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    objections   jsonb NOT NULL DEFAULT '{}'::jsonb,
    holds        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE consent_current SET (fillfactor = 80);

-- The history (Art 7(1) proof): one row per change, append-only, one version per customer
-- change. `record` is the history event exactly as published to consent.events.v1.
CREATE TABLE consent_events (
    customer_id  text NOT NULL,
    version      bigint NOT NULL CHECK (version >= 1),
    event_id     uuid NOT NULL UNIQUE,
    command_id   uuid NOT NULL,
    kind         text NOT NULL
        CHECK (kind IN ('ConsentRecorded', 'ObjectionRecorded', 'ObjectionLiftedRecorded',
                        'ConsentHeld')),
    purpose      text NULL,
    objection    text NULL,
    status       text NULL,
    record       jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, version)
);

-- Append-only: history is never rewritten.
CREATE FUNCTION consent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_events is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER consent_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only();

-- The notices (consent wordings) seen, with the hash of their exact text: the first capture
-- that names a notice with a hash registers it; a capture without a hash takes it from here.
CREATE TABLE notices (
    notice_id      text NOT NULL,
    version        text NOT NULL,
    language       text NOT NULL,
    sha256         text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notice_id, version, language)
);

-- Stop directives published to privacy.directives.v1, and when they were fully applied: when
-- every expected service answered. `committed_at` is taken in the writing transaction
-- (clock_timestamp(), just before its commit); `latency_ms` is fully_applied_at - committed_at.
CREATE TABLE directives (
    directive_id       uuid PRIMARY KEY,
    customer_id        text NOT NULL,
    consent_version    bigint NOT NULL CHECK (consent_version >= 1),
    reason             text NOT NULL,
    purposes           text[] NOT NULL,
    expected_services  text[] NOT NULL,
    committed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    fully_applied_at   timestamptz NULL,
    latency_ms         bigint NULL CHECK (latency_ms IS NULL OR latency_ms >= 0)
);

CREATE INDEX directives_customer_idx ON directives (customer_id, consent_version);
CREATE INDEX directives_pending_idx ON directives (committed_at) WHERE fully_applied_at IS NULL;

-- The answers (ProcessingStopped), one per directive and service (a repeated answer is a no-op).
CREATE TABLE directive_acks (
    directive_id     uuid NOT NULL REFERENCES directives (directive_id),
    service          text NOT NULL,
    consent_version  bigint NOT NULL,
    ack_event_id     uuid NOT NULL,
    acked_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (directive_id, service)
);
