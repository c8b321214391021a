"""Runtime plumbing shared by every service, with no business rules.

settings (base class, one env prefix per service), kafka (broker factory, retry/DLQ middleware),
db (asyncpg pool), migrate (forward-only SQL migrations), outbox (transactional outbox and its
relay), inbox (idempotent consumers), crypto (per-customer data keys, crypto-shredding),
audit (PII-free audit events), logs (JSON logs without personal data), health (probes).
"""
