"""The wire contracts: committed documents are current, models follow the rules, audit is PII-free.

Also covers the generator itself (deterministic output, `--check`, AsyncAPI from a service app
found on disk) with a tiny FastStream app written into a temporary package, and the audit
emitter with the outbox replaced by a recorder.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from contracts import generate
from contracts.audit import AUDIT_TOPIC, AuditAction, AuditEvent, AuditOutcome, LegalBasis
from contracts.envelope import EVENT_TYPES, Event
from services.common import audit, outbox


def _contract_models() -> list[type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for name in generate.import_contract_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseModel)
                and value.__module__.startswith("contracts.")
            ):
                models[f"{value.__module__}.{value.__qualname__}"] = value
    return [models[k] for k in sorted(models)]


MODELS = _contract_models()


# --- committed documents --------------------------------------------------------------------


def test_committed_documents_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    status = generate.main(["--check"])
    report = capsys.readouterr().out
    if status:
        for path, text in generate.expected_files().items():
            old = path.read_text("utf-8") if path.exists() else ""
            report += "".join(
                list(difflib.unified_diff(old.splitlines(True), text.splitlines(True)))[:40]
            )
    assert status == 0, report


def test_every_event_type_has_a_committed_schema() -> None:
    types = generate.contract_event_types()
    assert "AuditEvent" in types
    for name, model in types.items():
        version = model.model_fields["schema_version"].default
        path = generate.SCHEMAS_DIR / f"{name}.v{version}.json"
        assert path.is_file(), path.name
        assert json.loads(path.read_text(encoding="utf-8"))["title"] == model.__name__


def test_schema_generation_is_deterministic() -> None:
    first = generate.schema_documents()
    second = generate.schema_documents()
    assert first == second
    assert all(text.endswith("}\n") for text in first.values())
    catalog = json.loads(first[generate.SCHEMAS_DIR / "topics.json"])
    names = [t["name"] for t in catalog["topics"]]
    assert names == sorted(names)
    assert AUDIT_TOPIC in names
    assert f"{AUDIT_TOPIC}.dlq" in names


def test_events_defined_outside_contracts_are_not_documented() -> None:
    before = dict(EVENT_TYPES)
    try:

        class OnlyInThisTest(Event):
            type: Literal["OnlyInThisTest"] = Field("OnlyInThisTest", description="A test.")

        assert EVENT_TYPES["OnlyInThisTest"] is OnlyInThisTest
        assert "OnlyInThisTest" not in generate.contract_event_types()
        assert not any("OnlyInThisTest" in p.name for p in generate.schema_documents())
    finally:
        EVENT_TYPES.clear()
        EVENT_TYPES.update(before)


# --- model rules ----------------------------------------------------------------------------


def test_models_were_found() -> None:
    names = {m.__name__ for m in MODELS}
    assert {"Event", "AuditEvent"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__qualname__)
def test_model_is_frozen_tolerant_and_documented(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "ignore"
    undocumented = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
    assert undocumented == []


CONTRACT_EVENTS = generate.contract_event_types()


@pytest.mark.parametrize("name", sorted(CONTRACT_EVENTS), ids=str)
def test_event_type_names_itself(name: str) -> None:
    model = CONTRACT_EVENTS[name]
    assert issubclass(model, Event)
    assert model.model_fields["type"].default == name
    version = model.model_fields["schema_version"].default
    assert isinstance(version, int)
    assert version >= 1


# --- the audit contract ---------------------------------------------------------------------


def _audit(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "producer": "records",
        "actor": "records",
        "actor_role": "service",
        "action": "read",
        "customer_id": "A-1001",
        "resource": "records.customer",
        "outcome": "success",
    } | overrides
    return AuditEvent.model_validate(fields)


def test_audit_event_round_trips() -> None:
    event = _audit(purpose="care", legal_basis="legal_obligation", reason_code="ok.fine")
    again = AuditEvent.model_validate_json(event.to_bytes())
    assert again == event
    assert again.action is AuditAction.READ
    assert again.outcome is AuditOutcome.SUCCESS
    assert again.legal_basis is LegalBasis.LEGAL_OBLIGATION
    assert EVENT_TYPES["AuditEvent"] is AuditEvent


@pytest.mark.parametrize(
    "overrides",
    [
        {"reason_code": "asiakas Maija Meikäläinen soitti"},
        {"purpose": "maija@example.fi"},
        {"resource": "Maija Meikäläinen"},
        {"actor_role": "Reception Desk"},
        {"actor": "maija meikäläinen"},
        {"action": "peek"},
        {"outcome": "maybe"},
        {"legal_basis": "because"},
        {"customer_id": "121212-123A Maija"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_audit_event_refuses_free_text(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        _audit(**overrides)


def test_audit_event_drops_unknown_fields() -> None:
    event = _audit(email="maija@example.fi", name="Maija")
    assert "maija" not in event.model_dump_json().lower()


# --- the audit emitter ----------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(
        self, conn: object, *, topic: str, event: Event, key: str | None = None
    ) -> None:
        self.calls.append({"conn": conn, "topic": topic, "event": event, "key": key})


async def test_emit_writes_through_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(outbox, "enqueue_event", recorder)
    conn = object()
    correlation = uuid.uuid4()
    event = await audit.emit(
        conn,  # type: ignore[arg-type]
        service="rights",
        actor="anna.k",
        actor_role="privacy_officer",
        action=AuditAction.EXPORT,
        customer_id="A-1001",
        resource="rights.access_copy",
        outcome=AuditOutcome.SUCCESS,
        purpose="data_subject_request",
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        correlation_id=correlation,
    )
    assert len(recorder.calls) == 1
    call = recorder.calls[0]
    assert call["conn"] is conn
    assert call["topic"] == AUDIT_TOPIC
    assert call["key"] is None  # the outbox keys by event.customer_id
    assert call["event"] is event
    assert event.customer_id == "A-1001"
    assert event.producer == "rights"
    assert event.actor == "anna.k"
    assert event.action is AuditAction.EXPORT
    assert event.correlation_id == correlation
    assert event.reason_code is None


async def test_emit_defaults_and_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(outbox, "enqueue_event", recorder)
    event = await audit.emit(
        object(),  # type: ignore[arg-type]
        service="marketing",
        actor="marketing",
        action="stop",
        customer_id="A-1001",
        resource="marketing.audience",
        outcome="denied",
        reason_code="consent_missing",
    )
    assert event.actor_role == audit.SERVICE_ROLE
    assert event.outcome is AuditOutcome.DENIED
    with pytest.raises(ValidationError):
        await audit.emit(
            object(),  # type: ignore[arg-type]
            service="marketing",
            actor="marketing",
            action="stop",
            customer_id="A-1001",
            resource="marketing.audience",
            outcome="denied",
            reason_code="Maija asked us to stop",
        )
    assert len(recorder.calls) == 1


# --- the generator, on a throw-away service app ----------------------------------------------

_SETTINGS = """
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore", frozen=True)
"""

_APP = """
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from contracts.audit import AuditEvent
from {package}.demo.settings import DemoSettings


