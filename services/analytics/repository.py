"""Where analytics keeps its data: contributions, the consent view and exclusions, by pseudonym.

`AnalyticsStore` is the service's `ViewStore`: it maps every customer number to its pseudonym
before it touches a table, stores consent states without the number, and its stop effect
deletes the customer's contributions (the exclusion itself is the shared stop row). It also
ingests register entries (`add_contribution`, `forget_contributions`) under the same row lock
as the stops, so a contribution can never slip in behind an exclusion.

`aggregates(conn)` computes the statistics from the contributions of the customers counted
(analytics allowed in their view, not excluded), in one consistent snapshot: registrations,
changes and visits per month, and customers by source, data class, acquisition channel, age
band and language (each customer's latest contribution), small cells left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from services.analytics.domain import ANALYTICS, MIN_CELL, Aggregates, Contribution, pseudonym
from services.consentview.store import SqlViewStore, ViewSql

if TYPE_CHECKING:
    from contracts.consent import ConsentState, Purpose
    from services.common.db import Connection

INBOX_CONSUMER: Final = "analytics.directives"
"""The inbox consumer name of the directive handler."""
STOP_RESOURCE: Final = "analytics.contribution"
"""The audited resource of a stop."""

ADD_CONTRIBUTION_SQL: Final = """
INSERT INTO contributions (
    subject, version, month, changes, registered, data_classes, sources,
    age_band, language, channel, visit_months
)
SELECT $1, $2, $3,
       $2 - coalesce((SELECT max(version) FROM contributions WHERE subject = $1), 0),
       $4, $5::text[], $6::text[], $7, $8, $9, $10::date[]
WHERE NOT EXISTS (SELECT 1 FROM contributions WHERE subject = $1 AND version >= $2)
"""
"""Add a version's contribution, only when newer than every one held (versions decide)."""
DELETE_CONTRIBUTIONS_SQL: Final = "DELETE FROM contributions WHERE subject = $1"
COUNT_CONTRIBUTIONS_SQL: Final = "SELECT count(*) FROM contributions WHERE subject = $1"
EXCLUDED_SQL: Final = """
SELECT EXISTS (SELECT 1 FROM exclusions WHERE subject = $1 AND purpose = 'analytics')
"""

_COUNTED: Final = """
WITH counted AS (
    SELECT c.*
    FROM contributions c
    JOIN consent_view v ON v.subject = c.subject
    WHERE 'analytics' = ANY (v.allowed)
      AND NOT EXISTS (
          SELECT 1 FROM exclusions e WHERE e.subject = c.subject AND e.purpose = 'analytics'
      )
),
latest AS (
    SELECT DISTINCT ON (subject)
        subject, data_classes, sources, age_band, language, channel, visit_months
    FROM counted ORDER BY subject, version DESC
)
"""
CUSTOMERS_SQL: Final = _COUNTED + "SELECT count(*) FROM latest"
REGISTRATIONS_SQL: Final = (
    _COUNTED
    + """
SELECT month, count(*) AS n
FROM (SELECT subject, min(month) AS month FROM counted WHERE registered GROUP BY subject) AS r
GROUP BY month HAVING count(*) >= $1 ORDER BY month
"""
)
CHANGES_SQL: Final = (
    _COUNTED
    + """
SELECT month, sum(changes)::bigint AS n
FROM counted GROUP BY month HAVING count(DISTINCT subject) >= $1 ORDER BY month
"""
)
BY_SOURCE_SQL: Final = (
    _COUNTED
    + """
SELECT s AS key, count(*) AS n
FROM latest, unnest(latest.sources) AS s
GROUP BY s HAVING count(*) >= $1 ORDER BY s
"""
)
BY_DATA_CLASS_SQL: Final = (
    _COUNTED
    + """
SELECT d AS key, count(*) AS n
FROM latest, unnest(latest.data_classes) AS d
GROUP BY d HAVING count(*) >= $1 ORDER BY d
"""
)

VISITS_SQL: Final = (
    _COUNTED
    + """
SELECT m AS month, count(*) AS n
FROM latest, unnest(latest.visit_months) AS m
GROUP BY m HAVING count(DISTINCT latest.subject) >= $1 ORDER BY m
"""
)
"""Visits by month (the latest entry lists them all), shown when enough customers visited."""


