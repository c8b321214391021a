"""The register's rules without I/O: commands to changes, versions, history, snapshots, views.

Also the wire side of the handler: opening sealed commands, and refusing malformed ones with a
reason code that quotes nothing. The builders here are reused by the repository and service
tests.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from pydantic import SecretStr

from contracts import intake as contract
from contracts.envelope import new_event_id
from contracts.records import PII_FIELDS, CustomerRecord
from contracts.sealing import TopicKey, seal
from services.common import audit, crypto, outbox
from services.common.kafka import PermanentError
from services.records import app as records_app
from services.records.domain import (
    ITEM_CLASS,
    Action,
    BatchPlanner,
    CustomerCipher,
    CustomerRow,
    DataClass,
    ItemKind,
    StoredEntry,
    StoredItem,
    age_band,
    analytics_facts,
    build_view,
    canonical,
    changes_of,
)
from services.records.handlers import COMMANDS_TOPIC, TransitKey, audit_event, decode_command
from services.records.repository import outbox_row
from services.records.settings import RecordsSettings

# Canary personal data: unique per run, so finding it anywhere means it leaked.
TAG = secrets.token_hex(4)
CANARY_GIVEN = f"Canarygiven{TAG}"
CANARY_FAMILY = f"Canaryfamily{TAG}"
CANARY_EMAIL = f"canary.{TAG}@example.com"
CANARY_HETU = "230785-9" + str(secrets.randbelow(10)) + str(secrets.randbelow(10)) + "X"
CANARY_STREET = f"Canarystreet {TAG} 1"
CANARY_FEEDBACK = f"Canary feedback {TAG}"
CANARIES = (CANARY_GIVEN, CANARY_FAMILY, CANARY_EMAIL, CANARY_HETU, CANARY_STREET, CANARY_FEEDBACK)

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def customer_id(prefix: str = "R") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def envelope(cid: str, occurred: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": extra.pop("event_id", None) or new_event_id(),
        "customer_id": cid,
        "producer": "reception-desk",
        "occurred_at": occurred,
        **extra,
    }


def registration(
    cid: str, occurred: datetime = T0, **overrides: Any
) -> contract.CustomerRegistered:
    fields: dict[str, Any] = {
        "demographics": {
            "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
            "hetu": CANARY_HETU,
            "date_of_birth": "1985-07-23",
            "gender": "female",
            "mother_tongue": "fi",
        },
        "contact": {
            "address": {"street": CANARY_STREET, "postal_code": "00100", "city": "Helsinki"},
            "phones": ["+358401234567"],
            "emails": [CANARY_EMAIL],
        },
        "preferred_language": "fi",
        "privacy_notice_version": "2026-01",
        "acquisition": {"channel": "web", "way": "spring campaign"},
        "billing_reference": f"INS-{TAG}",
    } | overrides
    return contract.CustomerRegistered.model_validate(envelope(cid, occurred) | fields)


def contact_change(
    cid: str, occurred: datetime = T0, **contact: Any
) -> contract.ContactDetailsChanged:
    extra = {k: contact.pop(k) for k in ("preferred_language", "source") if k in contact}
    return contract.ContactDetailsChanged.model_validate(
        envelope(cid, occurred) | {"contact": contact} | extra
    )


def demographics_change(
    cid: str, occurred: datetime = T0, **overrides: Any
) -> contract.DemographicsChanged:
    demographics: dict[str, Any] = {
        "name": {"given_names": CANARY_GIVEN, "family_name": CANARY_FAMILY},
        "hetu": CANARY_HETU,
        "date_of_birth": "1985-07-23",
        "gender": "female",
        "mother_tongue": "fi",
    } | overrides
    return contract.DemographicsChanged.model_validate(
        envelope(cid, occurred) | {"demographics": demographics}
    )


def visit(
    cid: str, occurred: datetime = T0, visit_date: str = "2026-01-14"
) -> contract.VisitRecorded:
    return contract.VisitRecorded.model_validate(
        envelope(cid, occurred)
        | {
            "visit_date": visit_date,
            "treating_staff": [{"staff_id": "dr.virtanen", "name": "Hammaslääkäri Virtanen"}],
        }
    )


def feedback(cid: str, occurred: datetime = T0) -> contract.FeedbackGiven:
    return contract.FeedbackGiven.model_validate(
        envelope(cid, occurred) | {"kind": "wish", "text": CANARY_FEEDBACK, "channel": "kiosk"}
    )


def guardians_change(cid: str, occurred: datetime = T0) -> contract.GuardianChanged:
    return contract.GuardianChanged.model_validate(
        envelope(cid, occurred)
        | {
            "guardians": [
                {
                    "type": "guardian",
                    "name": {"given_names": "Guardian", "family_name": CANARY_FAMILY},
                    "scope": ["health_care"],
                    "valid_from": "2020-01-01",
                }
            ],
            "no_disclosure_to_guardian": True,
        }
    )


def new_key(cid: str) -> crypto.DataKey:
    return crypto.DataKey(cid, os.urandom(32))


class Register:
    """A tiny in-memory register over the planner alone (no repository)."""

    def __init__(self) -> None:
        self.keys: dict[str, crypto.DataKey] = {}
        self.rows: dict[str, CustomerRow] = {}
        self.items: dict[tuple[str, str, int], StoredItem] = {}
        self.visits: list[StoredEntry] = []

    def apply(self, *commands: Any, now: datetime | None = None) -> Any:
        cids = sorted({c.customer_id for c in commands})
        rows = {cid: self.rows.get(cid, CustomerRow(cid)) for cid in cids}
        current = [i for i in self.items.values() if i.customer_id in rows and i.current]
        visits = [v for v in self.visits if v.customer_id in rows]
        ciphers = {
            cid: CustomerCipher(self.keys.setdefault(cid, new_key(cid)), cid) for cid in cids
        }
        planner = BatchPlanner(rows, current, ciphers, visits)
        for command in commands:
            planner.apply(command)
        plan = planner.finish(at=now)
        self.visits += [e for e in plan.entries if e.context == "VisitRecorded"]
        for c in plan.closures:
            item = self.items[c.customer_id, c.kind, c.seq]
            assert item.valid_to is None
            self.items[c.customer_id, c.kind, c.seq] = replace(
                item, valid_to=c.valid_to, closed_by=c.closed_by
            )
        for item in plan.items:
            self.items[item.customer_id, item.kind, item.seq] = item
        for u in plan.customers:
            old = self.rows.get(u.customer_id, CustomerRow(u.customer_id))
            self.rows[u.customer_id] = CustomerRow(
                u.customer_id, u.version, old.registered_at or u.registered_at, u.data_classes
            )
        return plan

    def versions(self, cid: str, kind: str) -> list[StoredItem]:
        return [i for (c, k, _), i in sorted(self.items.items()) if c == cid and k == kind]

    def current(self, cid: str) -> dict[str, Any]:
        cipher = CustomerCipher(self.keys[cid], cid)
        rows = {i.kind: i.value for (c, _, _), i in self.items.items() if c == cid and i.current}
        return {k: json.loads(v) for k, v in cipher.open_items(rows).items()}


def open_snapshot(record: CustomerRecord, key: crypto.DataKey) -> dict[str, Any]:
    aad = crypto.associated_data(record.customer_id, "CustomerRecord", 1)
    return {k: json.loads(v) for k, v in crypto.decrypt_fields(key, record.pii, aad).items()}


# --- command -> changes ---------------------------------------------------------------------


def test_registration_sets_every_item_with_its_source_and_class() -> None:
    changes = changes_of(registration("R-1", source="population_register"))
    by_kind = {c.kind: c for c in changes.items}
    assert changes.registers
    assert set(by_kind) == set(ItemKind)
    assert by_kind[ItemKind.NAME].value == {
        "given_names": CANARY_GIVEN,
        "family_name": CANARY_FAMILY,
    }
    assert by_kind[ItemKind.DATE_OF_BIRTH].value == "1985-07-23"
    assert by_kind[ItemKind.EMAILS].value == [CANARY_EMAIL]
    assert by_kind[ItemKind.TITLE].value is None  # none given: removed, not stored
    assert by_kind[ItemKind.GUARDIANS].value is None
    assert {c.source for c in changes.items} == {"population_register"}
    assert ITEM_CLASS[ItemKind.BILLING_REFERENCE] is DataClass.BILLING
    assert ITEM_CLASS[ItemKind.EMAILS] is DataClass.CUSTOMER_REGISTER
    assert set(ITEM_CLASS) == {str(k) for k in ItemKind}
    assert set(PII_FIELDS) == {str(k) for k in ItemKind}


def test_contact_change_touches_only_what_it_carries() -> None:
    changes = changes_of(contact_change("R-1", phones=[], preferred_language="sv"))
    assert [(c.kind, c.value) for c in changes.items] == [
        (ItemKind.PHONES, None),  # an empty list removes
        (ItemKind.PREFERRED_LANGUAGE, "sv"),
    ]


def test_visit_is_patient_record_and_feedback_keeps_kind_and_channel() -> None:
    v = changes_of(visit("R-1")).entry
    f = changes_of(feedback("R-1")).entry
    assert v is not None
    assert f is not None
    assert v.data_class is DataClass.PATIENT_RECORD
    assert v.source == "service_use"
    assert v.content["treating_staff"][0]["staff_id"] == "dr.virtanen"
    assert (f.kind, f.channel, f.data_class) == ("wish", "kiosk", DataClass.CUSTOMER_REGISTER)


def test_guardians_carry_the_disclosure_ban() -> None:
    (change,) = changes_of(guardians_change("R-1")).items
    assert change.kind is ItemKind.GUARDIANS
    assert change.value["no_disclosure_to_guardian"] is True
    assert change.value["guardians"][0]["scope"] == ["health_care"]


def test_canonical_json_is_order_free() -> None:
    assert canonical({"b": 1, "a": "ä"}) == canonical({"a": "ä", "b": 1}) == '{"a":"ä","b":1}'


# --- planning: versions, history, snapshots --------------------------------------------------


def test_registration_stores_encrypted_items_and_publishes_one_snapshot() -> None:
    reg = Register()
    cid = customer_id()
    command = registration(cid)
    plan = reg.apply(command)

    assert [(a.action, a.resource, a.version) for a in plan.applied] == [
        (Action.CREATE, "records.customer", 1)
    ]
    assert {i.seq for i in plan.items} == {1}
    assert not plan.closures
    stored = json.dumps([i.value for i in plan.items])
    for canary in CANARIES[:-1]:
        assert canary not in stored
    assert reg.current(cid)["emails"] == [CANARY_EMAIL]
    assert "title" not in reg.current(cid)

    (record,) = plan.snapshots
    assert (record.customer_id, record.version, record.registered) == (cid, 1, True)
    assert record.data_classes == ("billing", "customer_register")
    assert record.sources["hetu"] == "customer"
    assert record.correlation_id == command.correlation_id
    wire = record.to_bytes().decode()
    for canary in CANARIES:
        assert canary not in wire
    assert open_snapshot(record, reg.keys[cid]) == reg.current(cid)


def test_a_change_closes_the_old_version_and_keeps_it() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid))
    change = contact_change(cid, at(5), emails=["new@example.com"])
    plan = reg.apply(change)

    assert [(c.kind, c.seq, c.valid_to, c.closed_by) for c in plan.closures] == [
        ("emails", 1, at(5), change.event_id)
    ]
    old, new = reg.versions(cid, "emails")
    assert (old.seq, old.valid_to) == (1, at(5))
    assert (new.seq, new.valid_from, new.valid_to) == (2, at(5), None)
    assert reg.current(cid)["emails"] == ["new@example.com"]
    assert reg.current(cid)["address"]["street"] == CANARY_STREET  # untouched
    assert plan.applied[0].action is Action.UPDATE
    (record,) = plan.snapshots
    assert record.version == 2
    assert open_snapshot(record, reg.keys[cid])["emails"] == ["new@example.com"]


def test_an_unchanged_value_makes_no_new_version_but_a_new_source_does() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid))
    plan = reg.apply(demographics_change(cid, at(1)))
    assert not plan.items
    assert not plan.closures
    assert plan.customers[0].version == 2  # every applied command counts

    plan = reg.apply(contact_change(cid, at(2), emails=[CANARY_EMAIL], source="service_use"))
    assert [(i.kind, i.seq, i.source) for i in plan.items] == [("emails", 3, "service_use")]


def test_demographics_replace_the_whole_block() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid, title=None))
    plan = reg.apply(
        demographics_change(cid, at(1), title="Toimitusjohtaja", gender=None, mother_tongue="sv")
    )
    changed = sorted((i.kind, i.seq) for i in plan.items)
    assert changed == [("mother_tongue", 2), ("title", 2)]
    assert [c.kind for c in plan.closures] == ["gender", "mother_tongue"]
    current = reg.current(cid)
    assert "gender" not in current
    assert current["title"] == "Toimitusjohtaja"


def test_in_one_batch_the_last_change_wins_and_the_middle_is_history() -> None:
    reg = Register()
    cid = customer_id()
    commands = [
        registration(cid),
        contact_change(cid, at(1), emails=["one@example.com"]),
        contact_change(cid, at(2), emails=["two@example.com"]),
    ]
    plan = reg.apply(*commands)
    emails = reg.versions(cid, "emails")
    assert [(i.seq, i.valid_to is None) for i in emails] == [(1, False), (2, False), (3, True)]
    assert not plan.closures  # closed before they were ever written
    assert reg.current(cid)["emails"] == ["two@example.com"]
    (record,) = plan.snapshots
    assert record.version == 3
    assert [a.version for a in plan.applied] == [1, 2, 3]


def test_kafka_order_wins_over_timestamps_and_time_never_runs_backwards() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid, at(10)))
    reg.apply(contact_change(cid, at(3), emails=["late@example.com"]))  # dated earlier
    old, new = reg.versions(cid, "emails")
    assert reg.current(cid)["emails"] == ["late@example.com"]
    assert old.valid_to == new.valid_from == at(10)


def test_a_change_before_registration_creates_the_customer() -> None:
    reg = Register()
    cid = customer_id()
    plan = reg.apply(contact_change(cid, at(1), emails=["early@example.com"]))
    (record,) = plan.snapshots
    assert (record.version, record.registered) == (1, False)

    plan = reg.apply(registration(cid, at(2)))
    (record,) = plan.snapshots
    assert (record.version, record.registered) == (2, True)
    assert reg.current(cid)["emails"] == [CANARY_EMAIL]
    assert [i.seq for i in reg.versions(cid, "emails")] == [1, 2]


def test_item_versions_are_numbered_by_the_customer_version() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid))
    reg.apply(contact_change(cid, at(1), phones=[]))
    assert "phones" not in reg.current(cid)
    reg.apply(contact_change(cid, at(2), phones=["+358501112222"]))
    assert [(i.seq, i.valid_to is None) for i in reg.versions(cid, "phones")] == [
        (1, False),
        (3, True),
    ]


def test_visits_and_feedback_are_entries_with_their_classes() -> None:
    reg = Register()
    cid = customer_id()
    plan = reg.apply(registration(cid, billing_reference=None), visit(cid), feedback(cid))
    assert [e.context for e in plan.entries] == ["VisitRecorded", "FeedbackGiven"]
    assert CANARY_FEEDBACK not in plan.entries[1].body
    assert [(a.action, a.resource) for a in plan.applied] == [
        (Action.CREATE, "records.customer"),
        (Action.CREATE, "records.visit"),
        (Action.CREATE, "records.feedback"),
    ]
    (record,) = plan.snapshots
    assert record.data_classes == ("customer_register", "patient_record")
    assert record.version == 3


def test_age_bands_are_derived_on_the_day() -> None:
    on = date(2026, 6, 15)
    for born, band in (
        (date(2026, 6, 15), "0-14"),
        (date(2011, 6, 16), "0-14"),
        (date(2011, 6, 15), "15-24"),
        (date(2001, 6, 16), "15-24"),
        (date(2001, 6, 15), "25-34"),
        (date(1961, 6, 16), "55-64"),
        (date(1952, 6, 16), "65-74"),
        (date(1951, 6, 15), "75+"),
        (date(1901, 1, 1), "75+"),
        (date(2026, 6, 16), None),
    ):
        assert age_band(born, on) == band, born


def test_analytics_facts_keep_only_coarse_categories() -> None:
    facts = analytics_facts(
        {
            "date_of_birth": "1985-07-23",
            "preferred_language": "sv",
            "acquisition": {"channel": "referral", "way": CANARY_STREET},
        },
        ["2026-03-02", "2025-11-30", "not a date", None, "2026-03-20"],
        date(2026, 7, 22),
    )
    assert facts.model_dump() == {
        "age_band": "35-44",
        "preferred_language": "sv",
        "acquisition_channel": "referral",
        "visit_months": ("2025-11", "2026-03", "2026-03"),
    }
    assert CANARY_STREET not in facts.model_dump_json()
    odd = analytics_facts(
        {"date_of_birth": "[shredded]", "preferred_language": "de", "acquisition": "web"},
        [],
        date(2026, 7, 22),
    )
    assert odd.model_dump() == {
        "age_band": None,
        "preferred_language": None,
        "acquisition_channel": None,
        "visit_months": (),
    }


def test_snapshots_carry_analytics_facts_from_the_batch_and_from_storage() -> None:
    reg = Register()
    cid = customer_id()
    plan = reg.apply(
        registration(cid),
        visit(cid, at(1), visit_date="2026-01-14"),
        now=datetime(2026, 1, 20, tzinfo=UTC),
    )
    (record,) = plan.snapshots
    assert record.occurred_at == datetime(2026, 1, 20, tzinfo=UTC)
    assert record.analytics is not None
    assert record.analytics.model_dump() == {
        "age_band": "35-44",  # born 1985-07-23: 40 on the day of the snapshot
        "preferred_language": "fi",
        "acquisition_channel": "web",
        "visit_months": ("2026-01",),
    }
    assert "spring campaign" not in record.to_bytes().decode()
    assert "1985" not in record.analytics.model_dump_json()
    # A later batch: the stored items and visits are read back (decrypted), the new ones added;
    # the age band moves with the day of the snapshot.
    plan = reg.apply(
        visit(cid, at(2), visit_date="2025-12-30"),
        contact_change(cid, at(3), preferred_language="en"),
        visit(cid, at(4), visit_date="2026-01-02"),
        now=datetime(2030, 8, 1, tzinfo=UTC),
    )
    (record,) = plan.snapshots
    assert record.analytics is not None
    assert record.analytics.model_dump() == {
        "age_band": "45-54",
        "preferred_language": "en",
        "acquisition_channel": "web",
        "visit_months": ("2025-12", "2026-01", "2026-01"),
    }
    # Removing an item in the batch removes its fact; the stored ones still count.
    plan = reg.apply(demographics_change(cid, at(5), date_of_birth=None))
    (record,) = plan.snapshots
    assert record.analytics is not None
    assert record.analytics.age_band is None
    assert record.analytics.acquisition_channel == "web"
    assert len(record.analytics.visit_months) == 3


def test_several_customers_get_one_snapshot_each_in_first_seen_order() -> None:
    reg = Register()
    a, b = customer_id("A"), customer_id("B")
    plan = reg.apply(registration(b), registration(a), contact_change(b, at(1), phones=[]))
    assert [s.customer_id for s in plan.snapshots] == [b, a]
    assert [s.version for s in plan.snapshots] == [2, 1]


def test_ciphertexts_are_bound_to_their_customer_and_field() -> None:
    cid = customer_id()
    key = new_key(cid)
    cipher = CustomerCipher(key, cid)
    sealed = cipher.seal_item("emails", '["x@example.com"]')
    assert cipher.open_items({"emails": sealed}) == {"emails": '["x@example.com"]'}
    with pytest.raises(crypto.DecryptionError):
        cipher.open_items({"phones": sealed})
    other = CustomerCipher(crypto.DataKey("R-other", key.material), "R-other")
    with pytest.raises(crypto.DecryptionError):
        other.open_items({"emails": sealed})
    assert cipher.digest("emails", "x") != CustomerCipher(new_key(cid), cid).digest("emails", "x")
    with pytest.raises(Exception, match="key_mismatch"):
        CustomerCipher(key, "R-other")


# --- the read side ---------------------------------------------------------------------------


def test_view_decrypts_counts_history_and_derives_age() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid), visit(cid), feedback(cid))
    reg.apply(contact_change(cid, at(1), emails=["new@example.com"]))
    plan_entries = reg.apply(visit(cid, at(2))).entries
    items = [i for (c, _, _), i in sorted(reg.items.items()) if c == cid]
    view = build_view(reg.rows[cid], items, plan_entries, CustomerCipher(reg.keys[cid], cid))

    assert view.version == 5
    assert view.value("emails") == ["new@example.com"]
    assert view.items["emails"].since_version == 4
    assert view.history["emails"] == 2
    assert view.history["hetu"] == 1
    assert view.value("hetu") == CANARY_HETU
    assert view.items["billing_reference"].data_class == "billing"
    assert view.date_of_birth == date(1985, 7, 23)
    assert view.age(date(2026, 7, 22)) == 40
    assert view.age(date(2026, 7, 23)) == 41
    assert view.visits[0].treating_staff[0]["name"] == "Hammaslääkäri Virtanen"
    assert not view.shredded


def test_view_of_a_shredded_customer_is_masked() -> None:
    reg = Register()
    cid = customer_id()
    reg.apply(registration(cid))
    items = [i for (c, _, _), i in reg.items.items() if c == cid]
    view = build_view(reg.rows[cid], items, [], CustomerCipher(None, cid))
    assert view.shredded
    assert view.value("emails") == crypto.SHREDDED
    assert view.age(date(2026, 1, 1)) is None
    with pytest.raises(crypto.KeyShreddedError):
        CustomerCipher(None, cid).seal_item("emails", "[]")


# --- the wire: sealed commands ---------------------------------------------------------------

TOPIC_SECRET = TopicKey.generate()
KEY = TopicKey.from_b64(TOPIC_SECRET)


def sealed_record(
    command: Any, *, topic_key: TopicKey = KEY, key: str | None = None, offset: int = 0
) -> ConsumerRecord[bytes, bytes]:
    wire = seal(command.model_dump(mode="json"), topic_key)
    return raw_record(json.dumps(wire).encode(), key or command.customer_id, offset=offset)


def raw_record(value: bytes, key: str, *, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=COMMANDS_TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[],
    )


def test_a_sealed_command_opens_to_the_same_command() -> None:
    command = registration(customer_id())
    record = sealed_record(command)
    assert CANARY_EMAIL.encode() not in record.value
    assert decode_command(record, KEY) == command


def _reason(record: ConsumerRecord[bytes, bytes]) -> str:
    with pytest.raises(PermanentError) as caught:
        decode_command(record, KEY)
    message = str(caught.value)
    for canary in CANARIES:
        assert canary not in message
    assert caught.value.__cause__ is None
    return caught.value.reason


def test_malformed_commands_are_permanent_with_a_code() -> None:
    command = registration(customer_id())
    other_key = TopicKey.from_b64(TopicKey.generate())
    wire = seal(command.model_dump(mode="json"), KEY)
    tampered = wire | {"sealed": base64.b64encode(b"x" * 64).decode()}
    moved = wire | {"customer_id": "R-someone-else"}
    bad = command.model_dump(mode="json")
    bad["contact"]["emails"] = [CANARY_EMAIL] * 9  # too many: fails validation
    invalid = seal(bad, KEY)
    consent = contract.ConsentCaptured.model_validate(
        envelope(command.customer_id, T0)
        | {
            "purpose": "research",
            "notice_version": "v1",
            "language": "fi",
            "channel": "web",
            "actor": "customer",
        }
    )
    cases = {
        "not_json": raw_record(b"\xff{", command.customer_id),
        "not_object": raw_record(b"[1]", command.customer_id),
        "unexpected_type": sealed_record(consent),
        "sealed_undecryptable": sealed_record(command, topic_key=other_key),
        "sealed_invalid": raw_record(
            json.dumps(wire | {"sealed": "***"}).encode(), command.customer_id
        ),
        "invalid_command": raw_record(json.dumps(invalid).encode(), command.customer_id),
        "key_mismatch": sealed_record(command, key="R-wrong-key"),
    }
    for expected, record in cases.items():
        assert _reason(record) == expected, expected
    assert _reason(raw_record(json.dumps(tampered).encode(), command.customer_id)) == (
        "sealed_undecryptable"
    )
    assert _reason(raw_record(json.dumps(moved).encode(), "R-someone-else")) == (
        "sealed_undecryptable"
    )


# --- settings and app ------------------------------------------------------------------------


def _settings(**overrides: Any) -> RecordsSettings:
    return RecordsSettings(
        kafka_username="records",
        kafka_password=SecretStr("not-a-real-password"),
        pg_dsn=SecretStr("postgresql://localhost/x"),
        **overrides,
    )


def test_settings_read_the_records_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDS_BATCH_MAX_RECORDS", "250")
    monkeypatch.setenv("RECORDS_CONSUMER_GROUP_SUFFIX", "replay-1")
    monkeypatch.setenv("INTAKE_BATCH_MAX_RECORDS", "7")
    settings = _settings()
    assert settings.batch_max_records == 250
    assert settings.consumer_group_suffix == "replay-1"
    for name, info in RecordsSettings.model_fields.items():
        assert (info.description or "").strip(), name


def test_the_app_subscribes_to_commands_in_batches_as_its_own_group() -> None:
    app, ctx = records_app.build(_settings(batch_max_records=123, consumer_group_suffix="t-1"))
    assert ctx.service == "records"
    broker = app.broker
    assert isinstance(broker, KafkaBroker)
    (sub,) = broker.subscribers
    assert sub.topic_names_for_subscribe == [COMMANDS_TOPIC]  # type: ignore[attr-defined]
    assert sub.group_id == "records.t-1"  # type: ignore[attr-defined]
    assert sub.max_records == 123  # type: ignore[attr-defined]
    assert records_app.create_app(_settings()) is not None


def test_a_bad_transit_key_is_a_clear_startup_error() -> None:
    assert TransitKey({COMMANDS_TOPIC: SecretStr(TOPIC_SECRET)}).key is not None
    with pytest.raises(RuntimeError, match="topic_keys"):
        _ = TransitKey({}).key
    with pytest.raises(RuntimeError, match="topic_keys") as caught:
        _ = TransitKey({COMMANDS_TOPIC: SecretStr("not-a-key")}).key
    assert "not-a-key" not in str(caught.value)


# --- bulk outbox rows stay what the common helpers would write --------------------------------


class _RecordingConn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def is_in_transaction(self) -> bool:
        return True

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append((sql, args))
        return "SELECT 1"


async def test_outbox_rows_match_enqueue_event_and_audit_matches_emit() -> None:
    reg = Register()
    cid = customer_id()
    plan = reg.apply(registration(cid).model_copy(update={"producer": "intake"}))
    (snapshot,) = plan.snapshots
    conn = _RecordingConn()
    await outbox.enqueue_event(conn, topic="records.customer.v1", event=snapshot)  # type: ignore[arg-type]
    ((sql, args),) = conn.calls
    assert sql == outbox.ENQUEUE_SQL
    assert outbox_row("records.customer.v1", snapshot) == args

    (applied,) = plan.applied
    emitted = await audit.emit(
        conn,  # type: ignore[arg-type]
        service="records",
        actor="intake",
        action=applied.action,
        customer_id=cid,
        resource=applied.resource,
        outcome="success",
        correlation_id=applied.correlation_id,
    )
    ours = audit_event(applied)
    volatile = {"event_id", "occurred_at"}
    assert ours.model_dump(exclude=volatile) == emitted.model_dump(exclude=volatile)
