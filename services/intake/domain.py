"""Intake's domain: turn the raw bytes of a submission into a routed command or a rejection.

Pure functions, no I/O. `open_submission` (what the handler runs) and `parse_submission` (the
same checks on a submission in clear, for tools and tests) run the checks in a fixed order and
stop at the first stage that fails, collecting every failure within that stage:

1. the bytes: size (on the raw length, before anything is parsed), UTF-8, JSON (no NaN/Infinity,
   no duplicate keys, bounded nesting), an object;
2. the envelope: event_id, a known type and schema version, a customer number that is opaque
   (never identity-code shaped) and equal to the Kafka key when one is given;
3. the seal (`open_submission` only): every payload field is inside `sealed`, which opens with
   intake's private key (`contracts.sealing`) into the full document; a payload field in clear is
   `not_sealed`, so personal data never rests in clear on Kafka;
4. the typed model (`contracts.intake`), validated strictly with JSON semantics: pydantic errors
   become reason codes with field paths, their input values dropped;
5. the domain rules: identity code (`services.intake.hetu`), e-mails normalised, phone numbers in
   E.164 (default region FI), dates not in the future, guardians' dates in order, the minor
   rules where the birth date is known, `occurred_at` with a time zone.

A valid submission becomes `Accepted`: the normalised event and its owner, which says where it
is routed. Anything else becomes `Rejected`: a `SubmissionRejected` carrying the submission's
event_id, type and reasons, and no value from the submission except the customer number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeGuard
from uuid import UUID

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from contracts.intake import (
    IDENTIFIER,
    SUBMISSION_TYPES,
    SUBMISSIONS,
    ContactDetails,
    ContactDetailsChanged,
    CustomerRegistered,
    Demographics,
    DemographicsChanged,
    Guardian,
    GuardianChanged,
    Reason,
    ReasonCode,
    Submission,
    SubmissionRejected,
    VisitRecorded,
)
from contracts.sealing import ENVELOPE_FIELDS, UnsealError, unseal
from services.intake.hetu import HetuError, is_hetu_shaped, validate_hetu

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

MAX_SUBMISSION_BYTES: Final = 1_000_000
"""Largest submission accepted, in bytes; larger ones are rejected `too_large`."""
MAX_DEPTH: Final = 32
"""Deepest JSON nesting accepted; the models need far less."""
MAX_REASONS: Final = 20
"""At most this many reasons go into one rejection, so a hostile payload cannot inflate it."""
PRODUCER: Final = "intake"
"""The `producer` of the events intake publishes."""
DEFAULT_PHONE_REGION: Final = "FI"
"""Phone numbers without a country code are read as Finnish."""
CLOCK_SLACK: Final = timedelta(days=1)
"""Tolerance for the clinic's clock and time zone when refusing dates in the future."""
MAJORITY_AGE: Final = 18
SEALED_FIELD: Final = "sealed"
"""The wire field holding everything but the envelope, sealed to intake's public key."""

_CUSTOMER_ID: Final = re.compile(IDENTIFIER)
_CUSTOMER_ID_MAX: Final = 64
_PATH_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Owner(StrEnum):
    """The service a submission is routed to; each reads `<owner>.commands.v1`."""

    RECORDS = "records"
    CONSENT = "consent"
    PHOTOS = "photos"
    RIGHTS = "rights"

    @property
    def commands_topic(self) -> str:
        """The topic the owner consumes its commands from."""
        return f"{self.value}.commands.v1"


OWNERS: Final[Mapping[str, Owner]] = MappingProxyType(
    {
        "CustomerRegistered": Owner.RECORDS,
        "ContactDetailsChanged": Owner.RECORDS,
        "DemographicsChanged": Owner.RECORDS,
        "GuardianChanged": Owner.RECORDS,
        "VisitRecorded": Owner.RECORDS,
        "FeedbackGiven": Owner.RECORDS,
        "ConsentCaptured": Owner.CONSENT,
        "ConsentWithdrawn": Owner.CONSENT,
        "ObjectionLodged": Owner.CONSENT,
        "ObjectionLifted": Owner.CONSENT,
        "PhotoUploaded": Owner.PHOTOS,
        "RightsRequestReceived": Owner.RIGHTS,
    }
)
"""The owner of every submission type."""

