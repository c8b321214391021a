"""`rekisteri customer show`: a customer's register entry for staff, masked and audited.

Staff run the CLI on the clinic's server, so it reads the register directly. It connects to the
records schema as the records role (`RECORDS_PG_DSN`), opens data keys with the records KEK
(`RECORDS_KEK`), and reads with the records read API (`read_customer`, `read_history`).

Every lookup is audited (DOMAIN.md A1: user, time, record, purpose). The audit events go to the
records outbox in the same transaction as the read. If the audit cannot be written, the read
rolls back and nothing is shown. The records service's relay publishes them to
`audit.events.v1`. One lookup writes these events, all sharing one correlation id:

- `read` of `records.customer`. With `--reveal` its `reason_code` is `hetu_revealed`.
- `read` of `records.visit` and of `records.feedback`, when visits or feedback were shown.
  Visits are patient-record data, and a patient may ask who saw them (RT11).
- For an unknown customer, `read` with outcome `failed` and reason `customer_not_found`. Its
  `customer_id` is null: the typed text names no customer and must not become a Kafka key.
- For a role that may not open entries, outcome `denied` and reason `role_not_permitted`. Its
  `customer_id` is set only when the customer exists.
- For a key or value that cannot be decrypted, outcome `failed`, written in a transaction of
  its own after the read rolled back.

What staff see (DOMAIN.md S2, S6, I10):

- The identity code is masked, `DDMMYY-****`. The century sign stays visible because it is
  part of the identity (two codes that differ only in the sign are two people). `--reveal`
  shows the full code, and the read's audit event records the reveal.
- The marketing role may not open register entries.
- An address under a population-register security ban (turvakielto) is shown only to the
  privacy officer.
- Age is derived from the date of birth when the entry is shown. It is never stored.
- A customer whose key was shredded shows `[shredded]` in place of every value.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import asyncpg
from rich.table import Table
from rich.text import Text

from contracts.audit import AuditAction, AuditEvent, AuditOutcome
from contracts.envelope import new_event_id
from services.common import audit, crypto
from services.intake.hetu import HETU_PATTERN, is_hetu_shaped
from services.records.domain import ItemKind, RegisterError
from services.records.repository import PostgresRegister, read_customer, read_history

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rich.console import Console

    from services.common.db import Connection
    from services.records.domain import CustomerView, ItemVersion
    from services.records.repository import RegisterRepository

AUDIT_SERVICE: Final = "records"
"""The audit events are the records service's: written to its outbox, relayed by it."""
SCHEMA: Final = "records"
"""The schema the register lives in."""
PURPOSE: Final = "customer_care"
"""The processing purpose of a staff lookup."""
CUSTOMER_RESOURCE: Final = "records.customer"
VISIT_RESOURCE: Final = "records.visit"
FEEDBACK_RESOURCE: Final = "records.feedback"
REVEALED: Final = "hetu_revealed"
NOT_FOUND: Final = "customer_not_found"
DENIED: Final = "role_not_permitted"
DECRYPTION_FAILED: Final = "decryption_failed"
MASK: Final = "****"
"""Stands in for the individual number and check character of a masked identity code."""
MASKED: Final = "[masked]"
"""Stands in for a stored identity code of an unexpected shape (never shown partly)."""
SECURITY_BAN_MASK: Final = "[security ban]"
"""Stands in for an address under a security ban, for roles not authorised to see it."""
REMOVED: Final = "(removed)"
CUSTOMER_ID_MAX: Final = 64
STAFF_ID_MAX: Final = 64
CUSTOMER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", re.ASCII)
"""The shape of a customer number (as intake accepts it)."""
STAFF_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$", re.ASCII)
"""The shape of a staff account id (as the audit event's `actor` accepts it)."""
CLINIC_TIME_ZONE: Final = "Europe/Helsinki"
"""Whose calendar decides a customer's age."""


class StaffRole(StrEnum):
    """The role a staff member acts in (DESIGN.md: least privilege per role)."""

    RECEPTION = "reception"
    CLINICIAN = "clinician"
    PRIVACY_OFFICER = "privacy_officer"
    MARKETING = "marketing"


