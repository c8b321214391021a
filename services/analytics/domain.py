"""Analytics' rules: pseudonyms, what a register entry contributes, what the aggregates are.

Pure code, no I/O. Analytics never holds a customer number: every row is keyed by
`pseudonym(key, customer_id)` = HMAC-SHA256(key, customer_id), so its tables cannot be joined
to the register without the key. A contribution is what one version of a customer's register
entry (`records.customer.v1`) says in clear: whether the customer is registered, the data
classes and sources held, and the month it happened in. The personal fields of the entry are
encrypted with the customer's own key, which analytics never has.

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
    """

    version: int
    month: date
    registered: bool
    data_classes: tuple[str, ...]
    sources: tuple[str, ...]


def contribution_of(record: CustomerRecord) -> Contribution:
    """The contribution of a register entry: only its clear metadata, never `pii`."""
    return Contribution(
        version=record.version,
        month=month_of(record.occurred_at),
        registered=record.registered,
        data_classes=tuple(sorted(set(record.data_classes))),
        sources=tuple(sorted(set(record.sources.values()))),
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
        min_cell: The smallest cell shown.
    """

    customers: int
    registrations_per_month: dict[date, int] = field(default_factory=dict)
    changes_per_month: dict[date, int] = field(default_factory=dict)
    customers_by_source: dict[str, int] = field(default_factory=dict)
    customers_by_data_class: dict[str, int] = field(default_factory=dict)
    min_cell: int = MIN_CELL
