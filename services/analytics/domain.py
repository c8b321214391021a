"""Analytics' rules: pseudonyms, what a register entry contributes, what the aggregates are.

Pure code, no I/O. Analytics never holds a customer number: every row is keyed by
`pseudonym(key, customer_id)` = HMAC-SHA256(key, customer_id), so its tables cannot be joined
to the register without the key. A contribution is what one version of a customer's register
entry (`records.customer.v1`) says in clear: whether the customer is registered, the data
classes and sources held, the month it happened in, and its analytics facts (age band,
preferred language, acquisition channel, the month of each visit). The personal fields of the
entry are encrypted with the customer's own key, which analytics never has.

The consent rules (versions decide, exclusions, fail closed) are the shared ones of
`services.consentview.view`; an exclusion is analytics' stop.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Final

from contracts.consent import Purpose

if TYPE_CHECKING:
    from contracts.records import CustomerRecord

SERVICE: Final = "analytics"
"""The service name: schema, Kafka principal, consumer group, audit producer, ack service."""
ANALYTICS: Final = Purpose.ANALYTICS
"""The purpose whose consent decides whether a customer is counted."""
MIN_CELL: Final = 5
"""Default smallest count an aggregate cell may show (smaller cells are left out)."""


def pseudonym(key: bytes, customer_id: str) -> bytes:
    """The customer's pseudonym: HMAC-SHA256(key, customer_id), 32 bytes."""
    return hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).digest()


def month_of(moment: date) -> date:
    """The first day of the month of a date or datetime."""
    return date(moment.year, moment.month, 1)


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one version of a customer's register entry contributes (no personal data).

    Attributes:
        version: The register version of the entry.
        month: The month it happened in.
        registered: Whether the customer's registration had arrived.
        data_classes: The data classes held, sorted.
        sources: The distinct sources of the current items, sorted.
        age_band: The customer's age band when the entry was made (None: not held).
        language: The preferred language (None: not held).
        channel: The acquisition channel (None: not held).
        visit_months: The month of each visit (one per visit), sorted.
    """

    version: int
    month: date
    registered: bool
    data_classes: tuple[str, ...]
    sources: tuple[str, ...]
    age_band: str | None = None
    language: str | None = None
    channel: str | None = None
    visit_months: tuple[date, ...] = ()


def visit_month(text: str) -> date:
    """The first day of a `YYYY-MM` month."""
    year, month = text.split("-")
    return date(int(year), int(month), 1)


def contribution_of(record: CustomerRecord) -> Contribution:
    """The contribution of a register entry: its clear metadata and facts, never `pii`."""
    facts = record.analytics
    return Contribution(
        version=record.version,
        month=month_of(record.occurred_at),
        registered=record.registered,
        data_classes=tuple(sorted(set(record.data_classes))),
        sources=tuple(sorted(set(record.sources.values()))),
        age_band=facts.age_band if facts is not None else None,
        language=facts.preferred_language if facts is not None else None,
        channel=facts.acquisition_channel if facts is not None else None,
        visit_months=(
            tuple(sorted(visit_month(m) for m in facts.visit_months)) if facts is not None else ()
        ),
    )


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Statistics over the customers counted (analytics allowed, not excluded).

    Cells counting fewer than `min_cell` customers are left out (small cells identify).

    Attributes:
        customers: Customers counted.
        registrations_per_month: Customers by the month their registration arrived.
        changes_per_month: Register changes (visits and feedback included) by month.
        customers_by_source: Customers by a source of their current items.
        customers_by_data_class: Customers by a data class held on them.
        visits_per_month: Visits by month (a cell shown when enough customers visited).
        customers_by_channel: Customers by acquisition channel (not held: not counted).
        customers_by_age_band: Customers by age band as of their latest entry.
        customers_by_language: Customers by preferred language.
        min_cell: The smallest cell shown.
    """

    customers: int
    registrations_per_month: dict[date, int] = field(default_factory=dict)
    changes_per_month: dict[date, int] = field(default_factory=dict)
    customers_by_source: dict[str, int] = field(default_factory=dict)
    customers_by_data_class: dict[str, int] = field(default_factory=dict)
    visits_per_month: dict[date, int] = field(default_factory=dict)
    customers_by_channel: dict[str, int] = field(default_factory=dict)
    customers_by_age_band: dict[str, int] = field(default_factory=dict)
    customers_by_language: dict[str, int] = field(default_factory=dict)
    min_cell: int = MIN_CELL
