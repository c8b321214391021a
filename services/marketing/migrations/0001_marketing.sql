-- Marketing (services/marketing): the consent view, the suppression list, audience exports.
-- Applied with search_path = the marketing schema, after the common outbox/inbox migration.
-- Nothing here is personal beyond the customer number: contact details stay in the register.

-- The latest consent state of each customer (consent.state.v1), applied only when its version
-- is higher than the one held. `allowed` is what every check reads: the marketing purposes
-- allowed now, the state and the suppressions below taken together. A customer with no row,
-- or with a placeholder (version 0, no state: a directive came first), is not contactable;
-- a tombstone forgets the state but keeps the version, so no stale state can return.
CREATE TABLE consent_view (
    customer_id  text PRIMARY KEY,
    version      bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    state        jsonb NULL,
    allowed      text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Audiences are selected by purpose.
CREATE INDEX consent_view_allowed_idx ON consent_view USING gin (allowed);

-- The suppression list: one row per customer and purpose (channel) a stop directive, or a
-- consent message that could not be applied (fail_closed), has stopped. A suppression fences
-- the purpose at `consent_version`: only a state with a higher version that allows the purpose
-- again (the customer consented anew, or lifted the objection) deletes it.
CREATE TABLE suppressions (
    customer_id      text NOT NULL,
    purpose          text NOT NULL CHECK (purpose IN (
                         'marketing_email', 'marketing_sms', 'marketing_post',
                         'marketing_phone', 'research')),
    consent_version  bigint NOT NULL CHECK (consent_version >= 0),
    reason           text NOT NULL
        CHECK (reason IN ('withdrawal', 'objection', 'erasure', 'fail_closed')),
    directive_id     uuid NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, purpose)
);

-- Every audience exported: the campaign (a code), the channel, and each customer with the
-- consent version they were selected under (Art 7(1) proof, and the fencing token a sender
-- compares with `may_contact` before each send).
CREATE TABLE audience_exports (
    export_id    uuid PRIMARY KEY,
    campaign     text NOT NULL,
    purpose      text NOT NULL,
    size         integer NOT NULL CHECK (size >= 0),
    actor        text NOT NULL,
    exported_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audience_members (
    export_id        uuid NOT NULL REFERENCES audience_exports (export_id) ON DELETE CASCADE,
    customer_id      text NOT NULL,
    consent_version  bigint NOT NULL,
    PRIMARY KEY (export_id, customer_id)
);

-- Erasure finds a customer's memberships.
CREATE INDEX audience_members_customer_idx ON audience_members (customer_id);
