-- Per-customer data keys (DEKs) for crypto-shredding, wrapped by the service's key-encryption
-- key (KEK). Applied in the owning service's own schema (search_path), like its other tables.
--
-- Shredding sets wrapped_key to NULL and stamps shredded_at. The row stays as a tombstone, so
-- a late event cannot silently give an erased customer a fresh key.
CREATE TABLE IF NOT EXISTS subject_keys (
    customer_id text PRIMARY KEY,
    wrapped_key bytea NULL,
    key_version integer NOT NULL CHECK (key_version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    shredded_at timestamptz NULL,
    CONSTRAINT subject_keys_key_xor_shredded
        CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);

-- An UPDATE leaves the old row version (with the old wrapped key) behind until VACUUM removes
-- it. Vacuum this small table as soon as any row is dead, so shredded keys do not linger.
ALTER TABLE subject_keys SET (
    autovacuum_vacuum_threshold = 0,
    autovacuum_vacuum_scale_factor = 0
);
