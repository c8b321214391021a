"""Consent: the single writer of consent and objections.

It consumes the commands intake validated (`consent.commands.v1`, sealed with the topic key),
keeps the append-only history and each customer's current consent in its own schema
(`consent`), and publishes through its outbox the history (`consent.events.v1`), the compacted
current state (`consent.state.v1`) and, on every withdrawal or objection, a stop directive
(`privacy.directives.v1`). It reads the processors' answers (`privacy.acks.v1`) and records when
each directive was fully applied, and how long that took.
"""
