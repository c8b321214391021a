-- The customer register (services/records). Applied with search_path = the records schema,
-- after the common outbox/inbox migration.
--
-- Every personal value is stored encrypted with the customer's own data key (subject_keys), so
-- shredding that key erases it everywhere at once; only non-identifying metadata is in clear:
-- which kind of item, where it came from (source), its data class, and when it was valid.
-- Age is never stored: it is derived from the (encrypted) date of birth when shown.

-- One row per customer: the per-customer version (bumped by every applied command), whether
-- the customer has been registered yet (a change can arrive before the registration; the row
-- is then created at once, and `registered_at` filled when the registration comes), and the
-- data classes of everything held on them, history included (for retention and erasure).
CREATE TABLE customers (
    customer_id    text PRIMARY KEY,
    version        bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    registered_at  timestamptz NULL,
    data_classes   text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every batch updates its customers' rows: leave room for HOT updates.
ALTER TABLE customers SET (fillfactor = 80);

-- The tables below have no foreign key to `customers`: the only writer creates and locks the
-- customer's row in the same transaction before it writes anything else, and a foreign key
-- would add a row-locking lookup per item row (a dozen per registration) to the hot path.
-- Erasure deletes a customer's rows from every table explicitly.

-- The versioned items of the register: name, identity code, date of birth, gender, title,
-- mother tongue, address, phones, e-mails, preferred language, guardians, acquisition,
-- billing reference, population-register bans, privacy-notice version.
--
-- A change never overwrites: it closes the current row of that kind (`valid_to`, `closed_by`)
-- and inserts a new one, so earlier values stay for rectification history. A removed item is
-- a closed row with no successor. `seq` is the customer's version when the value was set (a
-- command sets an item at most once). `valid_from`/`valid_to` are the times the commands
-- occurred (never running backwards); Kafka order decides which change is the later one.
--
-- `value` is the base64 ciphertext of the item's JSON, encrypted exactly like the field of
-- the same name in the `records.customer.v1` snapshot (associated data
-- `customer_id|CustomerRecord|1|<kind>`), so snapshots are assembled without decrypting.
-- `digest` is an HMAC of the plaintext under a key derived from the customer's data key: it
-- tells an unchanged value from a changed one without decrypting, and is meaningless once
-- the key is shredded.
CREATE TABLE customer_items (
    customer_id  text NOT NULL,
    kind         text NOT NULL,
    seq          bigint NOT NULL CHECK (seq >= 1),
    value        text NOT NULL,
    digest       bytea NOT NULL,
    source       text NOT NULL,
    data_class   text NOT NULL
        CHECK (data_class IN ('customer_register', 'patient_record', 'billing')),
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz NULL CHECK (valid_to IS NULL OR valid_to >= valid_from),
    event_id     uuid NOT NULL,
    closed_by    uuid NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, kind, seq)
);

-- Visits to the clinic (patient record): the date and the treating staff, encrypted together.
CREATE TABLE visits (
    customer_id  text NOT NULL,
    event_id     uuid NOT NULL,
    entry        text NOT NULL,
    source       text NOT NULL,
    data_class   text NOT NULL DEFAULT 'patient_record'
        CHECK (data_class IN ('customer_register', 'patient_record', 'billing')),
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id)
);

-- Feedback and wishes (customer register): the words encrypted, the kind and channel clear.
CREATE TABLE feedback (
    customer_id  text NOT NULL,
    event_id     uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('feedback', 'wish')),
    channel      text NULL,
    body         text NOT NULL,
    source       text NOT NULL,
    data_class   text NOT NULL DEFAULT 'customer_register'
        CHECK (data_class IN ('customer_register', 'patient_record', 'billing')),
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id)
);
