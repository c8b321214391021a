"""The register's rules: what a command changes, how versions and history are kept, what is shown.

Pure code, no I/O. A command (`contracts.intake`, already validated and normalised by intake)
becomes `Changes`: versioned items set or removed, and append-only visit or feedback entries.
`BatchPlanner` applies the commands of one batch, in order, to the customers' current stored
items and returns the rows to write and the snapshots to publish:

- every applied command bumps its customer's version by one;
- an item whose value (and source) is unchanged is left alone; a changed item closes the current
  row (`valid_to`, `closed_by`) and adds a new one, numbered with the customer's new version, so
  every earlier value stays for rectification history; a removed item is closed with no
  successor;
- a change for a customer not registered yet is applied all the same (the customer is created
  at once and marked registered when the registration arrives): order within a customer is the
  Kafka order, so the last change wins whatever the timestamps say;
- every personal value is encrypted with the customer's data key before it leaves the planner
  (`CustomerCipher`); item values exactly like the field of the same name in the
  `CustomerRecord` snapshot, so a snapshot is assembled from stored ciphertexts;
- the snapshot also carries the customer's `AnalyticsFacts` (`analytics_facts`): age band on
  the day of the snapshot, preferred language, acquisition channel and the month of every
  visit, from the values set in the batch or, for the rest, the stored ones decrypted (three
  items and the customer's stored visits, which the caller passes in).

The read side (`build_view`) turns stored rows back into a `CustomerView`: the decrypted current
entry, how many versions each item has, visits and feedback. Age is derived there, never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from contracts.intake import (
    ContactDetailsChanged,
    CustomerRegistered,
    Demographics,
    DemographicsChanged,
    FeedbackGiven,
    Guardian,
    GuardianChanged,
    VisitRecorded,
)
from contracts.records import (
    PII_CONTEXT,
    PII_SCHEMA_VERSION,
    AgeBand,
    AnalyticsFacts,
    CustomerRecord,
)
from services.common import crypto

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from uuid import UUID

RecordsCommand: TypeAlias = (
    CustomerRegistered
    | ContactDetailsChanged
    | DemographicsChanged
    | GuardianChanged
    | VisitRecorded
    | FeedbackGiven
)
"""A command the register applies (the events intake routes to records)."""

COMMAND_TYPES: Final[Mapping[str, type[RecordsCommand]]] = MappingProxyType(
    {
        cls.model_fields["type"].default: cls
        for cls in (
            CustomerRegistered,
            ContactDetailsChanged,
            DemographicsChanged,
            GuardianChanged,
            VisitRecorded,
            FeedbackGiven,
        )
    }
)
"""The command models by type name (every one is at schema version 1)."""

VISIT_CONTEXT: Final = "VisitRecorded"
"""Event type named in the associated data of a stored visit entry."""
FEEDBACK_CONTEXT: Final = "FeedbackGiven"
"""Event type named in the associated data of stored feedback words."""
ENTRY_FIELD: Final = "entry"
"""Field name in the associated data of visit and feedback ciphertexts."""
DEFAULT_SOURCE: Final = "customer"
"""The source of items whose command names none (guardians, feedback)."""
VISIT_SOURCE: Final = "service_use"
"""Visits come from the clinic's own service use."""
_DIGEST_LABEL: Final = b"rekisteri.records.item-digest|v1"
AGE_BANDS: Final[tuple[tuple[int, AgeBand], ...]] = (
    (14, "0-14"),
    (24, "15-24"),
    (34, "25-34"),
    (44, "35-44"),
    (54, "45-54"),
    (64, "55-64"),
    (74, "65-74"),
)
"""The age bands by their highest age; older is `OLDEST_BAND`."""
OLDEST_BAND: Final[AgeBand] = "75+"
LANGUAGES: Final = frozenset({"fi", "sv", "en"})
ACQUISITION_CHANNELS: Final = frozenset(
    {"web", "phone", "walk_in", "referral", "campaign", "other"}
)
"""The values `AnalyticsFacts` accepts; anything else stored is reported as not held."""


