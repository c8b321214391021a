-- Photos (services/photos): the photo-consent view, its stops, and the photo metadata table
-- the upload pipeline will fill. Applied with search_path = the photos schema, after the
-- common outbox/inbox migration.

-- The latest consent state of each customer (consent.state.v1), applied only when its version
-- is higher than the one held. `allowed` holds the photo purposes allowed now for photos in
-- general (a consent limited to some photos allows none in general: new photos are refused).
-- A customer with no row, or a placeholder (version 0, no state), may not store photos.
CREATE TABLE photo_consent (
    customer_id  text PRIMARY KEY,
    version      bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    state        jsonb NULL,
    allowed      text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Stops: a stop directive (or a consent message that could not be applied: fail_closed)
-- fences a photo purpose at `consent_version`; only a state with a higher version that allows
-- the purpose again deletes the stop.
CREATE TABLE photo_stops (
    customer_id      text NOT NULL,
    purpose          text NOT NULL CHECK (purpose IN ('photo_storage', 'photo_marketing_use')),
    consent_version  bigint NOT NULL CHECK (consent_version >= 0),
    reason           text NOT NULL
        CHECK (reason IN ('withdrawal', 'objection', 'erasure', 'fail_closed')),
    directive_id     uuid NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, purpose)
);

-- Stored photos (metadata only; the encrypted image is in the `photos` bucket under an opaque
-- key). `data_class` decides what a photo-storage stop does: a patient-record (clinical) photo
-- has statutory retention and is restricted; a marketing photo is deleted. `marketing_use`
-- is the explicit, per-photo marketing consent having been given (never by default).
-- `consent_version` is the consent version the photo was accepted under.
CREATE TABLE photos (
    photo_id           text PRIMARY KEY,
    customer_id        text NOT NULL,
    data_class         text NOT NULL CHECK (data_class IN ('patient_record', 'marketing')),
    status             text NOT NULL DEFAULT 'stored'
        CHECK (status IN ('stored', 'restricted', 'deleted')),
    marketing_use      boolean NOT NULL DEFAULT false,
    consent_version    bigint NOT NULL CHECK (consent_version >= 1),
    stored_at          timestamptz NOT NULL DEFAULT now(),
    status_changed_at  timestamptz NULL
);

-- Stops and erasure find a customer's photos.
CREATE INDEX photos_customer_idx ON photos (customer_id);