def create_app(settings: DemoSettings) -> FastStream:
    broker = KafkaBroker(settings.kafka_bootstrap_servers)

    @broker.subscriber("demo.in.v1", group_id="demo")
    @broker.publisher("audit.events.v1")
    async def handle(event: AuditEvent) -> AuditEvent:
        return event

    return FastStream(broker, specification=AsyncAPI(title="demo", version="1.0.0"))
"""


@pytest.fixture
def demo_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    package = f"demo_services_{uuid.uuid4().hex[:8]}"
    root = tmp_path / package
    (root / "demo").mkdir(parents=True)
    (root / "__init__.py").write_text("", encoding="utf-8")
    (root / "demo" / "__init__.py").write_text("", encoding="utf-8")
    (root / "demo" / "settings.py").write_text(textwrap.dedent(_SETTINGS), encoding="utf-8")
    (root / "demo" / "app.py").write_text(_APP.format(package=package), encoding="utf-8")
    (root / "common").mkdir()  # a folder without app.py is not a service
    monkeypatch.syspath_prepend(str(tmp_path))
    return root, package


def test_asyncapi_from_a_service_app(
    demo_services: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, package = demo_services
    out = tmp_path / "asyncapi"
    first = generate.asyncapi_documents(root, package, out)
    # The environment does not leak into the document.
    monkeypatch.setenv("DEMO_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:1234")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "DEBUG")
    second = generate.asyncapi_documents(root, package, out)
    assert first == second
    assert list(first) == [out / "demo.yaml"]
    document = yaml.safe_load(first[out / "demo.yaml"])
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["title"] == "demo"
    assert document["servers"]["development"]["host"] == generate.DOCS_BOOTSTRAP
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {"demo.in.v1", "audit.events.v1"}
    assert "AuditEvent" in document["components"]["schemas"]
    assert "elsewhere" not in first[out / "demo.yaml"]


def test_check_and_write_cycle(
    demo_services: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, package = demo_services
    schemas, asyncapi = tmp_path / "out" / "schemas", tmp_path / "out" / "asyncapi"
    monkeypatch.setattr(generate, "SCHEMAS_DIR", schemas)
    monkeypatch.setattr(generate, "ASYNCAPI_DIR", asyncapi)
    monkeypatch.setattr(generate, "SERVICES_DIR", root)
    monkeypatch.setattr(generate, "SERVICES_PACKAGE", package)

    assert generate.main(["--check"]) == 1
    assert "AuditEvent.v1.json" in capsys.readouterr().out
    assert not schemas.exists()

    assert generate.main([]) == 0
    capsys.readouterr()
    assert (asyncapi / "demo.yaml").is_file()
    assert (schemas / "AuditEvent.v1.json").is_file()
    assert generate.main(["--check"]) == 0

    (schemas / "Retired.v1.json").write_text("{}\n", encoding="utf-8")
    topics = schemas / "topics.json"
    topics.write_text(topics.read_text(encoding="utf-8") + " ", encoding="utf-8")
    capsys.readouterr()
    assert generate.main(["--check"]) == 1
    report = capsys.readouterr().out
    assert "Retired.v1.json" in report
    assert "topics.json" in report
    assert "AuditEvent.v1.json" not in report

    assert generate.main([]) == 0
    assert not (schemas / "Retired.v1.json").exists()
    assert generate.main(["--check"]) == 0


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    import time  # noqa: PLC0415

    from contracts.envelope import new_event_id  # noqa: PLC0415

    first = new_event_id()
    time.sleep(0.002)
    ids = [new_event_id() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in [first, *ids])
    assert len(set(ids)) == 1000
    assert all(first.int >> 80 < i.int >> 80 for i in ids)  # later milliseconds sort later
    now_ms = time.time_ns() // 1_000_000
    assert 0 <= now_ms - (ids[-1].int >> 80) < 1000
