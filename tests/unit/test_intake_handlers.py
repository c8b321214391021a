"""Intake's handler with a fake repository: sealed in, sealed command or rejection out, once.

The handler is called directly for the routing rules, and through `TestKafkaBroker` for the
wiring (batch subscriber, raw records, fallback to one-by-one, dead letters). No network.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any
from uuid import UUID

import pytest
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from contracts.client import IntakeClient
from contracts.intake import SubmissionRejected
from contracts.sealing import (
    SUITE,
    TopicKey,
    _info,
    generate_keypair,
    load_private_key,
    load_public_key,
    seal,
    unseal,
)
from services.common.kafka import RetryPolicy, create_broker
from services.intake.domain import (
    MAX_SUBMISSION_BYTES,
    Accepted,
    Owner,
    Rejected,
    open_submission,
)
from services.intake.handlers import (
    REJECTIONS_TOPIC,
    SUBMISSIONS_TOPIC,
    Intake,
    TransitKeyError,
    TransitKeys,
    register,
)
from services.intake.hetu import build_hetu
from services.intake.repository import OutboxRow
from services.intake.settings import IntakeSettings

TODAY = date(2026, 1, 15)
COMMANDS_TOPIC = "records.commands.v1"
DLQ_TOPIC = "intake.submissions.v1.dlq"
TOO_LARGE = 1_000_100
"""Over intake's limit, under Kafka's default `max.message.bytes`."""
KAFKA_MAX_MESSAGE_BYTES = 1_048_588

INTAKE_PRIVATE, INTAKE_PUBLIC = generate_keypair()
RECORDS_TOPIC_SECRET = TopicKey.generate()
RECORDS_TOPIC_KEY = TopicKey.from_b64(RECORDS_TOPIC_SECRET)
CONSENT_TOPIC_SECRET = TopicKey.generate()
CONSENT_TOPIC_KEY = TopicKey.from_b64(CONSENT_TOPIC_SECRET)
OTHER_PRIVATE, OTHER_PUBLIC = generate_keypair()

TAG = secrets.token_hex(4)
CANARY_GIVEN = f"Canarygiven{TAG}"
CANARY_FAMILY = f"Canaryfamily{TAG}"
CANARY_EMAIL = f"canary.{TAG}@example.com"
CANARY_HETU = build_hetu(date(1985, 7, 23), 900 + secrets.randbelow(100), "-")
CANARIES = (CANARY_GIVEN, CANARY_FAMILY, CANARY_EMAIL, CANARY_HETU)


# --- Fakes and builders -------------------------------------------------------------------------


class FakeUnit:
    def __init__(self, inbox: set[UUID], *, fail: bool) -> None:
        self.inbox = inbox
        self.fail = fail
        self.claimed: set[UUID] = set()
        self.rows: list[OutboxRow] = []

    async def claim(self, event_ids: Sequence[UUID]) -> set[UUID]:
        new = {i for i in event_ids if i not in self.inbox}
        self.claimed |= new
        return set(new)

    async def enqueue(self, rows: Sequence[OutboxRow]) -> None:
        if self.fail:
            raise ConnectionResetError("database went away")
        self.rows.extend(rows)


class FakeRepository:
    """In-memory inbox and outbox; a transaction commits only when its block succeeds."""

    def __init__(self) -> None:
        self.inbox: set[UUID] = set()
        self.rows: list[OutboxRow] = []
        self.transactions = 0
        self.fail_when: Any = lambda _unit: False
        self.outage = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeUnit]:
        unit = FakeUnit(self.inbox, fail=False)
        yield unit
        if self.fail_when(unit):
            if self.outage:
                raise ConnectionResetError("database went away")
            raise RuntimeError("commit failed")  # a fault of the data, not an outage
        self.inbox |= unit.claimed
        self.rows.extend(unit.rows)
        self.transactions += 1

    def on(self, topic: str) -> list[OutboxRow]:
        return [row for row in self.rows if row.topic == topic]


def keys() -> TransitKeys:
    return TransitKeys(
        private=load_private_key(INTAKE_PRIVATE),
        owners={Owner.RECORDS: RECORDS_TOPIC_KEY, Owner.CONSENT: CONSENT_TOPIC_KEY},
    )


def make_intake(repository: FakeRepository) -> Intake:
    return Intake(repository, keys=keys(), clock=lambda: TODAY)


CLIENT = IntakeClient(
    bootstrap_servers="unused:9092",
    username="clinic-app",
    password="unused",  # noqa: S106 - never connects
    intake_public_key=INTAKE_PUBLIC,
    producer_name="reception-desk",
)


def registration(customer_id: str = "C-1001", **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "CustomerRegistered",
        "schema_version": 1,
        "occurred_at": "2026-01-14T09:30:00+02:00",
        "customer_id": customer_id,
        "demographics": {
            "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
            "hetu": CANARY_HETU,
        },
        "contact": {"phones": ["040 123 4567"], "emails": [CANARY_EMAIL]},
        "preferred_language": "fi",
        "privacy_notice_version": "2026.1",
    }
    return doc | overrides


def sealed(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    key, value, _ = CLIENT.encode(doc)
    return key, value


def record(value: bytes | None, key: bytes | None, offset: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic=SUBMISSIONS_TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=(),
    )


async def handle(intake: Intake, *items: tuple[bytes | None, bytes | None]) -> None:
    records = [record(value, key, offset) for offset, (key, value) in enumerate(items)]
    await intake.handle(records, broker=KafkaBroker(), policy=RetryPolicy(0, 0))


def rejection(row: OutboxRow) -> SubmissionRejected:
    assert row.topic == REJECTIONS_TOPIC
    return SubmissionRejected.model_validate_json(row.payload)


def assert_no_canary(row: OutboxRow) -> None:
    for canary in CANARIES:
        assert canary.encode() not in row.payload
        assert canary not in (row.key or "")
        assert canary not in row.headers_json()
        assert canary not in repr(row)


def hetu_with_bad_check_character() -> str:
    valid = build_hetu(date(1985, 7, 23), 900 + secrets.randbelow(100), "-")
    alphabet = "0123456789ABCDEFHJKLMNPRSTUVWXY"
    return valid[:-1] + alphabet[(alphabet.index(valid[-1]) + 1) % len(alphabet)]


# --- Accepted: a command sealed to records ------------------------------------------------------


async def test_sealed_registration_becomes_a_command_sealed_to_records() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    doc = registration()
    await handle(intake, sealed(doc))

    [row] = repo.rows
    assert row.topic == COMMANDS_TOPIC
    assert row.key == "C-1001"
    assert row.event_id == UUID(doc["event_id"])
    assert row.event_type == "CustomerRegistered"
    assert_no_canary(row)
    wire = json.loads(row.payload)
    assert set(wire) == {
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "customer_id",
        "producer",
        "sealed",
    }
    assert wire["producer"] == "intake"
    assert wire["event_id"] == doc["event_id"]
    command = unseal(wire, RECORDS_TOPIC_KEY)
    assert command["demographics"]["name"]["given_names"] == CANARY_GIVEN
    assert command["demographics"]["hetu"] == CANARY_HETU
    assert command["demographics"]["date_of_birth"] == "1985-07-23"
    assert command["contact"]["phones"] == ["+358401234567"]
    assert command["contact"]["emails"] == [CANARY_EMAIL]
    assert command["occurred_at"].startswith("2026-01-14T07:30:00")
    assert json.loads(row.headers_json()) == {
        "content-type": "application/json",
        "correlation_id": wire["correlation_id"],
        "event_id": doc["event_id"],
        "event_type": "CustomerRegistered",
    }
    assert intake.counts["accepted"] == 1
    assert repo.inbox == {UUID(doc["event_id"])}


async def test_consent_submission_is_sealed_to_consent_and_routed() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    doc = {
        "event_id": str(uuid.uuid4()),
        "type": "ObjectionLodged",
        "occurred_at": "2026-01-14T09:30:00+02:00",
        "customer_id": "C-1001",
        "objection": "distance_selling",
        "channel": "desk",
        "actor": "customer",
        "recorded_by": "staff-3",
        "grounds": CANARY_FAMILY,
    }
    await handle(intake, sealed(doc))

    [row] = repo.rows
    assert row.topic == "consent.commands.v1"
    assert row.key == "C-1001"
    assert row.event_id == UUID(doc["event_id"])
    assert_no_canary(row)
    wire = json.loads(row.payload)
    with pytest.raises(Exception, match="sealed_undecryptable"):
        unseal(wire, RECORDS_TOPIC_KEY)
    command = unseal(wire, CONSENT_TOPIC_KEY)
    assert command["objection"] == "distance_selling"
    assert command["grounds"] == CANARY_FAMILY
    assert command["producer"] == "intake"


async def test_command_does_not_open_with_intakes_own_key() -> None:
    repo = FakeRepository()
    await handle(make_intake(repo), sealed(registration()))
    wire = json.loads(repo.rows[0].payload)
    with pytest.raises(Exception, match="sealed_undecryptable"):
        unseal(wire, load_private_key(INTAKE_PRIVATE))


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("ContactDetailsChanged", {"contact": {"emails": ["a@example.com"]}}),
        (
            "DemographicsChanged",
            {"demographics": {"name": {"given_names": "A", "family_name": "B"}}},
        ),
        ("GuardianChanged", {"guardians": []}),
        (
            "VisitRecorded",
            {"visit_date": "2026-01-14", "treating_staff": [{"staff_id": "d-7", "name": "D"}]},
        ),
        ("FeedbackGiven", {"text": "Kiitos!"}),
    ],
)
async def test_every_records_type_is_forwarded(event_type: str, payload: dict[str, Any]) -> None:
    repo = FakeRepository()
    doc = {"event_id": str(uuid.uuid4()), "type": event_type, "customer_id": "C-7", **payload}
    await handle(make_intake(repo), sealed(doc))
    [row] = repo.rows
    assert (row.topic, row.event_type, row.event_id) == (
        COMMANDS_TOPIC,
        event_type,
        UUID(doc["event_id"]),
    )


# --- Rejected: every bad input with its reason --------------------------------------------------


def _without_customer_id() -> tuple[bytes | None, bytes | None]:
    doc = registration()
    del doc["customer_id"]
    doc["producer"] = "reception-desk"
    wire = seal(doc, load_public_key(INTAKE_PUBLIC))
    return None, json.dumps(wire).encode()


def _in_clear() -> tuple[bytes | None, bytes | None]:
    doc = registration() | {"producer": "reception-desk"}
    return b"C-1001", json.dumps(doc).encode()


def _sealed_to_another_key() -> tuple[bytes | None, bytes | None]:
    doc = registration() | {"producer": "reception-desk"}
    wire = seal(doc, load_public_key(OTHER_PUBLIC))
    return b"C-1001", json.dumps(wire).encode()


def _sealed_and_clear() -> tuple[bytes | None, bytes | None]:
    key, value = sealed(registration())
    wire = json.loads(value) | {"contact": {"emails": [CANARY_EMAIL]}}
    return key, json.dumps(wire).encode()


def _sealed_garbage() -> tuple[bytes | None, bytes | None]:
    key, value = sealed(registration())
    wire = json.loads(value) | {"sealed": base64.b64encode(b"not hpke").decode()[:-1] + "!"}
    return key, json.dumps(wire).encode()


def _moved_seal() -> tuple[bytes | None, bytes | None]:
    key, value = sealed(registration())
    wire = json.loads(value) | {"event_id": str(uuid.uuid4())}
    return key, json.dumps(wire).encode()


BAD_INPUTS: dict[str, tuple[Any, str, str | None]] = {
    "not_json": (lambda: (b"C-1001", b"{not json"), "not_json", None),
    "not_utf8": (lambda: (b"C-1001", b'{"type": "\xff"}'), "not_utf8", None),
    "too_large": (lambda: (b"C-1001", b"x" * TOO_LARGE), "too_large", None),
    "unknown_type": (
        lambda: sealed(registration(type="CustomerDeleted")),
        "unknown_type",
        "type",
    ),
    "unknown_schema_version": (
        lambda: sealed(registration(schema_version=2)),
        "unknown_schema_version",
        "schema_version",
    ),
    "missing_customer_id": (_without_customer_id, "missing_customer_id", "customer_id"),
    "hetu_checksum": (
        lambda: sealed(
            registration(
                demographics={
                    "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
                    "hetu": hetu_with_bad_check_character(),
                }
            )
        ),
        "hetu_checksum",
        "demographics.hetu",
    ),
    "hetu_century_sign": (
        lambda: sealed(
            registration(
                demographics={
                    "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
                    "hetu": CANARY_HETU.replace("-", "Q"),
                }
            )
        ),
        "hetu_format",
        "demographics.hetu",
    ),
    "email_invalid": (
        lambda: sealed(registration(contact={"emails": [CANARY_EMAIL.replace("@", "")]})),
        "email_invalid",
        "contact.emails[0]",
    ),
    "not_sealed": (_in_clear, "not_sealed", None),
    "sealed_and_clear": (_sealed_and_clear, "not_sealed", None),
    "sealed_invalid": (_sealed_garbage, "sealed_invalid", "sealed"),
    "sealed_undecryptable": (_sealed_to_another_key, "sealed_undecryptable", "sealed"),
    "seal_moved_to_another_event": (_moved_seal, "sealed_undecryptable", "sealed"),
    "not_supported_yet": (
        lambda: sealed(
            {
                "event_id": str(uuid.uuid4()),
                "type": "PhotoUploaded",
                "customer_id": "C-1001",
                "upload_id": str(uuid.uuid4()),
                "view": "front",
                "sha256": "ab" * 32,
                "size_bytes": 123_456,
            }
        ),
        "not_supported_yet",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_submission_is_rejected_with_its_reason(name: str) -> None:
    build, code, field = BAD_INPUTS[name]
    key, value = build()
    repo = FakeRepository()
    intake = make_intake(repo)
    await handle(intake, (key, value))

    [row] = repo.rows
    event = rejection(row)
    assert [(r.code, r.field) for r in event.reasons][:1] == [(code, field)]
    assert event.producer == "intake"
    assert row.event_id == event.event_id
    assert row.event_type == "SubmissionRejected"
    assert row.key == (key.decode() if key else None)
    assert_no_canary(row)
    if code not in {"not_json", "not_utf8", "too_large"}:
        assert event.submission_event_id == UUID(json.loads(value)["event_id"])
        assert repo.inbox == {event.submission_event_id}
    else:
        assert event.submission_event_id is None
        assert repo.inbox == set()
    assert intake.counts["rejected"] == 1
    assert intake.counts["accepted"] == 0


def test_the_too_large_case_is_over_the_limit_and_under_kafkas() -> None:
    assert MAX_SUBMISSION_BYTES < TOO_LARGE < KAFKA_MAX_MESSAGE_BYTES


async def test_missing_customer_id_rejection_has_no_key() -> None:
    repo = FakeRepository()
    await handle(make_intake(repo), _without_customer_id())
    assert repo.rows[0].key is None
    assert rejection(repo.rows[0]).customer_id is None


async def test_tombstone_and_empty_key_are_rejected_not_raised() -> None:
    repo = FakeRepository()
    await handle(make_intake(repo), (b"", None), (None, b""))
    assert [rejection(r).reasons[0].code for r in repo.rows] == ["not_json", "not_json"]


# --- Exactly once per event_id ------------------------------------------------------------------


async def test_repeated_event_id_is_a_no_op() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    valid = sealed(registration())
    invalid = sealed(registration(schema_version=9))
    await handle(intake, valid, invalid)
    await handle(intake, valid, invalid)
    await handle(intake, valid)

    assert len(repo.on(COMMANDS_TOPIC)) == 1
    assert len(repo.on(REJECTIONS_TOPIC)) == 1
    assert intake.counts == {"accepted": 1, "rejected": 1, "duplicates": 3, "dead_lettered": 0}


async def test_repeat_within_one_batch_writes_once_in_order() -> None:
    repo = FakeRepository()
    first, second = registration("C-1"), registration("C-2")
    a, b = sealed(first), sealed(second)
    await handle(make_intake(repo), a, b, a, b, a)
    assert [row.event_id for row in repo.rows] == [
        UUID(first["event_id"]),
        UUID(second["event_id"]),
    ]


async def test_same_event_id_with_other_content_is_still_a_no_op() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    doc = registration()
    await handle(intake, sealed(doc))
    await handle(intake, sealed(doc | {"schema_version": 3}))
    assert len(repo.rows) == 1


async def test_unreadable_submissions_are_rejected_every_time() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    await handle(intake, (b"C-1", b"[]"))
    await handle(intake, (b"C-1", b"[]"))
    assert len(repo.on(REJECTIONS_TOPIC)) == 2
    assert len({row.event_id for row in repo.rows}) == 2


async def test_batch_keeps_per_customer_order() -> None:
    repo = FakeRepository()
    docs = [
        {"event_id": str(uuid.uuid4()), "type": "FeedbackGiven", "customer_id": f"C-{i % 3}"}
        | {"text": f"palaute {i}"}
        for i in range(30)
    ]
    await handle(make_intake(repo), *(sealed(d) for d in docs))
    assert [row.event_id for row in repo.rows] == [UUID(d["event_id"]) for d in docs]
    assert repo.transactions == 1


# --- Failures: a transaction fails, a record cannot be prepared ---------------------------------


async def test_failed_batch_is_applied_one_by_one() -> None:
    repo = FakeRepository()
    repo.fail_when = lambda unit: len(unit.rows) > 1
    intake = make_intake(repo)
    docs = [registration(f"C-{i}") for i in range(4)]
    await handle(intake, *(sealed(d) for d in docs))
    assert [row.event_id for row in repo.rows] == [UUID(d["event_id"]) for d in docs]
    assert repo.transactions == 4
    assert intake.counts["accepted"] == 4


async def test_missing_keys_fail_the_batch_not_each_record() -> None:
    intake = Intake(FakeRepository(), clock=lambda: TODAY)
    with pytest.raises(RuntimeError, match="no transit keys"):
        await handle(intake, sealed(registration()))


# --- Through the broker (TestKafkaBroker) -------------------------------------------------------


def intake_settings(**overrides: Any) -> IntakeSettings:
    values: dict[str, Any] = {
        "kafka_username": "intake",
        "kafka_password": SecretStr("unit-test-password"),
        "pg_dsn": SecretStr("postgresql://unused"),
        "max_retries": 1,
        "retry_backoff_ms": 1,
        "batch_max_records": 50,
    }
    return IntakeSettings(**(values | overrides))


async def test_subscriber_handles_batches_of_raw_records() -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    broker = create_broker(intake_settings(), service="intake")
    register(broker, intake, intake_settings())
    valid = registration()
    key, value = sealed(valid)
    async with TestKafkaBroker(broker) as br:
        await br.publish_batch(value, b"\xff\xfe", topic=SUBMISSIONS_TOPIC)  # no keys
        await br.publish(value, SUBMISSIONS_TOPIC, key=key)
    assert [row.topic for row in repo.rows] == [COMMANDS_TOPIC, REJECTIONS_TOPIC]
    assert rejection(repo.rows[1]).reasons[0].code == "not_utf8"
    assert intake.counts["duplicates"] == 1


async def test_record_that_cannot_be_prepared_goes_alone_to_the_dlq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = FakeRepository()
    intake = make_intake(repo)
    broker = create_broker(intake_settings(), service="intake")
    register(broker, intake, intake_settings())
    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(DLQ_TOPIC)
    async def capture(message: KafkaMessage) -> None:
        dead.append((message.body, dict(message.headers)))

    original = intake.prepare
    poison = sealed(registration("C-POISON"))

    def prepare(value: bytes | None, key: bytes | None, today: date) -> Any:
        if value == poison[1]:
            raise ValueError(CANARY_EMAIL)  # a bug whose message quotes personal data
        return original(value, key, today)

    monkeypatch.setattr(intake, "prepare", prepare)
    before, after = sealed(registration("C-1")), sealed(registration("C-2"))
    async with TestKafkaBroker(broker) as br:
        for key, value in (before, poison, after):
            await br.publish(value, SUBMISSIONS_TOPIC, key=key)
        await br.publish_batch(before[1], poison[1], after[1], topic=SUBMISSIONS_TOPIC)

    assert len(repo.on(COMMANDS_TOPIC)) == 2
    assert len(dead) == 2
    for body, headers in dead:
        assert body == poison[1]
        assert headers["x-error"] == "intake_prepare_failed"
        assert CANARY_EMAIL not in json.dumps(headers)
    assert intake.counts["dead_lettered"] == 2


# --- Keys and settings --------------------------------------------------------------------------


def test_transit_keys_load_from_settings() -> None:
    loaded = TransitKeys.from_settings(
        intake_settings(
            transit_private_key=SecretStr(INTAKE_PRIVATE),
            topic_keys={
                "records.commands.v1": SecretStr(RECORDS_TOPIC_SECRET),
                "consent.commands.v1": SecretStr(CONSENT_TOPIC_SECRET),
            },
        )
    )
    assert set(loaded.owners) == {Owner.RECORDS, Owner.CONSENT}
    assert INTAKE_PRIVATE not in repr(loaded)


@pytest.mark.parametrize(
    ("private", "public", "message"),
    [
        ("", {"records.commands.v1": RECORDS_TOPIC_SECRET}, "transit_private_key"),
        ("not base64!", {"records.commands.v1": RECORDS_TOPIC_SECRET}, "transit_private_key"),
        (INTAKE_PRIVATE, {"consent.commands.v1": CONSENT_TOPIC_SECRET}, "records"),
        (
            INTAKE_PRIVATE,
            {"records.commands.v1": "AAAA", "consent.commands.v1": CONSENT_TOPIC_SECRET},
            "records",
        ),
        (INTAKE_PRIVATE, {"records.commands.v1": RECORDS_TOPIC_SECRET}, "consent"),
    ],
)
def test_missing_or_bad_transit_keys_are_refused(
    private: str, public: dict[str, str], message: str
) -> None:
    bad = intake_settings(
        transit_private_key=SecretStr(private),
        topic_keys={k: SecretStr(v) for k, v in public.items()},
    )
    with pytest.raises(TransitKeyError, match=message) as caught:
        TransitKeys.from_settings(bad)
    assert INTAKE_PRIVATE not in str(caught.value)


def test_settings_read_the_intake_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_KAFKA_USERNAME", "intake")
    monkeypatch.setenv("INTAKE_KAFKA_PASSWORD", "pw")
    monkeypatch.setenv("INTAKE_PG_DSN", "postgresql://x")
    monkeypatch.setenv("INTAKE_BATCH_MAX_RECORDS", "42")
    monkeypatch.setenv(
        "INTAKE_TOPIC_KEYS", json.dumps({"records.commands.v1": RECORDS_TOPIC_SECRET})
    )
    monkeypatch.setenv("RECORDS_BATCH_MAX_RECORDS", "7")
    loaded = IntakeSettings()
    assert loaded.batch_max_records == 42
    assert loaded.consumer_group_suffix is None
    assert loaded.topic_keys["records.commands.v1"].get_secret_value() == RECORDS_TOPIC_SECRET
    for name, info in IntakeSettings.model_fields.items():
        assert info.description, name


def test_create_app_builds_without_keys_or_connections() -> None:
    from services.intake.app import build  # noqa: PLC0415 - the import itself is under test

    app, ctx = build(intake_settings())
    assert isinstance(ctx.extras["intake"], Intake)
    assert app.broker is not None


# --- The sealed path never raises ---------------------------------------------------------------

ENVELOPE = {
    "event_id": "0190a8c4-5a8e-7c3e-8d2b-3f1e2a4b5c6d",
    "type": "FeedbackGiven",
    "schema_version": 1,
    "occurred_at": "2026-01-14T09:30:00+02:00",
    "customer_id": "C-1001",
    "producer": "kiosk",
}


def seal_bytes(body: bytes) -> bytes:
    """Seal raw bytes (not necessarily JSON) the way `contracts.sealing.seal` seals a body."""
    ciphertext = SUITE.encrypt(body, load_public_key(INTAKE_PUBLIC), info=_info(ENVELOPE))
    return json.dumps(ENVELOPE | {"sealed": base64.b64encode(ciphertext).decode()}).encode()


def opened(value: bytes) -> Accepted | Rejected:
    return open_submission(
        value, key=b"C-1001", private_key=load_private_key(INTAKE_PRIVATE), today=TODAY
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "sealed_invalid"),
        (b"\xff\xfe", "sealed_invalid"),
        (b"[1]", "sealed_invalid"),
        (b'{"text": NaN}', "not_json"),
        (b'{"x":' * 50 + b"1" + b"}" * 50, "too_deep"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"text": "\\ud800"}', "not_json"),
        (b'{"text": true}', "field_type"),
        (b'{"text": "x" , "kind": "wish", "event_id": "other"}', None),
    ],
)
def test_sealed_body_is_checked_like_a_clear_one(body: bytes, code: str | None) -> None:
    result = opened(seal_bytes(body))
    if code is None:
        assert isinstance(result, Accepted)
        assert str(result.event.event_id) == ENVELOPE["event_id"]  # the clear envelope wins
        return
    assert isinstance(result, Rejected)
    assert result.codes[0] == code


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_any_sealed_bytes_never_raise(body: bytes) -> None:
    assert isinstance(opened(seal_bytes(body)), Accepted | Rejected)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=6), children, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=6,
    ),
    st.text(max_size=80),
)
def test_any_sealed_document_or_token_never_raises(body: dict[str, Any], token: str) -> None:
    wire = seal(ENVELOPE | body, load_public_key(INTAKE_PUBLIC))
    assert isinstance(opened(json.dumps(wire).encode()), Accepted | Rejected)
    assert isinstance(opened(json.dumps(wire | {"sealed": token}).encode()), Accepted | Rejected)


async def test_an_outage_leaves_the_batch_for_redelivery_and_dead_letters_nothing() -> None:
    repo = FakeRepository()
    repo.fail_when = lambda _unit: True
    repo.outage = True
    intake = make_intake(repo)
    with pytest.raises(ConnectionResetError):
        await handle(intake, *(sealed(registration(f"C-{i}")) for i in range(3)))
    assert repo.rows == []
    assert repo.transactions == 0