def _by_column(column: str) -> str:
    """Customers by a category column of their latest contribution (not held: left out)."""
    return (
        _COUNTED
        + f"""
SELECT {column} AS key, count(*) AS n
FROM latest WHERE {column} IS NOT NULL
GROUP BY {column} HAVING count(*) >= $1 ORDER BY {column}
"""
    )


BY_CHANNEL_SQL: Final = _by_column("channel")
BY_AGE_BAND_SQL: Final = _by_column("age_band")
BY_LANGUAGE_SQL: Final = _by_column("language")


class AnalyticsStore(SqlViewStore):
    """Analytics' consent view, exclusions and contributions, keyed by pseudonym."""

    SQL = ViewSql.of(view="consent_view", stops="exclusions", key="subject")
    INBOX_CONSUMER = INBOX_CONSUMER

    def __init__(self, conn: Connection, pseudonym_key: bytes) -> None:
        super().__init__(conn)
        self._pseudonym_key = pseudonym_key

    def key(self, customer_id: str) -> bytes:
        """The customer's pseudonym (the only key analytics stores)."""
        return pseudonym(self._pseudonym_key, customer_id)

    def state_document(self, state: ConsentState) -> dict[str, Any]:
        """The state without the customer number."""
        return state.model_dump(mode="json", exclude={"customer_id"})

    async def stop(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        state: ConsentState | None,  # noqa: ARG002 - contributions are not per item
        photo_ids: tuple[str, ...],  # noqa: ARG002
    ) -> None:
        """Analytics stopped: delete the customer's row-level contributions."""
        if ANALYTICS in purposes:
            await self.conn.execute(DELETE_CONTRIBUTIONS_SQL, self.key(customer_id))

    async def excluded(self, customer_id: str) -> bool:
        """Whether an exclusion stops analytics for the customer."""
        return bool(await self.conn.fetchval(EXCLUDED_SQL, self.key(customer_id)))

    async def add_contribution(self, customer_id: str, contribution: Contribution) -> bool:
        """Add a contribution (after `lock`); False when a newer one is already held."""
        status = await self.conn.execute(
            ADD_CONTRIBUTION_SQL,
            self.key(customer_id),
            contribution.version,
            contribution.month,
            contribution.registered,
            list(contribution.data_classes),
            list(contribution.sources),
            contribution.age_band,
            contribution.language,
            contribution.channel,
            list(contribution.visit_months),
        )
        return status.endswith(" 1")

    async def forget_contributions(self, customer_id: str) -> None:
        """Delete every contribution of the customer."""
        await self.conn.execute(DELETE_CONTRIBUTIONS_SQL, self.key(customer_id))

    async def contributions(self, customer_id: str) -> int:
        """How many contributions of the customer are held."""
        return int(await self.conn.fetchval(COUNT_CONTRIBUTIONS_SQL, self.key(customer_id)))


async def aggregates(conn: Connection, *, min_cell: int = MIN_CELL) -> Aggregates:
    """The statistics over the customers counted, from one consistent snapshot.

    Args:
        conn: A connection of the analytics schema (not inside another transaction).
        min_cell: The smallest count a cell may show; smaller cells are left out.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        customers = int(await conn.fetchval(CUSTOMERS_SQL))
        registrations = await conn.fetch(REGISTRATIONS_SQL, min_cell)
        changes = await conn.fetch(CHANGES_SQL, min_cell)
        sources = await conn.fetch(BY_SOURCE_SQL, min_cell)
        classes = await conn.fetch(BY_DATA_CLASS_SQL, min_cell)
        visits = await conn.fetch(VISITS_SQL, min_cell)
        channels = await conn.fetch(BY_CHANNEL_SQL, min_cell)
        bands = await conn.fetch(BY_AGE_BAND_SQL, min_cell)
        languages = await conn.fetch(BY_LANGUAGE_SQL, min_cell)
    return Aggregates(
        customers=customers,
        registrations_per_month={r["month"]: int(r["n"]) for r in registrations},
        changes_per_month={r["month"]: int(r["n"]) for r in changes},
        customers_by_source={r["key"]: int(r["n"]) for r in sources},
        customers_by_data_class={r["key"]: int(r["n"]) for r in classes},
        visits_per_month={r["month"]: int(r["n"]) for r in visits},
        customers_by_channel={r["key"]: int(r["n"]) for r in channels},
        customers_by_age_band={r["key"]: int(r["n"]) for r in bands},
        customers_by_language={r["key"]: int(r["n"]) for r in languages},
        min_cell=min_cell,
    )