class DataClass(StrEnum):
    """The data class of a stored item; it decides retention and what erasure may do."""

    CUSTOMER_REGISTER = "customer_register"
    PATIENT_RECORD = "patient_record"
    BILLING = "billing"


class ItemKind(StrEnum):
    """The versioned items of the register (also the `pii` field names of the snapshot)."""

    NAME = "name"
    HETU = "hetu"
    DATE_OF_BIRTH = "date_of_birth"
    GENDER = "gender"
    TITLE = "title"
    MOTHER_TONGUE = "mother_tongue"
    ADDRESS = "address"
    PHONES = "phones"
    EMAILS = "emails"
    PREFERRED_LANGUAGE = "preferred_language"
    GUARDIANS = "guardians"
    ACQUISITION = "acquisition"
    BILLING_REFERENCE = "billing_reference"
    DVV_BANS = "dvv_bans"
    PRIVACY_NOTICE_VERSION = "privacy_notice_version"


ITEM_CLASS: Final[Mapping[str, DataClass]] = MappingProxyType(
    {str(kind): DataClass.CUSTOMER_REGISTER for kind in ItemKind}
    | {str(ItemKind.BILLING_REFERENCE): DataClass.BILLING}
)
"""The data class of each item kind: the billing reference is billing, the rest register."""

FACT_KINDS: Final = (ItemKind.DATE_OF_BIRTH, ItemKind.PREFERRED_LANGUAGE, ItemKind.ACQUISITION)
"""The items `AnalyticsFacts` are derived from."""


class Action(StrEnum):
    """What an applied command did, as audited."""

    CREATE = "create"
    UPDATE = "update"