SUPPORTED_OWNERS: Final = frozenset({Owner.RECORDS, Owner.CONSENT})
"""Owners that exist yet; submissions for the others are rejected `not_supported_yet`."""


def owner_of(event_type: str) -> Owner:
    """The service that owns a submission type.

    Raises:
        KeyError: Not a submission type.
    """
    return OWNERS[event_type]


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid submission, normalised, and where it goes.

    Attributes:
        event: The typed event, normalised (e-mails, E.164 phones, birth date from the code,
            `occurred_at` in UTC).
        owner: The service that owns it.
        supported: Whether that owner exists yet; if not, publish `not_supported_yet()` instead.
    """

    event: Submission = field(repr=False)  # personal data stays out of logs and test output
    owner: Owner
    supported: bool

    @property
    def key(self) -> bytes:
        """The Kafka key to forward it under: its customer number."""
        return self.event.customer_id.encode()

    @property
    def topic(self) -> str:
        """The topic to forward it to."""
        return self.owner.commands_topic

    def not_supported_yet(self) -> Rejected:
        """The rejection for a valid submission whose owner does not exist yet."""
        return _rejection(
            [Reason(code=ReasonCode.NOT_SUPPORTED_YET)],
            submission_event_id=self.event.event_id,
            submission_type=self.event.type,
            correlation_id=self.event.correlation_id,
            customer_id=self.event.customer_id,
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid (or not yet routable) submission: the rejection to publish."""

    event: SubmissionRejected

    @property
    def key(self) -> bytes | None:
        """The Kafka key for the rejection: the submission's customer number, when usable."""
        return self.event.customer_id.encode() if self.event.customer_id else None

    def to_bytes(self) -> bytes:
        """The rejection as it goes on the wire."""
        return self.event.to_bytes()

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes, in order."""
        return tuple(reason.code for reason in self.event.reasons)


def parse_submission(
    raw: bytes | None,
    *,
    key: bytes | None,
    today: date | None = None,
    supported: frozenset[Owner] = SUPPORTED_OWNERS,
) -> Accepted | Rejected:
    """Validate one submission written in clear (no seal). Never raises on any input.

    Intake itself refuses submissions in clear (see `open_submission`); this runs the same
    checks on a plain document, for tools and tests.

    Args:
        raw: The record value (None for a tombstone).
        key: The record key; when given it must equal the payload's `customer_id`.
        today: The current date, for the checks against the future (default: today in UTC);
            dates up to one day after it are tolerated.
        supported: Owners that exist yet (sets `Accepted.supported`).

    Returns:
        `Accepted` with the normalised event, or `Rejected` with every reason of the first
        stage that failed.
    """
    read = _read_envelope(raw, key=key)
    if isinstance(read, Rejected):
        return read
    envelope, _ = read
    return _validate(envelope, raw or b"", today=today, supported=supported)


def open_submission(
    raw: bytes | None,
    *,
    key: bytes | None,
    private_key: X25519PrivateKey,
    today: date | None = None,
    supported: frozenset[Owner] = SUPPORTED_OWNERS,
) -> Accepted | Rejected:
    """Validate one sealed submission from `intake.submissions.v1`. Never raises on any input.

    The envelope is read in clear; every other field must be inside `sealed`, which is opened
    with `private_key` and merged with the envelope (the clear envelope wins) before the model
    and the domain rules are checked.

    Args:
        raw: The record value (None for a tombstone).
        key: The record key; when given it must equal the envelope's `customer_id`.
        private_key: Intake's transit key, which the clinic apps seal to.
        today: The current date, for the checks against the future (default: today in UTC).
        supported: Owners that exist yet (sets `Accepted.supported`).

    Returns:
        `Accepted` with the normalised event, or `Rejected` with every reason of the first
        stage that failed: `not_sealed` when any payload field is in clear (or nothing is
        sealed), `sealed_invalid` / `sealed_undecryptable` when the seal does not open.
    """
    read = _read_envelope(raw, key=key)
    if isinstance(read, Rejected):
        return read
    envelope, wire = read
    opened = _open(wire, private_key)
    if isinstance(opened, Reason):
        return envelope.reject([opened])
    if _deeper_than(opened, MAX_DEPTH):
        return envelope.reject([Reason(code=ReasonCode.TOO_DEEP)])
    try:
        # The model is checked on JSON text, not on the dict: pydantic's strict mode differs
        # for Python input (a string is no UUID or date there, a list no tuple), and its lax
        # mode would take "1" for an int and "true" for a bool. Cheap next to the unsealing.
        text = json.dumps(opened, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return envelope.reject([Reason(code=ReasonCode.NOT_JSON)])
    return _validate(envelope, text, today=today, supported=supported)


def route_submission(
    raw: bytes | None,
    *,
    key: bytes | None,
    today: date | None = None,
    supported: frozenset[Owner] = SUPPORTED_OWNERS,
    private_key: X25519PrivateKey | None = None,
) -> Accepted | Rejected:
    """Like `open_submission` (or `parse_submission` without `private_key`), routed.

    A valid submission for a missing owner becomes its `not_supported_yet` rejection, so an
    `Accepted` here always has a supported owner. This is what the handler publishes.
    """
    if private_key is None:
        result = parse_submission(raw, key=key, today=today, supported=supported)
    else:
        result = open_submission(
            raw, key=key, private_key=private_key, today=today, supported=supported
        )
    if isinstance(result, Accepted) and not result.supported:
        return result.not_supported_yet()
    return result


def _read_envelope(
    raw: bytes | None, *, key: bytes | None
) -> tuple[_Envelope, dict[str, Any]] | Rejected:
    """Stages 1 and 2: the bytes and the envelope; the envelope and the document, or why not."""
    key_id = _usable_customer_id(key)
    doc = _decode(raw)
    if isinstance(doc, ReasonCode):
        return _rejection([Reason(code=doc)], customer_id=key_id)
    envelope = _Envelope.read(doc, key=key, key_id=key_id)
    if envelope.reasons or envelope.model is None:
        return envelope.reject(envelope.reasons)
    return envelope, doc


def _validate(
    envelope: _Envelope,
    text: bytes | str,
    *,
    today: date | None,
    supported: frozenset[Owner],
) -> Accepted | Rejected:
    """Stages 4 and 5: the typed model and the domain rules, on the document's JSON text."""
    if envelope.model is None:  # pragma: no cover - `_read_envelope` rejected it already
        return envelope.reject([])
    try:
        event = envelope.model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        return envelope.reject(_pydantic_reasons(exc))
    findings = _Findings(today or datetime.now(UTC).date())
    normalised = findings.check(event)
    if findings.reasons:
        return envelope.reject(findings.reasons)
    owner = owner_of(normalised.type)
    return Accepted(event=normalised, owner=owner, supported=owner in supported)


