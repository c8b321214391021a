"""The consent view of a consent-driven processor: what a state or a directive changes (pure).

Marketing, analytics and photos each keep a local view of consent (`consent.state.v1`) and obey
stop directives (`privacy.directives.v1`); the rules are the same for the three, so they live
here once (with `feed` and `store` beside this module).

The view of one customer is a `ViewRow`: the latest consent version applied, the state of that
version (None: nothing known, or forgotten after a tombstone) and the purposes of the service
that are *allowed now*, which every check reads. Next to it the service keeps *stops*, one per
purpose: a stop directive, or a message that could not be applied, fences the purpose at a
consent version, and only a state newer than that version may lift it.

Versions decide, not arrival order (PATTERNS.md §4):

- a state is applied only when its version is higher than the view's; the purposes it allows
  are allowed unless a stop at the same or a newer version still fences them. A stale or
  replayed state changes nothing, so it can never lift a stop;
- a tombstone forgets the state (nothing is allowed) but keeps the version, so a stale state
  arriving after it cannot bring consent back;
- a directive newer than the view fences its purposes at its version and disallows them at
  once, even before the matching state arrives (the two topics are not ordered with each other);
  a directive not newer than the view is superseded: it fences nothing and allows nothing, and
  only the stop effects the view itself already implies are (re)applied, so its answer is true;
- a message that cannot be applied fences every purpose of the service at the view's version
  (fail closed): the next valid state newer than the view lifts what it allows.

An unknown customer has no row, or a placeholder with version 0 and no state: nothing allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from contracts.consent import (
    ACKS_TOPIC,
    SERVICES_BY_PURPOSE,
    ConsentState,
    ProcessingStopped,
    ProcessingStopRequested,
    Purpose,
    effective,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

FAIL_CLOSED: Final = "fail_closed"
"""The reason recorded on stops made because a consent message could not be applied."""

ALERT: Final = "ALERT consent message not applied; customer suppressed (fail closed)"
"""The log message of a fail-closed suppression (operators alert on it)."""


def purposes_of(service: str) -> frozenset[Purpose]:
    """The purposes `service` processes, so must stop and answer directives for."""
    return frozenset(p for p, services in SERVICES_BY_PURPOSE.items() if service in services)


@dataclass(frozen=True, slots=True)
class ViewRow:
    """One customer's consent view as stored.

    Attributes:
        version: The latest consent version applied (0: none yet).
        state: That version's state; None when nothing is known or it was forgotten.
        allowed: The service's purposes allowed now (stops already taken into account).
    """

    version: int = 0
    state: ConsentState | None = None
    allowed: frozenset[Purpose] = frozenset()

    @property
    def known(self) -> bool:
        """Whether a state is held (an unknown or forgotten customer is allowed nothing)."""
        return self.state is not None


UNKNOWN: Final = ViewRow()
"""The view of a customer the service has never heard of."""


@dataclass(frozen=True, slots=True)
class StatePlan:
    """What applying a state (or a tombstone) does to the view.

    Attributes:
        version: The view's version afterwards.
        state: The state to store (None: forgotten).
        allowed: The purposes allowed afterwards.
        lift: Stops to delete (purposes the newer state allows again).
        stopped: The service's purposes not allowed afterwards (their stop effects apply).
    """

    version: int
    state: ConsentState | None
    allowed: frozenset[Purpose]
    lift: frozenset[Purpose]
    stopped: frozenset[Purpose]


def plan_state(
    row: ViewRow,
    state: ConsentState | None,
    purposes: frozenset[Purpose],
    stops: Mapping[Purpose, int],
) -> StatePlan | None:
    """What a state does to the view; None when it is stale (its version is not newer).

    Args:
        row: The stored view.
        state: The incoming state, or None for a tombstone (forget the customer).
        purposes: The service's purposes.
        stops: The active stops: purpose -> the consent version it fences.
    """
    if state is None:
        return StatePlan(row.version, None, frozenset(), frozenset(), purposes)
    if state.version <= row.version:
        return None
    granted = frozenset(p for p in purposes if effective(state, p))
    lift = frozenset(p for p in granted if p in stops and stops[p] < state.version)
    fenced = frozenset(stops) - lift
    allowed = granted - fenced
    return StatePlan(state.version, state, allowed, lift, purposes - allowed)


@dataclass(frozen=True, slots=True)
class DirectivePlan:
    """What a stop directive does to the view.

    Attributes:
        superseded: The view already holds this version or a newer one.
        fence: Purposes to fence at the directive's version (stops to add).
        allowed: The purposes allowed afterwards.
        stopped: Purposes whose stop effects apply now.
        effects_state: The state the effects are checked against, photo by photo (None: apply
            them unconditionally, as a directive newer than the view demands).
        answer: Whether this service must answer (it is named in the directive).
    """

    superseded: bool
    fence: frozenset[Purpose]
    allowed: frozenset[Purpose]
    stopped: frozenset[Purpose]
    effects_state: ConsentState | None
    answer: bool


def plan_directive(
    row: ViewRow,
    directive: ProcessingStopRequested,
    service: str,
    purposes: frozenset[Purpose],
) -> DirectivePlan:
    """What a directive does to the view of `service`.

    A directive limited to some photos (`photo_ids`) fences nothing: it stops those photos
    only, and new photos stay subject to the state.
    """
    relevant = frozenset(directive.purposes) & purposes
    answer = service in directive.services
    if directive.consent_version <= row.version:
        # Superseded: the view's newer state decides; re-apply only what it implies.
        stopped = relevant - row.allowed
        return DirectivePlan(
            superseded=True,
            fence=frozenset(),
            allowed=row.allowed,
            stopped=stopped,
            effects_state=row.state,
            answer=answer,
        )
    fence = relevant if not directive.photo_ids else frozenset()
    return DirectivePlan(
        superseded=False,
        fence=fence,
        allowed=row.allowed - fence,
        stopped=relevant,
        effects_state=None,
        answer=answer,
    )


def ack_for(directive: ProcessingStopRequested, service: str) -> ProcessingStopped:
    """The answer of `service` to a directive (for `privacy.acks.v1`)."""
    return ProcessingStopped(
        customer_id=directive.customer_id,
        directive_id=directive.directive_id,
        service=service,
        consent_version=directive.consent_version,
        producer=service,
        correlation_id=directive.correlation_id,
    )


ACK_TOPIC: Final = ACKS_TOPIC
"""Where answers go."""

REASON_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "withdrawal": "directive.withdrawal",
        "objection": "directive.objection",
        "erasure": "directive.erasure",
        FAIL_CLOSED: "consent.fail_closed",
    }
)
"""The audit `reason_code` of each stop reason."""


def sorted_purposes(purposes: Iterable[Purpose]) -> list[Purpose]:
    """Purposes in a stable order (for SQL arrays, audit events and logs)."""
    return sorted(purposes, key=str)
