"""The consent view every consent-driven processor keeps (a library, not a service).

Marketing, analytics and photos each hold a local copy of the customers' consent (from
`consent.state.v1`) and obey stop directives (`privacy.directives.v1`) in the same way:
versions decide, stale or replayed events never lift a stop, unknown customers are not
allowed, and anything unreadable fails closed. `view` holds the pure rules, `store` the
Postgres store (and an in-memory fake), `feed` the Kafka entry points and the acks.
"""
