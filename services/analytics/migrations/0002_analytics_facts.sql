-- Analytics facts (contracts.records.AnalyticsFacts) in each contribution: the coarse
-- categories the register entry carries in clear, kept with the version they came with, so the
-- latest contribution of a subject says its current age band, language, acquisition channel
-- and the month of every visit. Never a date of birth, a visit date, a name or free text.
-- NULL (and no months): not held, or an entry older than the facts.

ALTER TABLE contributions
    ADD COLUMN age_band text NULL
        CHECK (age_band IN ('0-14', '15-24', '25-34', '35-44', '45-54', '55-64', '65-74', '75+')),
    ADD COLUMN language text NULL CHECK (language IN ('fi', 'sv', 'en')),
    ADD COLUMN channel text NULL
        CHECK (channel IN ('web', 'phone', 'walk_in', 'referral', 'campaign', 'other')),
    -- One element per visit (the first day of its month), so visits are counted, not months.
    ADD COLUMN visit_months date[] NOT NULL DEFAULT '{}';