class RegisterError(Exception):
    """A command cannot be applied; `reason` is a machine-readable code, never data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Command -> changes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemChange:
    """Set one item to a value (JSON-compatible), or remove it (`value` None)."""

    kind: ItemKind
    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class Entry:
    """An append-only entry (a visit, or feedback): its class and its encrypted part's JSON.

    Attributes:
        context: `VISIT_CONTEXT` or `FEEDBACK_CONTEXT` (the associated data's event type).
        content: The personal part, JSON-compatible, stored encrypted.
        source: Where it came from.
        data_class: Its data class.
        kind: For feedback, `feedback` or `wish` (stored in clear).
        channel: For feedback, where it was given (stored in clear).
    """

    context: str
    content: Any
    source: str
    data_class: DataClass
    kind: str | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Changes:
    """What one command does to the register."""

    items: tuple[ItemChange, ...] = ()
    entry: Entry | None = None
    registers: bool = False


def _name(demographics: Demographics) -> dict[str, str]:
    return demographics.name.model_dump(mode="json")


def _demographic_items(value: Demographics, source: str) -> list[ItemChange]:
    """The whole demographics block: every item is set, or removed when absent."""
    birth = value.date_of_birth.isoformat() if value.date_of_birth is not None else None
    return [
        ItemChange(ItemKind.NAME, _name(value), source),
        ItemChange(ItemKind.HETU, value.hetu, source),
        ItemChange(ItemKind.DATE_OF_BIRTH, birth, source),
        ItemChange(ItemKind.GENDER, value.gender, source),
        ItemChange(ItemKind.TITLE, value.title, source),
        ItemChange(ItemKind.MOTHER_TONGUE, value.mother_tongue, source),
    ]


def _guardians(guardians: Sequence[Guardian], no_disclosure: bool) -> dict[str, Any] | None:  # noqa: FBT001
    if not guardians and not no_disclosure:
        return None
    return {
        "guardians": [g.model_dump(mode="json") for g in guardians],
        "no_disclosure_to_guardian": no_disclosure,
    }


def _listed(values: Sequence[str] | None) -> list[str] | None:
    """A list of phones or e-mails; empty means none (the item is removed)."""
    return list(values) if values else None


def _registration(event: CustomerRegistered) -> Changes:
    src = event.source
    contact = event.contact
    address = contact.address.model_dump(mode="json") if contact.address else None
    acquisition = event.acquisition.model_dump(mode="json") if event.acquisition else None
    bans = event.dvv_bans.model_dump(mode="json") if event.dvv_bans else None
    guardians = _guardians(event.guardians, event.no_disclosure_to_guardian)
    return Changes(
        items=(
            *_demographic_items(event.demographics, src),
            ItemChange(ItemKind.ADDRESS, address, src),
            ItemChange(ItemKind.PHONES, _listed(contact.phones), src),
            ItemChange(ItemKind.EMAILS, _listed(contact.emails), src),
            ItemChange(ItemKind.PREFERRED_LANGUAGE, event.preferred_language, src),
            ItemChange(ItemKind.GUARDIANS, guardians, src),
            ItemChange(ItemKind.ACQUISITION, acquisition, src),
            ItemChange(ItemKind.BILLING_REFERENCE, event.billing_reference, src),
            ItemChange(ItemKind.DVV_BANS, bans, src),
            ItemChange(ItemKind.PRIVACY_NOTICE_VERSION, event.privacy_notice_version, src),
        ),
        registers=True,
    )


def _contact_change(event: ContactDetailsChanged) -> Changes:
    """Only the fields present change; an empty list of phones or e-mails removes them."""
    src = event.source
    contact = event.contact
    items: list[ItemChange] = []
    if contact.address is not None:
        items.append(ItemChange(ItemKind.ADDRESS, contact.address.model_dump(mode="json"), src))
    if contact.phones is not None:
        items.append(ItemChange(ItemKind.PHONES, _listed(contact.phones), src))
    if contact.emails is not None:
        items.append(ItemChange(ItemKind.EMAILS, _listed(contact.emails), src))
    if event.preferred_language is not None:
        items.append(ItemChange(ItemKind.PREFERRED_LANGUAGE, event.preferred_language, src))
    if event.dvv_bans is not None:
        items.append(ItemChange(ItemKind.DVV_BANS, event.dvv_bans.model_dump(mode="json"), src))
    return Changes(items=tuple(items))


def changes_of(command: RecordsCommand) -> Changes:
    """What a command does to the register (pure; the command is already validated)."""
    match command:
        case CustomerRegistered():
            return _registration(command)
        case ContactDetailsChanged():
            return _contact_change(command)
        case DemographicsChanged():
            return Changes(items=tuple(_demographic_items(command.demographics, command.source)))
        case GuardianChanged():
            value = _guardians(command.guardians, command.no_disclosure_to_guardian)
            return Changes(items=(ItemChange(ItemKind.GUARDIANS, value, DEFAULT_SOURCE),))
        case VisitRecorded():
            content = {
                "visit_date": command.visit_date.isoformat(),
                "treating_staff": [s.model_dump(mode="json") for s in command.treating_staff],
            }
            entry = Entry(VISIT_CONTEXT, content, VISIT_SOURCE, DataClass.PATIENT_RECORD)
            return Changes(entry=entry)
        case FeedbackGiven():
            entry = Entry(
                FEEDBACK_CONTEXT,
                {"text": command.text},
                DEFAULT_SOURCE,
                DataClass.CUSTOMER_REGISTER,
                kind=command.kind,
                channel=command.channel,
            )
            return Changes(entry=entry)
    raise RegisterError("unexpected_type")  # pragma: no cover - the union is exhaustive


def action_of(command: RecordsCommand) -> Action:
    """The audited action: a registration, visit or feedback creates; the rest update."""
    if isinstance(command, CustomerRegistered | VisitRecorded | FeedbackGiven):
        return Action.CREATE
    return Action.UPDATE


def resource_of(command: RecordsCommand) -> str:
    """The audited resource (`<service>.<thing>`) a command touches."""
    if isinstance(command, VisitRecorded):
        return "records.visit"
    if isinstance(command, FeedbackGiven):
        return "records.feedback"
    return "records.customer"


def canonical(value: Any) -> str:  # noqa: ANN401 - any JSON-compatible value
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- Analytics facts -------------------------------------------------------------------------


def age_on(born: date, on: date) -> int:
    """Age in whole years on a day (negative when born later)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_band(born: date, on: date) -> AgeBand | None:
    """The age band on a day; None for a date of birth after that day."""
    age = age_on(born, on)
    if age < 0:
        return None
    for highest, band in AGE_BANDS:
        if age <= highest:
            return band
    return OLDEST_BAND


def _iso_date(value: Any) -> date | None:  # noqa: ANN401 - any decrypted JSON value
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def analytics_facts(
    values: Mapping[str, Any], visit_dates: Iterable[Any], on: date
) -> AnalyticsFacts:
    """The analytics facts of a customer, from decrypted values (JSON-compatible).

    Args:
        values: The current `date_of_birth`, `preferred_language` and `acquisition` (absent or
            None: not held); a value of an unexpected shape counts as not held.
        visit_dates: The visit dates (ISO strings); unreadable ones are left out.
        on: The day the age band is computed for.
    """
    born = _iso_date(values.get(ItemKind.DATE_OF_BIRTH))
    language = values.get(ItemKind.PREFERRED_LANGUAGE)
    acquisition = values.get(ItemKind.ACQUISITION)
    channel = acquisition.get("channel") if isinstance(acquisition, dict) else None
    months = [d.strftime("%Y-%m") for d in map(_iso_date, visit_dates) if d is not None]
    return AnalyticsFacts.model_validate(
        {
            "age_band": age_band(born, on) if born is not None else None,
            "preferred_language": language if language in LANGUAGES else None,
            "acquisition_channel": channel if channel in ACQUISITION_CHANNELS else None,
            "visit_months": sorted(months),
        }
    )


# --- Crypto, per customer --------------------------------------------------------------------


class CustomerCipher:
    """One customer's encryption of register values, under their data key.

    Items are encrypted exactly like the `pii` fields of `CustomerRecord` (associated data
    `customer_id|CustomerRecord|1`, plus `|<kind>`), visits and feedback under their event type
    and the field `entry`. The item digest is an HMAC-SHA256 under a key derived from the data
    key: equal values have equal digests for this customer only, and nothing once shredded.

    Args:
        key: The customer's data key, or None when it has been shredded (opening then gives
            `crypto.SHREDDED`, and sealing is refused).
        customer_id: The customer (checked against the key).
    """

    def __init__(self, key: crypto.DataKey | None, customer_id: str) -> None:
        if key is not None and key.customer_id != customer_id:
            raise RegisterError("key_mismatch")
        self.customer_id = customer_id
        self._key = key
        self._digest_key = (
            hmac.digest(key.material, _DIGEST_LABEL, hashlib.sha256) if key is not None else b""
        )
        self._item_aad = crypto.associated_data(customer_id, PII_CONTEXT, PII_SCHEMA_VERSION)

    @property
    def shredded(self) -> bool:
        """Whether the customer's key is gone."""
        return self._key is None

    def _live_key(self) -> crypto.DataKey:
        if self._key is None:
            raise crypto.KeyShreddedError("the customer's key has been shredded")
        return self._key

    def digest(self, kind: str, text: str) -> bytes:
        """The keyed digest of an item's canonical JSON text."""
        self._live_key()
        message = kind.encode() + b"\x00" + text.encode()
        return hmac.digest(self._digest_key, message, hashlib.sha256)

    def seal_item(self, kind: str, text: str) -> str:
        """Encrypt an item's JSON text: base64, the snapshot's `pii[kind]` as is."""
        return crypto.encrypt_fields(self._live_key(), {kind: text}, self._item_aad)[kind]

    def open_items(self, values: Mapping[str, str]) -> dict[str, str]:
        """Decrypt items by kind (their JSON texts), or mask them all when shredded."""
        return crypto.decrypt_or_mask(self._key, values, self._item_aad)

    def seal_entry(self, context: str, text: str) -> str:
        """Encrypt a visit's or feedback's JSON text (base64)."""
        aad = crypto.associated_data(self.customer_id, context, 1)
        return crypto.encrypt_fields(self._live_key(), {ENTRY_FIELD: text}, aad)[ENTRY_FIELD]

    def open_entry(self, context: str, value: str) -> str:
        """Decrypt a visit's or feedback's JSON text, or the mask when shredded."""
        aad = crypto.associated_data(self.customer_id, context, 1)
        return crypto.decrypt_or_mask(self._key, {ENTRY_FIELD: value}, aad)[ENTRY_FIELD]


# --- Stored rows -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer's row: their version, registration and the data classes held on them.

    `version` 0 means the row was created by this very batch (nothing stored yet).
    """

    customer_id: str
    version: int = 0
    registered_at: datetime | None = None
    data_classes: frozenset[str] = frozenset()
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One version of one item (a row of `customer_items`); `valid_to` None: current.

    `seq` is the customer's version when the value was set (each command sets an item at most
    once), so versions of an item are numbered without reading the earlier ones.
    """

    customer_id: str
    kind: str
    seq: int
    value: str
    digest: bytes
    source: str
    data_class: str
    valid_from: datetime
    event_id: UUID
    valid_to: datetime | None = None
    closed_by: UUID | None = None
    recorded_at: datetime | None = None

    @property
    def current(self) -> bool:
        """Whether this is the item's current value."""
        return self.valid_to is None


@dataclass(frozen=True, slots=True)
class Closure:
    """Close a stored item version: it stopped being current at `valid_to`."""

    customer_id: str
    kind: str
    seq: int
    valid_to: datetime
    closed_by: UUID


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A visit or a feedback row; `body` is the ciphertext of its JSON."""

    customer_id: str
    event_id: UUID
    context: str
    body: str
    source: str
    data_class: str
    occurred_at: datetime
    kind: str | None = None
    channel: str | None = None
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied command, for its audit event."""

    event_id: UUID
    customer_id: str
    type: str
    correlation_id: UUID
    producer: str
    action: Action
    resource: str
    version: int


@dataclass(slots=True)
class _Customer:
    row: CustomerRow
    version: int
    registered_at: datetime | None
    classes: set[str]
    current: dict[str, StoredItem]
    correlation_id: UUID | None = None
    new_rows: dict[str, int] = field(default_factory=dict)
    plain: dict[str, Any] = field(default_factory=dict)
    stored_visits: list[str] = field(default_factory=list)
    new_visit_dates: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CustomerUpdate:
    """A customer's row after the batch."""

    customer_id: str
    version: int
    registered_at: datetime | None
    data_classes: frozenset[str]


@dataclass(slots=True)
class BatchPlan:
    """Everything one batch writes: closures first, then new rows, customers, events."""

    closures: list[Closure] = field(default_factory=list)
    items: list[StoredItem] = field(default_factory=list)
    entries: list[StoredEntry] = field(default_factory=list)
    customers: list[CustomerUpdate] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    snapshots: list[CustomerRecord] = field(default_factory=list)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class BatchPlanner:
    """Applies one batch of commands, in order, to the customers' current stored items.

    Args:
        customers: The (locked) rows of every customer the batch touches.
        current: The current item versions of those customers.
        ciphers: Each customer's cipher.
        visits: The stored visits of those customers (for the months in `AnalyticsFacts`).
    """

    def __init__(
        self,
        customers: Mapping[str, CustomerRow],
        current: Iterable[StoredItem],
        ciphers: Mapping[str, CustomerCipher],
        visits: Iterable[StoredEntry] = (),
    ) -> None:
        self._ciphers = ciphers
        self._state: dict[str, _Customer] = {
            cid: _Customer(row, row.version, row.registered_at, set(row.data_classes), {})
            for cid, row in customers.items()
        }
        for item in current:
            self._state[item.customer_id].current[item.kind] = item
        for visit in visits:
            self._state[visit.customer_id].stored_visits.append(visit.body)
        self._plan = BatchPlan()
        self._touched: list[str] = []

    def apply(self, command: RecordsCommand) -> Applied:
        """Apply one command (its id already claimed as new); returns what to audit."""
        cid = command.customer_id
        state = self._state.get(cid)
        if state is None:
            raise RegisterError("customer_not_locked")
        cipher = self._ciphers[cid]
        changes = changes_of(command)
        at = _utc(command.occurred_at)
        if state.version == state.row.version:
            self._touched.append(cid)
        state.version += 1
        state.correlation_id = command.correlation_id
        if changes.registers and state.registered_at is None:
            state.registered_at = at
        for change in changes.items:
            self._change_item(state, cipher, change, at, command.event_id)
        if changes.entry is not None:
            self._add_entry(state, cipher, changes.entry, at, command.event_id)
        applied = Applied(
            event_id=command.event_id,
            customer_id=cid,
            type=command.type,
            correlation_id=command.correlation_id,
            producer=command.producer,
            action=action_of(command),
            resource=resource_of(command),
            version=state.version,
        )
        self._plan.applied.append(applied)
        return applied

    def _change_item(
        self,
        state: _Customer,
        cipher: CustomerCipher,
        change: ItemChange,
        at: datetime,
        event_id: UUID,
    ) -> None:
        kind = str(change.kind)
        if change.kind in FACT_KINDS:
            state.plain[kind] = change.value
        current = state.current.get(kind)
        if current is not None:
            at = max(at, current.valid_from)
        if change.value is None:
            if current is not None:
                self._close(state, current, at, event_id)
            return
        text = canonical(change.value)
        digest = cipher.digest(kind, text)
        if current is not None and current.digest == digest and current.source == change.source:
            return
        if current is not None:
            self._close(state, current, at, event_id)
        data_class = ITEM_CLASS[kind]
        row = StoredItem(
            customer_id=state.row.customer_id,
            kind=kind,
            seq=state.version,
            value=cipher.seal_item(kind, text),
            digest=digest,
            source=change.source,
            data_class=data_class,
            valid_from=at,
            event_id=event_id,
        )
        state.new_rows[kind] = len(self._plan.items)
        self._plan.items.append(row)
        state.current[kind] = row
        state.classes.add(data_class)

    def _close(self, state: _Customer, row: StoredItem, at: datetime, event_id: UUID) -> None:
        del state.current[row.kind]
        index = state.new_rows.pop(row.kind, None)
        if index is not None:
            self._plan.items[index] = replace(row, valid_to=at, closed_by=event_id)
        else:
            self._plan.closures.append(
                Closure(row.customer_id, row.kind, row.seq, at, event_id),
            )

    def _add_entry(
        self,
        state: _Customer,
        cipher: CustomerCipher,
        entry: Entry,
        at: datetime,
        event_id: UUID,
    ) -> None:
        self._plan.entries.append(
            StoredEntry(
                customer_id=state.row.customer_id,
                event_id=event_id,
                context=entry.context,
                body=cipher.seal_entry(entry.context, canonical(entry.content)),
                source=entry.source,
                data_class=entry.data_class,
                occurred_at=at,
                kind=entry.kind,
                channel=entry.channel,
            )
        )
        state.classes.add(entry.data_class)
        if entry.context == VISIT_CONTEXT:
            state.new_visit_dates.append(entry.content["visit_date"])

    def finish(self, *, at: datetime | None = None) -> BatchPlan:
        """The plan: rows to write, customers' new versions, one snapshot per customer.

        Args:
            at: The snapshots' time, which the age bands are computed for (default: now).
        """
        moment = _utc(at) if at is not None else datetime.now(UTC)
        for cid in self._touched:
            state = self._state[cid]
            classes = frozenset(state.classes)
            self._plan.customers.append(
                CustomerUpdate(cid, state.version, state.registered_at, classes)
            )
            facts = self._facts(state, moment.date())
            self._plan.snapshots.append(_snapshot(state, classes, facts, moment))
        return self._plan

    def _facts(self, state: _Customer, on: date) -> AnalyticsFacts:
        """The customer's analytics facts: batch values in clear, the rest decrypted."""
        cipher = self._ciphers[state.row.customer_id]
        values = {str(k): state.plain[str(k)] for k in FACT_KINDS if str(k) in state.plain}
        stored = {
            str(k): state.current[str(k)].value
            for k in FACT_KINDS
            if str(k) not in values and str(k) in state.current
        }
        if stored:
            opened = cipher.open_items(stored)
            values |= {kind: _decoded_or_none(text) for kind, text in opened.items()}
        dates: list[Any] = []
        for body in state.stored_visits:
            content = _decoded_or_none(cipher.open_entry(VISIT_CONTEXT, body))
            if isinstance(content, dict):
                dates.append(content.get("visit_date"))
        dates += state.new_visit_dates
        return analytics_facts(values, dates, on)


def _decoded_or_none(text: str) -> Any:  # noqa: ANN401 - any JSON-compatible value
    """A decrypted JSON text's value; None when masked (shredded) or not JSON."""
    try:
        return None if text == crypto.SHREDDED else json.loads(text)
    except json.JSONDecodeError:
        return None


def _snapshot(
    state: _Customer, classes: frozenset[str], facts: AnalyticsFacts, at: datetime
) -> CustomerRecord:
    """The `CustomerRecord` of a customer's state: every current item's stored ciphertext."""
    current = sorted(state.current.items())
    fields: dict[str, Any] = {
        "customer_id": state.row.customer_id,
        "version": state.version,
        "occurred_at": at,
        "registered": state.registered_at is not None,
        "data_classes": tuple(sorted(classes)),
        "sources": {kind: row.source for kind, row in current},
        "pii": {kind: row.value for kind, row in current},
        "analytics": facts,
    }
    if state.correlation_id is not None:
        fields["correlation_id"] = state.correlation_id
    return CustomerRecord.model_validate(fields)


# --- The read side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemView:
    """A current item, decrypted.

    Attributes:
        kind: The item kind (`ItemKind`).
        value: The value (JSON-compatible), or `crypto.SHREDDED` when the key is gone.
        source: Where it came from.
        data_class: Its data class.
        since: When it became current.
        since_version: The customer's version that set it (the item version's `seq`).
    """

    kind: str
    value: Any
    source: str
    data_class: str
    since: datetime
    since_version: int


@dataclass(frozen=True, slots=True)
class ItemVersion:
    """One version of an item, for rectification history (`value` decrypted or masked)."""

    kind: str
    seq: int
    value: Any
    source: str
    data_class: str
    valid_from: datetime
    valid_to: datetime | None
    event_id: UUID
    closed_by: UUID | None
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class VisitView:
    """A visit: its date and treating staff (`{"staff_id", "name"}` each)."""

    visit_date: date | None
    treating_staff: tuple[dict[str, str], ...]
    occurred_at: datetime
    source: str
    data_class: str


@dataclass(frozen=True, slots=True)
class FeedbackView:
    """Feedback or a wish, with the customer's words."""

    kind: str
    channel: str | None
    text: str
    occurred_at: datetime
    source: str
    data_class: str


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer's current register entry, decrypted, with the size of its history.

    Attributes:
        customer_id: The customer number.
        version: The customer's register version.
        registered_at: When the registration occurred (None: only changes so far).
        created_at: When the row was created.
        updated_at: When the register last changed for the customer.
        data_classes: The data classes held on the customer (sorted).
        items: The current items by kind.
        history: How many versions each item kind has had (current and earlier ones); a kind
            with versions but no current item was removed.
        visits: The visits, oldest first.
        feedback: Feedback and wishes, oldest first.
        shredded: Whether the customer's key is gone (every value shows `crypto.SHREDDED`).
    """

    customer_id: str
    version: int
    registered_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    data_classes: tuple[str, ...]
    items: Mapping[str, ItemView]
    history: Mapping[str, int]
    visits: tuple[VisitView, ...]
    feedback: tuple[FeedbackView, ...]
    shredded: bool

    def value(self, kind: str) -> Any:  # noqa: ANN401 - any JSON-compatible value
        """The current value of an item, or None when it is not held."""
        item = self.items.get(kind)
        return item.value if item is not None else None

    @property
    def date_of_birth(self) -> date | None:
        """The date of birth, when held and readable."""
        value = self.value(ItemKind.DATE_OF_BIRTH)
        if not isinstance(value, str):
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None

    def age(self, on: date) -> int | None:
        """Age in whole years on a day, derived from the date of birth (never stored)."""
        born = self.date_of_birth
        return age_on(born, on) if born is not None else None


def _decoded(text: str) -> Any:  # noqa: ANN401 - any JSON-compatible value
    if text == crypto.SHREDDED:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RegisterError("stored_value_invalid") from None


def open_versions(cipher: CustomerCipher, rows: Sequence[StoredItem]) -> list[ItemVersion]:
    """Decrypt item versions, in the order given."""
    out: list[ItemVersion] = []
    for row in rows:
        text = cipher.open_items({row.kind: row.value})[row.kind]
        out.append(
            ItemVersion(
                kind=row.kind,
                seq=row.seq,
                value=_decoded(text),
                source=row.source,
                data_class=row.data_class,
                valid_from=row.valid_from,
                valid_to=row.valid_to,
                event_id=row.event_id,
                closed_by=row.closed_by,
                recorded_at=row.recorded_at,
            )
        )
    return out


def _visit(cipher: CustomerCipher, row: StoredEntry) -> VisitView:
    content = _decoded(cipher.open_entry(row.context, row.body))
    if not isinstance(content, dict):
        return VisitView(None, (), row.occurred_at, row.source, row.data_class)
    return VisitView(
        visit_date=date.fromisoformat(content["visit_date"]),
        treating_staff=tuple(content["treating_staff"]),
        occurred_at=row.occurred_at,
        source=row.source,
        data_class=row.data_class,
    )


def _feedback(cipher: CustomerCipher, row: StoredEntry) -> FeedbackView:
    content = _decoded(cipher.open_entry(row.context, row.body))
    text = content["text"] if isinstance(content, dict) else str(content)
    return FeedbackView(
        kind=row.kind or "feedback",
        channel=row.channel,
        text=text,
        occurred_at=row.occurred_at,
        source=row.source,
        data_class=row.data_class,
    )


def build_view(
    customer: CustomerRow,
    items: Sequence[StoredItem],
    entries: Sequence[StoredEntry],
    cipher: CustomerCipher,
) -> CustomerView:
    """A customer's view from their row, every version of their items, and their entries."""
    history: dict[str, int] = {}
    current: list[StoredItem] = []
    for row in items:
        history[row.kind] = history.get(row.kind, 0) + 1
        if row.current:
            current.append(row)
    texts = cipher.open_items({row.kind: row.value for row in current})
    views = {
        row.kind: ItemView(
            kind=row.kind,
            value=_decoded(texts[row.kind]),
            source=row.source,
            data_class=row.data_class,
            since=row.valid_from,
            since_version=row.seq,
        )
        for row in current
    }
    ordered = sorted(entries, key=lambda e: (e.occurred_at, e.event_id))
    return CustomerView(
        customer_id=customer.customer_id,
        version=customer.version,
        registered_at=customer.registered_at,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        data_classes=tuple(sorted(customer.data_classes)),
        items=MappingProxyType(dict(sorted(views.items()))),
        history=MappingProxyType(dict(sorted(history.items()))),
        visits=tuple(_visit(cipher, e) for e in ordered if e.context == VISIT_CONTEXT),
        feedback=tuple(_feedback(cipher, e) for e in ordered if e.context == FEEDBACK_CONTEXT),
        shredded=cipher.shredded,
    )