ENTRY_ROLES: Final = frozenset(
    {StaffRole.RECEPTION, StaffRole.CLINICIAN, StaffRole.PRIVACY_OFFICER}
)
"""Roles that may open a register entry. Marketing sees only what consent allows, through the
marketing service, never the register itself (DOMAIN.md S2)."""
SECURITY_BAN_ROLES: Final = frozenset({StaffRole.PRIVACY_OFFICER})
"""Roles that may see an address under a security ban (DOMAIN.md I10)."""


class UsageError(ValueError):
    """A bad argument. The message names the argument, never its value."""


@dataclass(frozen=True, slots=True)
class Staff:
    """Who is looking, and in which role."""

    staff_id: str
    role: StaffRole


@dataclass(frozen=True, slots=True)
class ShowRequest:
    """One `customer show`: whose entry, by whom, revealed or not, with which item's history."""

    customer_id: str
    staff: Staff
    reveal: bool = False
    history: ItemKind | None = None
    correlation_id: uuid.UUID = field(default_factory=new_event_id)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found, and what it logged.

    Attributes:
        view: The entry, or None (not found, denied, or unreadable).
        history_of: The item whose history was asked for, if any.
        history: The versions of that item, oldest first.
        error: `customer_not_found`, `role_not_permitted` or `decryption_failed`, or None.
        audited: The audit events written.
    """

    view: CustomerView | None
    history_of: str | None = None
    history: tuple[ItemVersion, ...] = ()
    error: str | None = None
    audited: tuple[AuditEvent, ...] = ()


# --- Arguments -------------------------------------------------------------------------------


def staff_of(staff_id: str | None, role: StaffRole | str | None) -> Staff:
    """The staff member acting, from `--as` and `--role` (or their environment variables).

    Raises:
        UsageError: Either is missing, or the id is not a valid account id.
    """
    if not staff_id or role is None or role == "":
        raise UsageError(
            "say who you are: --as STAFF_ID (or REKISTERI_STAFF) and --role ROLE (or "
            "REKISTERI_STAFF_ROLE), the role one of " + ", ".join(r.value for r in StaffRole)
        )
    if len(staff_id) > STAFF_ID_MAX or STAFF_ID.fullmatch(staff_id) is None:
        raise UsageError("--as must be a staff account id (letters, digits, _ . @ : -)")
    try:
        return Staff(staff_id, StaffRole(role))
    except ValueError:
        raise UsageError("--role must be one of " + ", ".join(r.value for r in StaffRole)) from None


def check_customer_id(value: str) -> str:
    """A customer number as typed, or a usage error.

    An identity code is refused outright (customers are looked up by their number only), so
    it is never sent to the database, written to an audit event or echoed.

    Raises:
        UsageError: Not a customer number.
    """
    if is_hetu_shaped(value):
        raise UsageError(
            "ID looks like a personal identity code; look customers up by customer number"
        )
    if not value or len(value) > CUSTOMER_ID_MAX or CUSTOMER_ID.fullmatch(value) is None:
        raise UsageError("ID must be a customer number (letters, digits, _ . : -)")
    return value


# --- The lookup and its audit ----------------------------------------------------------------


class _Auditor:
    """Writes the audit events of one lookup (one actor, one correlation id) to the outbox."""

    def __init__(self, conn: Connection, request: ShowRequest) -> None:
        self.conn = conn
        self.request = request
        self.events: list[AuditEvent] = []

    async def read(
        self,
        resource: str,
        customer_id: str | None,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        reason_code: str | None = None,
    ) -> None:
        event = await audit.emit(
            self.conn,
            service=AUDIT_SERVICE,
            actor=self.request.staff.staff_id,
            actor_role=self.request.staff.role.value,
            action=AuditAction.READ,
            customer_id=customer_id,
            resource=resource,
            outcome=outcome,
            purpose=PURPOSE,
            reason_code=reason_code,
            correlation_id=self.request.correlation_id,
        )
        self.events.append(event)


async def lookup(repo: RegisterRepository, conn: Connection, request: ShowRequest) -> Lookup:
    """Read an entry and write its audit events to the outbox, inside the caller's transaction.

    Args:
        repo: The register, on `conn`.
        conn: The connection whose open transaction holds the read and the audit.
        request: What to look up, and who asks.

    Raises:
        crypto.CryptoError: A data key does not unwrap or a value does not decrypt (the caller
            rolls back and calls `record_failure`).
        RegisterError: A stored value is not valid JSON.
    """
    cid = request.customer_id
    auditor = _Auditor(conn, request)
    if request.staff.role not in ENTRY_ROLES:
        known = await repo.customer(cid) is not None
        await auditor.read(CUSTOMER_RESOURCE, cid if known else None, AuditOutcome.DENIED, DENIED)
        return Lookup(None, error=DENIED, audited=tuple(auditor.events))
    view = await read_customer(repo, cid)
    if view is None:
        await auditor.read(CUSTOMER_RESOURCE, None, AuditOutcome.FAILED, NOT_FOUND)
        return Lookup(None, error=NOT_FOUND, audited=tuple(auditor.events))
    history: list[ItemVersion] = []
    if request.history is not None:
        history = await read_history(repo, cid, request.history)
    reason = REVEALED if request.reveal else None
    await auditor.read(CUSTOMER_RESOURCE, cid, AuditOutcome.SUCCESS, reason)
    if view.visits:
        await auditor.read(VISIT_RESOURCE, cid)
    if view.feedback:
        await auditor.read(FEEDBACK_RESOURCE, cid)
    return Lookup(view, request.history, tuple(history), audited=tuple(auditor.events))


async def record_failure(conn: Connection, request: ShowRequest, reason_code: str) -> Lookup:
    """Audit a lookup that failed while decrypting (the read itself was rolled back)."""
    auditor = _Auditor(conn, request)
    async with conn.transaction():
        await auditor.read(CUSTOMER_RESOURCE, request.customer_id, AuditOutcome.FAILED, reason_code)
    return Lookup(None, error=reason_code, audited=tuple(auditor.events))


async def show(dsn: str, kek: bytes, request: ShowRequest) -> Lookup:
    """Connect to the register as the records role, look up and audit, and disconnect.

    Raises:
        OSError, asyncpg.PostgresError: The database cannot be reached or refused the role.
    """
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": SCHEMA, "application_name": "rekisteri-cli"}
    )
    try:
        keys = crypto.KeyStore(None, kek, cache_ttl_s=0)
        try:
            # One snapshot for the whole entry, even while the service applies a batch.
            async with conn.transaction(isolation="repeatable_read"):
                return await lookup(PostgresRegister(conn, keys), conn, request)
        except crypto.CryptoError:
            return await record_failure(conn, request, DECRYPTION_FAILED)
        except RegisterError as exc:
            return await record_failure(conn, request, exc.reason)
    finally:
        await conn.close()


# --- What is shown ---------------------------------------------------------------------------


def mask_hetu(value: Any) -> Any:  # noqa: ANN401 - a stored value, normally text
    """An identity code masked as `DDMMYYC****`: birth date and century sign, nothing else.

    `[shredded]` and a missing value pass through. A stored value of an unexpected shape is
    masked whole.
    """
    if value is None or value == crypto.SHREDDED:
        return value
    if isinstance(value, str) and HETU_PATTERN.fullmatch(value):
        return value[:7] + MASK
    return MASKED


def clinic_today() -> date:
    """Today on the clinic's calendar (UTC when the time-zone database is missing)."""
    try:
        return datetime.now(ZoneInfo(CLINIC_TIME_ZONE)).date()
    except (LookupError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return datetime.now(UTC).date()


def _iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _security_ban(view: CustomerView) -> bool:
    bans = view.value(ItemKind.DVV_BANS)
    return isinstance(bans, dict) and bool(bans.get("security_ban"))


class _Shown:
    """Applies the masking rules of one lookup to item values."""

    def __init__(self, view: CustomerView, *, reveal: bool, role: StaffRole) -> None:
        self.reveal = reveal
        self.hide_address = _security_ban(view) and role not in SECURITY_BAN_ROLES

    def value(self, kind: str, value: Any) -> Any:  # noqa: ANN401 - JSON-compatible values
        if kind == ItemKind.HETU and not self.reveal:
            return mask_hetu(value)
        if kind == ItemKind.ADDRESS and self.hide_address and value not in (None, crypto.SHREDDED):
            return SECURITY_BAN_MASK
        return value


def entry_document(lookup: Lookup, *, reveal: bool, role: StaffRole, today: date) -> dict[str, Any]:
    """The entry as JSON-compatible data (the `--json` output), with the masking applied.

    Args:
        lookup: A successful lookup (`view` not None).
        reveal: Whether the identity code is shown in full.
        role: The role looking (decides security-ban masking).
        today: The day the age is computed for.
    """
    view = lookup.view
    if view is None:
        raise ValueError("no entry to show")
    shown = _Shown(view, reveal=reveal, role=role)
    items = {
        kind: {
            "value": shown.value(kind, item.value),
            "source": item.source,
            "data_class": item.data_class,
            "since": _iso(item.since),
            "versions": view.history.get(kind, 1),
        }
        for kind, item in view.items.items()
    }
    doc: dict[str, Any] = {
        "customer_id": view.customer_id,
        "version": view.version,
        "registered_at": _iso(view.registered_at),
        "updated_at": _iso(view.updated_at),
        "data_classes": list(view.data_classes),
        "shredded": view.shredded,
        "hetu_revealed": reveal,
        "age": view.age(today),
        "items": items,
        "removed": sorted(kind for kind in view.history if kind not in view.items),
        "history": dict(view.history),
        "visits": [
            {
                "visit_date": _iso(v.visit_date),
                "treating_staff": [dict(s) for s in v.treating_staff],
                "source": v.source,
                "data_class": v.data_class,
                "occurred_at": _iso(v.occurred_at),
            }
            for v in view.visits
        ],
        "feedback": [
            {
                "kind": f.kind,
                "channel": f.channel,
                "text": f.text,
                "source": f.source,
                "data_class": f.data_class,
                "occurred_at": _iso(f.occurred_at),
            }
            for f in view.feedback
        ],
    }
    if lookup.history_of is not None:
        doc["item_history"] = {
            "kind": lookup.history_of,
            "versions": _history_document(lookup.history, shown),
        }
    return doc


def _history_document(history: Sequence[ItemVersion], shown: _Shown) -> list[dict[str, Any]]:
    return [
        {
            "kind": h.kind,
            "seq": h.seq,
            "value": shown.value(h.kind, h.value),
            "source": h.source,
            "data_class": h.data_class,
            "valid_from": _iso(h.valid_from),
            "valid_to": _iso(h.valid_to),
        }
        for h in history
    ]


def _person(name: Any) -> str:  # noqa: ANN401 - a stored name
    if isinstance(name, dict):
        return f"{name.get('given_names', '')} {name.get('family_name', '')}".strip()
    return str(name)


def _guardians(value: Mapping[str, Any]) -> str:
    parts = []
    for g in value.get("guardians", ()):
        contact = g.get("contact") or {}
        reach = [*(contact.get("phones") or ()), *(contact.get("emails") or ())]
        until = f" until {g['valid_until']}" if g.get("valid_until") else ""
        text = f"{g.get('type', 'guardian')} {_person(g.get('name'))}"
        if reach:
            text += f" ({', '.join(reach)})"
        text += f"; {', '.join(g.get('scope', ()))}; from {g.get('valid_from')}{until}"
        parts.append(text)
    if value.get("no_disclosure_to_guardian"):
        parts.append("no disclosure to guardians")
    return "\n".join(parts) or "none"


def display(kind: str, value: Any) -> str:  # noqa: ANN401, PLR0911 - one case per item shape
    """One item value as a line (or a few) of text for the table."""
    if value is None:
        return REMOVED
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        if kind == ItemKind.NAME:
            return _person(value)
        if kind == ItemKind.ADDRESS:
            country = value.get("country")
            tail = f", {country}" if country and country != "FI" else ""
            return f"{value.get('street')}, {value.get('postal_code')} {value.get('city')}{tail}"
        if kind == ItemKind.GUARDIANS:
            return _guardians(value)
        if kind == ItemKind.DVV_BANS:
            return ", ".join(sorted(k for k, v in value.items() if v)) or "none"
        if kind == ItemKind.ACQUISITION:
            way = f" ({value['way']})" if value.get("way") else ""
            return f"{value.get('channel')}{way}"
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return json.dumps(value, ensure_ascii=False)


def _day(text: str | None) -> str:
    return text[:10] if text else ""


def render(doc: Mapping[str, Any], console: Console) -> None:
    """Print an entry document (from `entry_document`) as tables; values are never markup."""
    age = doc["age"]
    head = Text(f"customer {doc['customer_id']}", style="bold")
    head.append(f"  version {doc['version']}")
    if doc["registered_at"]:
        head.append(f"  registered {_day(doc['registered_at'])}")
    else:
        head.append("  not registered yet")
    head.append(f"  age {age if age is not None else 'unknown'}")
    console.print(head)
    console.print(Text("data classes: " + (", ".join(doc["data_classes"]) or "none")))
    if doc["shredded"]:
        console.print(Text("the customer's key has been shredded: values are unreadable"))
    console.print(_items_table(doc))
    if doc["visits"]:
        console.print(_visits_table(doc["visits"]))
    if doc["feedback"]:
        console.print(_feedback_table(doc["feedback"]))
    if "item_history" in doc:
        console.print(_history_table(doc["item_history"]))
    if doc["hetu_revealed"]:
        note = "identity code shown in full (logged)"
    else:
        note = "identity code masked; --reveal shows it (logged)"
    console.print(Text(f"{note}; this read was logged for audit", style="dim"))


def _items_table(doc: Mapping[str, Any]) -> Table:
    table = Table("item", "value", "source", "data class", "since", "versions")
    for kind, item in doc["items"].items():
        table.add_row(
            Text(kind),
            Text(display(kind, item["value"])),
            Text(item["source"]),
            Text(item["data_class"]),
            Text(_day(item["since"])),
            Text(str(item["versions"])),
        )
    for kind in doc["removed"]:
        table.add_row(Text(kind), Text(REMOVED), "", "", "", Text(str(doc["history"][kind])))
    return table


def _visits_table(visits: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("visit date", "treating staff", "source", "data class")
    for v in visits:
        staff = "\n".join(f"{s.get('staff_id')} {s.get('name')}" for s in v["treating_staff"])
        table.add_row(
            Text(v["visit_date"] or crypto.SHREDDED),
            Text(staff or crypto.SHREDDED),
            Text(v["source"]),
            Text(v["data_class"]),
        )
    return table


def _feedback_table(feedback: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("date", "kind", "channel", "text")
    for f in feedback:
        table.add_row(
            Text(_day(f["occurred_at"])),
            Text(f["kind"]),
            Text(f["channel"] or ""),
            Text(f["text"]),
        )
    return table


def _history_table(history: Mapping[str, Any]) -> Table:
    kind = str(history["kind"])
    table = Table("seq", "value", "source", "valid from", "valid to", title=f"history of {kind}")
    for h in history["versions"]:
        table.add_row(
            Text(str(h["seq"])),
            Text(display(kind, h["value"])),
            Text(h["source"]),
            Text(h["valid_from"] or ""),
            Text(h["valid_to"] or "current"),
        )
    return table


def error_message(error: str) -> str:
    """The message for a failed lookup (no personal data, not even the typed ID)."""
    return {
        NOT_FOUND: "no such customer in the register (the lookup was logged)",
        DENIED: "your role may not open register entries (the attempt was logged)",
    }.get(error, f"the entry could not be read: {error} (the attempt was logged)")
