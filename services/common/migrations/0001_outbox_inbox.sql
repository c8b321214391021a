-- The transactional outbox and the inbox every service has (services/common/outbox.py, inbox.py).
-- Applied by migrate() before the service's own migrations, with search_path = the schema.

-- Events waiting to be published to Kafka. A row is written in the same transaction as the
-- domain change it announces, published by the one active relay, and deleted once the broker
-- has acknowledged it (so no personal data lingers here). Column meanings follow the Debezium
-- outbox router (aggregate type, aggregate id = key, type, payload) to keep CDC an option.
CREATE TABLE outbox (
    event_id        uuid PRIMARY KEY,
    topic           text NOT NULL,
    key             text,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload         bytea NOT NULL,
    aggregate_type  text NOT NULL DEFAULT 'customer',
    event_type      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    position        bigserial NOT NULL
);

-- The relay reads in position order.
CREATE INDEX outbox_position_idx ON outbox (position);

-- Events this service's consumers have applied, for deduplication (at-least-once delivery).
CREATE TABLE inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Pruning deletes by age.
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