# --- Stage 1: the bytes -------------------------------------------------------------------


class _DuplicateKeyError(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKeyError
    return obj


def _refuse_constant(_name: str) -> Any:  # noqa: ANN401 - json's parse_constant signature
    raise ValueError("NaN and Infinity are not JSON")


def _decode(raw: bytes | None) -> dict[str, Any] | ReasonCode:  # noqa: PLR0911
    if not raw:
        return ReasonCode.NOT_JSON
    if len(raw) > MAX_SUBMISSION_BYTES:
        return ReasonCode.TOO_LARGE
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ReasonCode.NOT_UTF8
    try:
        doc = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError:
        return ReasonCode.DUPLICATE_KEY
    except RecursionError:
        return ReasonCode.TOO_DEEP
    except ValueError:
        return ReasonCode.NOT_JSON
    if not isinstance(doc, dict):
        return ReasonCode.NOT_OBJECT
    if _deeper_than(doc, MAX_DEPTH):
        return ReasonCode.TOO_DEEP
    return doc


def _deeper_than(doc: dict[str, Any], limit: int) -> bool:
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


# --- Stage 2: the envelope ----------------------------------------------------------------


def _valid_customer_id(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and len(value) <= _CUSTOMER_ID_MAX
        and _CUSTOMER_ID.fullmatch(value) is not None
        and not is_hetu_shaped(value)
    )


def _usable_customer_id(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _valid_customer_id(text) else None


def _uuid(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _read_type(
    doc: dict[str, Any], reasons: list[Reason]
) -> tuple[str | None, type[Submission] | None]:
    """The known submission type and its model for this version, if any; else a reason."""
    raw_type = doc.get("type")
    if raw_type is None:
        reasons.append(Reason(code=ReasonCode.FIELD_MISSING, field="type"))
        return None, None
    if not isinstance(raw_type, str) or raw_type not in SUBMISSION_TYPES:
        reasons.append(Reason(code=ReasonCode.UNKNOWN_TYPE, field="type"))
        return None, None
    version = doc.get("schema_version")
    if version is None:
        reasons.append(Reason(code=ReasonCode.FIELD_MISSING, field="schema_version"))
        return raw_type, None
    # `type(...) is int`: JSON `true` must not pass as version 1.
    if type(version) is not int or (raw_type, version) not in SUBMISSIONS:
        reasons.append(Reason(code=ReasonCode.UNKNOWN_SCHEMA_VERSION, field="schema_version"))
        return raw_type, None
    return raw_type, SUBMISSIONS[raw_type, version]


def _customer_id_problem(
    customer_id: object, *, key: bytes | None, key_id: str | None
) -> ReasonCode | None:
    if customer_id is None or customer_id == "":
        return ReasonCode.MISSING_CUSTOMER_ID
    if not isinstance(customer_id, str):
        return ReasonCode.FIELD_TYPE
    if not _valid_customer_id(customer_id):
        return ReasonCode.CUSTOMER_ID_INVALID
    if key is not None and key_id != customer_id:
        return ReasonCode.KEY_MISMATCH
    return None


@dataclass(frozen=True, slots=True)
class _Envelope:
    """What intake could read of the envelope, enough to address a rejection."""

    reasons: list[Reason]
    model: type[Submission] | None
    event_id: UUID | None
    correlation_id: UUID | None
    type: str | None
    customer_id: str | None

    @classmethod
    def read(cls, doc: dict[str, Any], *, key: bytes | None, key_id: str | None) -> _Envelope:
        reasons: list[Reason] = []
        event_id = _uuid(doc.get("event_id"))
        if doc.get("event_id") is None:
            reasons.append(Reason(code=ReasonCode.FIELD_MISSING, field="event_id"))
        elif event_id is None:
            reasons.append(Reason(code=ReasonCode.FIELD_FORMAT, field="event_id"))
        known_type, model = _read_type(doc, reasons)
        customer_id = doc.get("customer_id")
        code = _customer_id_problem(customer_id, key=key, key_id=key_id)
        if code is not None:
            reasons.append(Reason(code=code, field="customer_id"))
        if key_id is None and key is None and _valid_customer_id(customer_id):
            key_id = customer_id
        return cls(
            reasons=reasons,
            model=model,
            event_id=event_id,
            correlation_id=_uuid(doc.get("correlation_id")),
            type=known_type,
            customer_id=key_id,
        )

    def reject(self, reasons: Sequence[Reason]) -> Rejected:
        return _rejection(
            reasons,
            submission_event_id=self.event_id,
            submission_type=self.type,
            correlation_id=self.correlation_id,
            customer_id=self.customer_id,
        )


def _rejection(
    reasons: Iterable[Reason],
    *,
    customer_id: str | None,
    submission_event_id: UUID | None = None,
    submission_type: str | None = None,
    correlation_id: UUID | None = None,
) -> Rejected:
    unique = tuple(dict.fromkeys(reasons))[:MAX_REASONS]
    extra: dict[str, Any] = {} if correlation_id is None else {"correlation_id": correlation_id}
    return Rejected(
        SubmissionRejected(
            producer=PRODUCER,
            customer_id=customer_id,
            submission_event_id=submission_event_id,
            submission_type=submission_type,
            reasons=unique or (Reason(code=ReasonCode.FIELD_INVALID),),
            **extra,
        )
    )


# --- Stage 3: the seal --------------------------------------------------------------------


def _open(wire: dict[str, Any], private_key: X25519PrivateKey) -> dict[str, Any] | Reason:
    """The full document from a sealed wire document, or the reason it does not open."""
    if SEALED_FIELD not in wire or any(
        name not in ENVELOPE_FIELDS and name != SEALED_FIELD for name in wire
    ):
        # Which field was in clear is not said: a field name can itself be personal data.
        return Reason(code=ReasonCode.NOT_SEALED)
    try:
        return unseal(wire, private_key)
    except UnsealError as exc:
        code = (
            ReasonCode.SEALED_UNDECRYPTABLE
            if exc.reason == ReasonCode.SEALED_UNDECRYPTABLE
            else ReasonCode.SEALED_INVALID
        )
        return Reason(code=code, field=SEALED_FIELD)
    except RecursionError:
        return Reason(code=ReasonCode.TOO_DEEP)


# --- Stage 4: the typed model -------------------------------------------------------------

_PYDANTIC_CODES: Final[Mapping[str, ReasonCode]] = MappingProxyType(
    {
        "missing": ReasonCode.FIELD_MISSING,
        "string_too_long": ReasonCode.FIELD_TOO_LONG,
        "string_too_short": ReasonCode.FIELD_TOO_SHORT,
        "too_long": ReasonCode.TOO_MANY_ITEMS,
        "too_short": ReasonCode.TOO_FEW_ITEMS,
        "string_pattern_mismatch": ReasonCode.FIELD_FORMAT,
        "literal_error": ReasonCode.FIELD_VALUE,
        "enum": ReasonCode.FIELD_VALUE,
        "greater_than": ReasonCode.FIELD_VALUE,
        "greater_than_equal": ReasonCode.FIELD_VALUE,
        "less_than": ReasonCode.FIELD_VALUE,
        "less_than_equal": ReasonCode.FIELD_VALUE,
        "json_invalid": ReasonCode.NOT_JSON,
        "string_unicode": ReasonCode.NOT_UTF8,
    }
)
_LANGUAGE_FIELDS: Final = frozenset({"preferred_language", "language"})


def _json_path(loc: Iterable[int | str]) -> str | None:
    """A JSON path from a pydantic location, keeping only field names and indexes."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PATH_NAME.fullmatch(part):
            path += f".{part}" if path else part
    return path or None


def _pydantic_code(error_type: str, loc: tuple[int | str, ...]) -> ReasonCode:
    code = _PYDANTIC_CODES.get(error_type)
    if code is None:
        if error_type.endswith("_type"):
            code = ReasonCode.FIELD_TYPE
        elif error_type.endswith("_parsing"):
            code = ReasonCode.FIELD_FORMAT
        else:
            code = ReasonCode.FIELD_INVALID
    if code is ReasonCode.FIELD_VALUE and loc and loc[-1] in _LANGUAGE_FIELDS:
        return ReasonCode.LANGUAGE_INVALID
    return code


def _pydantic_reasons(exc: ValidationError) -> list[Reason]:
    """Reasons from a pydantic error: type and location only, the input values dropped."""
    reasons: list[Reason] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        reason = Reason(
            code=_pydantic_code(error["type"], error["loc"]), field=_json_path(error["loc"])
        )
        if reason not in reasons:
            reasons.append(reason)
            if len(reasons) == MAX_REASONS:
                break
    return reasons


# --- Stage 5: the domain rules ------------------------------------------------------------


def _normalise_email(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except (EmailNotValidError, ValueError, UnicodeError):
        return None


def _normalise_phone(value: str) -> str | None:
    try:
        number = phonenumbers.parse(value, DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def eighteenth_birthday(birth_date: date) -> date:
    """The day a person born on `birth_date` comes of age (29 February: 1 March)."""
    try:
        return birth_date.replace(year=birth_date.year + MAJORITY_AGE)
    except ValueError:
        return date(birth_date.year + MAJORITY_AGE, 3, 1)


class _Findings:
    """Runs the domain rules over a typed event, collecting reasons and normalised values."""

    def __init__(self, today: date) -> None:
        self.today = today
        self.latest = today + CLOCK_SLACK
        self.reasons: list[Reason] = []

    def fail(self, code: str, path: str) -> None:
        reason = Reason(code=code, field=path)
        if reason not in self.reasons:
            self.reasons.append(reason)

    def check(self, event: Submission) -> Submission:
        update: dict[str, Any] = {}
        if event.occurred_at.tzinfo is None:
            self.fail(ReasonCode.TIMEZONE_MISSING, "occurred_at")
        else:
            update["occurred_at"] = event.occurred_at.astimezone(UTC)
        if isinstance(event, CustomerRegistered):
            demographics = self.demographics(event.demographics, "demographics")
            update["demographics"] = demographics
            update["contact"] = self.contact(event.contact, "contact")
            update["guardians"] = self.guardians(
                event.guardians, "guardians", demographics.date_of_birth
            )
            self.disclosure_ban(event.no_disclosure_to_guardian, demographics.date_of_birth)
        elif isinstance(event, ContactDetailsChanged):
            update["contact"] = self.contact(event.contact, "contact")
        elif isinstance(event, DemographicsChanged):
            update["demographics"] = self.demographics(event.demographics, "demographics")
        elif isinstance(event, GuardianChanged):
            # The birth date is not in this event: records applies the minor rules.
            update["guardians"] = self.guardians(event.guardians, "guardians", None)
        elif isinstance(event, VisitRecorded) and event.visit_date > self.latest:
            self.fail(ReasonCode.DATE_IN_FUTURE, "visit_date")
        return event.model_copy(update=update)

    def demographics(self, value: Demographics, path: str) -> Demographics:
        birth_date = value.date_of_birth
        if value.hetu is not None:
            try:
                hetu = validate_hetu(value.hetu, today=self.latest)
            except HetuError as exc:
                self.fail(exc.reason, f"{path}.hetu")
            else:
                if birth_date is None:
                    birth_date = hetu.birth_date
                elif birth_date != hetu.birth_date:
                    self.fail(ReasonCode.DATE_OF_BIRTH_MISMATCH, f"{path}.date_of_birth")
        if birth_date is not None and birth_date > self.latest:
            self.fail(ReasonCode.DATE_IN_FUTURE, f"{path}.date_of_birth")
        return value.model_copy(update={"date_of_birth": birth_date})

    def contact(self, value: ContactDetails, path: str) -> ContactDetails:
        update: dict[str, Any] = {}
        if value.emails is not None:
            update["emails"] = self.each(
                value.emails, _normalise_email, ReasonCode.EMAIL_INVALID, f"{path}.emails"
            )
        if value.phones is not None:
            update["phones"] = self.each(
                value.phones, _normalise_phone, ReasonCode.PHONE_INVALID, f"{path}.phones"
            )
        return value.model_copy(update=update)

    def each(
        self,
        values: Sequence[str],
        normalise: Callable[[str], str | None],
        code: ReasonCode,
        path: str,
    ) -> tuple[str, ...]:
        out: list[str] = []
        for index, item in enumerate(values):
            normalised = normalise(item)
            if normalised is None:
                self.fail(code, f"{path}[{index}]")
            elif normalised not in out:
                out.append(normalised)
        return tuple(out)

    def guardians(
        self, guardians: Sequence[Guardian], path: str, birth_date: date | None
    ) -> tuple[Guardian, ...]:
        out: list[Guardian] = []
        for index, guardian in enumerate(guardians):
            here = f"{path}[{index}]"
            if guardian.valid_until is not None and guardian.valid_until < guardian.valid_from:
                self.fail(ReasonCode.GUARDIAN_DATES, f"{here}.valid_until")
            if (
                birth_date is not None
                and guardian.type == "guardian"
                and guardian.valid_from >= eighteenth_birthday(birth_date)
            ):
                self.fail(ReasonCode.GUARDIAN_NOT_MINOR, f"{here}.valid_from")
            update: dict[str, Any] = {"scope": tuple(dict.fromkeys(guardian.scope))}
            if guardian.contact is not None:
                update["contact"] = self.contact(guardian.contact, f"{here}.contact")
            out.append(guardian.model_copy(update=update))
        return tuple(out)

    def disclosure_ban(self, banned: bool, birth_date: date | None) -> None:  # noqa: FBT001
        if banned and birth_date is not None and self.today >= eighteenth_birthday(birth_date):
            self.fail(ReasonCode.NO_DISCLOSURE_NOT_MINOR, "no_disclosure_to_guardian")
