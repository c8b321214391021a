"""The `rekisteri` CLI without a network: masking, formatting, arguments, `--json` shapes.

The staff lookup runs against the register's fake (`FakeRegister`) filled through the records
use case from `docs/examples/registrations.jsonl`, and the audit events are read back from a
fake connection's outbox rows, as `services.common.audit.emit` writes them. `submit` runs with
a fake intake client, `status` with a fake collector; both through typer's `CliRunner`.
The example files are checked against intake's validation here too, so they keep matching
the contracts.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import date
from pathlib import Path
from typing import Any, Self, cast
from uuid import UUID

import pytest
from rich.console import Console
from typer.testing import CliRunner

import cli.main
from cli.config import read_env_file, records_store
from cli.customer import (
    DENIED,
    NOT_FOUND,
    REVEALED,
    SECURITY_BAN_MASK,
    Lookup,
    ShowRequest,
    Staff,
    StaffRole,
    UsageError,
    check_customer_id,
    display,
    entry_document,
    lookup,
    mask_hetu,
    render,
    staff_of,
)
from cli.main import SubmitReport, app
from cli.status import DlqCount, GroupLag
from contracts.audit import AUDIT_TOPIC, AuditEvent
from contracts.client import IntakeClient
from contracts.envelope import Event
from contracts.intake import (
    ContactDetails,
    ContactDetailsChanged,
    DvvBans,
    Reason,
    SubmissionRejected,
)
from contracts.sealing import generate_keypair
from services.common import crypto
from services.intake.domain import Accepted, route_submission
from services.intake.hetu import validate_hetu
from services.records.domain import ItemKind, RecordsCommand
from services.records.handlers import apply_commands
from services.records.repository import FakeRegister

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
TODAY = date(2026, 11, 25)
AINO = "EX-1001"
AINO_HETU = "120785-912R"
ONNI = "EX-1003"
ONNI_HETU = "040516A956K"
BERTIL_HETU = "140262Y934S"
ZERO_KEK = base64.b64encode(bytes(32)).decode()
runner = CliRunner()


def example_lines(name: str) -> list[bytes]:
    return (EXAMPLES / name).read_bytes().splitlines()


def commands(name: str = "registrations.jsonl") -> list[RecordsCommand]:
    """The example's events as intake forwards them to records (validated and normalised)."""
    out: list[RecordsCommand] = []
    for line in example_lines(name):
        doc = json.loads(line)
        result = route_submission(line, key=doc["customer_id"].encode(), today=TODAY)
        assert isinstance(result, Accepted)
        out.append(cast("RecordsCommand", result.event))
    return out


class FakeConn:
    """Just what `audit.emit` needs of a connection: an open transaction and `execute`."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def is_in_transaction(self) -> bool:
        return True

    async def execute(self, _sql: str, *args: Any) -> str:
        self.rows.append(args)
        return "INSERT 0 1"

    def audit_events(self) -> list[tuple[str | None, AuditEvent]]:
        """(Kafka key, event) of every audit row enqueued."""
        out = []
        for _event_id, topic, key, _headers, payload, _aggregate, _type in self.rows:
            assert topic == AUDIT_TOPIC
            out.append((key, AuditEvent.model_validate_json(payload)))
        return out


async def register() -> FakeRegister:
    repo = FakeRegister()
    result = await apply_commands(repo, commands())
    assert result.applied == 8
    return repo


def request(
    cid: str = AINO,
    role: StaffRole = StaffRole.RECEPTION,
    *,
    reveal: bool = False,
    history: ItemKind | None = None,
) -> ShowRequest:
    return ShowRequest(cid, Staff("t1", role), reveal=reveal, history=history)


async def run_lookup(repo: FakeRegister, req: ShowRequest) -> tuple[Lookup, FakeConn]:
    conn = FakeConn()
    result = await lookup(repo, cast("Any", conn), req)
    return result, conn


# --- Masking and arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "masked"),
    [
        (AINO_HETU, "120785-****"),
        (ONNI_HETU, "040516A****"),
        (BERTIL_HETU, "140262Y****"),
        ("010190+902P", "010190+****"),
    ],
)
def test_mask_keeps_birth_date_and_century_sign_only(code: str, masked: str) -> None:
    assert mask_hetu(code) == masked
    assert code[7:] not in mask_hetu(code)


@pytest.mark.parametrize("odd", ["120785-912r", " 120785-912R", "120785912R", "x", 12345])
def test_a_stored_code_of_another_shape_is_masked_whole(odd: object) -> None:
    assert mask_hetu(odd) == "[masked]"


def test_shredded_and_missing_codes_pass_through() -> None:
    assert mask_hetu(crypto.SHREDDED) == crypto.SHREDDED
    assert mask_hetu(None) is None


def test_staff_must_say_who_and_in_which_role() -> None:
    with pytest.raises(UsageError, match="--as STAFF_ID"):
        staff_of(None, StaffRole.RECEPTION)
    with pytest.raises(UsageError, match="--role ROLE"):
        staff_of("t1", None)
    with pytest.raises(UsageError, match="--as must be"):
        staff_of("t 1", "reception")
    with pytest.raises(UsageError, match="--role must be one of"):
        staff_of("t1", "boss")
    assert staff_of("t1@clinic", "privacy_officer") == Staff("t1@clinic", StaffRole.PRIVACY_OFFICER)


def test_an_identity_code_is_refused_as_customer_number_without_echoing_it() -> None:
    with pytest.raises(UsageError) as caught:
        check_customer_id(AINO_HETU)
    assert AINO_HETU not in str(caught.value)
    assert "identity code" in str(caught.value)
    for bad in ("", "-x", "EX 1001", "Ä1", "x" * 65):
        with pytest.raises(UsageError):
            check_customer_id(bad)
    assert check_customer_id("EX-1001") == "EX-1001"


def test_records_store_reads_the_service_settings_and_checks_the_kek() -> None:
    store = records_store({"RECORDS_PG_DSN": "postgresql://x", "RECORDS_KEK": ZERO_KEK})
    assert store.kek == bytes(32)
    assert "postgresql" not in repr(store)
    with pytest.raises(SystemExit, match="RECORDS_PG_DSN"):
        records_store({"RECORDS_KEK": ZERO_KEK})
    with pytest.raises(SystemExit, match="not base64 of 32 bytes") as caught:
        records_store({"RECORDS_PG_DSN": "postgresql://x", "RECORDS_KEK": "c2VjcmV0"})
    assert "c2VjcmV0" not in str(caught.value)


def test_env_file_lines_are_read_in_both_forms(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.write_text(
        "# comment\n"
        "[ -n \"${RECORDS_KEK+x}\" ] || export RECORDS_KEK='a b'\n"
        "export REKISTERI_STAFF=t1\n",
        encoding="utf-8",
    )
    assert read_env_file(env) == {"RECORDS_KEK": "a b", "REKISTERI_STAFF": "t1"}


# --- The lookup and its audit events ---------------------------------------------------------


async def test_a_read_is_audited_per_resource_shown_with_one_correlation_id() -> None:
    repo = await register()
    result, conn = await run_lookup(repo, request())
    assert result.error is None
    assert result.view is not None
    events = conn.audit_events()
    assert [(e.resource, e.outcome.value, e.reason_code) for _, e in events] == [
        ("records.customer", "success", None),
        ("records.visit", "success", None),
        ("records.feedback", "success", None),
    ]
    for key, e in events:
        assert key == AINO
        assert e.customer_id == AINO
        assert (e.actor, e.actor_role, e.action.value, e.purpose) == (
            "t1",
            "reception",
            "read",
            "customer_care",
        )
        assert e.producer == "records"
    assert len({e.correlation_id for _, e in events}) == 1
    assert [e for _, e in events] == list(result.audited)


async def test_reveal_is_audited_distinctly() -> None:
    repo = await register()
    _, conn = await run_lookup(repo, request(reveal=True, role=StaffRole.CLINICIAN))
    first = conn.audit_events()[0][1]
    assert (first.resource, first.reason_code, first.actor_role) == (
        "records.customer",
        REVEALED,
        "clinician",
    )


async def test_an_unknown_customer_is_a_failed_read_naming_no_customer() -> None:
    repo = await register()
    result, conn = await run_lookup(repo, request("EX-9999"))
    assert result.view is None
    assert result.error == NOT_FOUND
    [(key, event)] = conn.audit_events()
    assert key is None
    assert event.customer_id is None
    assert (event.outcome.value, event.reason_code) == ("failed", NOT_FOUND)


async def test_marketing_may_not_open_an_entry_and_the_attempt_is_audited() -> None:
    repo = await register()
    result, conn = await run_lookup(repo, request(role=StaffRole.MARKETING))
    assert result.view is None
    assert result.error == DENIED
    [(key, event)] = conn.audit_events()
    assert (key, event.outcome.value, event.reason_code) == (AINO, "denied", DENIED)
    _, conn = await run_lookup(repo, request("EX-9999", role=StaffRole.MARKETING))
    [(key, event)] = conn.audit_events()
    assert (key, event.customer_id, event.outcome.value) == (None, None, "denied")


async def test_a_customer_without_visits_or_feedback_has_one_audit_event() -> None:
    repo = await register()
    _, conn = await run_lookup(repo, request("EX-1002"))
    assert [e.resource for _, e in conn.audit_events()] == ["records.customer", "records.feedback"]
    _, conn = await run_lookup(repo, request("EX-1003"))
    assert [e.resource for _, e in conn.audit_events()] == ["records.customer", "records.visit"]


# --- What is shown ---------------------------------------------------------------------------


async def document(req: ShowRequest, repo: FakeRegister | None = None) -> dict[str, Any]:
    result, _ = await run_lookup(repo or await register(), req)
    return entry_document(result, reveal=req.reveal, role=req.staff.role, today=TODAY)


async def test_the_entry_shows_the_latest_contact_details_and_a_masked_code() -> None:
    doc = await document(request())
    items = doc["items"]
    assert items["hetu"]["value"] == "120785-****"
    assert AINO_HETU not in json.dumps(doc)
    assert items["emails"]["value"] == ["aino.uusi@example.fi"]
    assert items["emails"]["versions"] == 2
    assert items["phones"]["value"] == ["+358501112233"]
    assert items["preferred_language"]["value"] == "en"
    assert items["name"]["value"] == {"given_names": "Aino", "family_name": "Esimerkki"}
    assert doc["age"] == 41  # born 12.7.1985, derived on 25.11.2026
    assert doc["hetu_revealed"] is False
    assert "date_of_birth" in items  # filled in by intake from the code, then stored
    assert doc["visits"] == [
        {
            "visit_date": "2026-11-10",
            "treating_staff": [{"staff_id": "HML-7", "name": "Hammaslääkäri Seppo Esimerkki"}],
            "source": "service_use",
            "data_class": "patient_record",
            "occurred_at": "2026-11-10T09:00:00+00:00",
        }
    ]
    assert [(f["kind"], f["channel"]) for f in doc["feedback"]] == [("wish", "reception")]
    assert set(doc) >= {
        "customer_id",
        "version",
        "registered_at",
        "data_classes",
        "shredded",
        "history",
        "removed",
    }
    assert "item_history" not in doc


async def test_reveal_shows_the_full_code_everywhere() -> None:
    doc = await document(request(reveal=True, history=ItemKind.HETU))
    assert doc["items"]["hetu"]["value"] == AINO_HETU
    assert doc["item_history"]["versions"][0]["value"] == AINO_HETU
    masked = await document(request(history=ItemKind.HETU))
    assert [v["value"] for v in masked["item_history"]["versions"]] == ["120785-****"]


async def test_history_lists_every_version_oldest_first() -> None:
    doc = await document(request(history=ItemKind.EMAILS))
    history = doc["item_history"]
    assert history["kind"] == "emails"
    assert [v["value"] for v in history["versions"]] == [
        ["aino.esimerkki@example.fi"],
        ["aino.uusi@example.fi"],
    ]
    assert history["versions"][0]["valid_to"] is not None
    assert history["versions"][1]["valid_to"] is None
    never = await document(request(history=ItemKind.TITLE))
    assert never["item_history"] == {"kind": "title", "versions": []}


async def test_a_child_shows_its_guardian_and_age() -> None:
    doc = await document(request(ONNI))
    assert doc["age"] == 10
    assert doc["items"]["hetu"]["value"] == "040516A****"
    text = display("guardians", doc["items"]["guardians"]["value"])
    assert "guardian Maija Testinen" in text
    assert "health_care, personal_matters" in text


async def test_a_shredded_customer_shows_shredded_values() -> None:
    repo = await register()
    repo.shred(AINO)
    doc = await document(request(), repo)
    assert doc["shredded"] is True
    assert doc["items"]["hetu"]["value"] == crypto.SHREDDED
    assert doc["items"]["emails"]["value"] == crypto.SHREDDED
    assert doc["age"] is None
    assert doc["feedback"][0]["text"] == crypto.SHREDDED
    out = rendered(doc)
    assert "[shredded]" in out  # shown literally, not eaten as console markup
    assert "shredded: values are unreadable" in out


async def test_a_security_ban_address_is_shown_only_to_the_privacy_officer() -> None:
    repo = await register()
    cid = "EX-1002"
    change = ContactDetailsChanged(
        event_id=uuid.uuid4(),
        customer_id=cid,
        producer="reception-desk",
        contact=ContactDetails(),
        source="population_register",
        dvv_bans=DvvBans(security_ban=True),
    )
    await apply_commands(repo, [change])
    reception = await document(request(cid), repo)
    assert reception["items"]["address"]["value"] == SECURITY_BAN_MASK
    assert "Exempelvägen" not in json.dumps(reception, ensure_ascii=False)
    officer = await document(request(cid, StaffRole.PRIVACY_OFFICER), repo)
    assert officer["items"]["address"]["value"]["street"] == "Exempelvägen 5"


def rendered(doc: dict[str, Any]) -> str:
    buffer = io.StringIO()
    render(doc, Console(file=buffer, width=200, color_system=None))
    return buffer.getvalue()


async def test_the_table_shows_masked_values_and_says_the_read_was_logged() -> None:
    out = rendered(await document(request(history=ItemKind.EMAILS)))
    assert "120785-****" in out
    assert AINO_HETU not in out
    assert "Aino Esimerkki" in out
    assert "Esimerkkikatu 1 A 2, 00100 Helsinki" in out
    assert "aino.uusi@example.fi" in out
    assert "HML-7 Hammaslääkäri Seppo Esimerkki" in out
    assert "Toivoisin jatkossa aamuaikoja." in out
    assert "history of emails" in out
    assert "age 41" in out
    assert "logged" in out


def test_display_of_item_shapes() -> None:
    assert display("phones", ["+358401234567", "+358501112233"]) == "+358401234567, +358501112233"
    assert display("dvv_bans", {"direct_marketing_ban": True, "security_ban": False}) == (
        "direct_marketing_ban"
    )
    assert display("dvv_bans", {"security_ban": False}) == "none"
    assert display("acquisition", {"channel": "web", "way": "hakukone"}) == "web (hakukone)"
    assert display(
        "address", {"street": "Gata 1", "postal_code": "1", "city": "X", "country": "SE"}
    )
    assert display("emails", None) == "(removed)"
    assert display("other", {"b": 1, "a": "ä"}) == '{"a": "ä", "b": 1}'


# --- The commands, through typer -------------------------------------------------------------


def cli_env(tmp_path: Path, **extra: str | None) -> dict[str, str | None]:
    """An environment with no env file and no register or Kafka settings but `extra`."""
    env: dict[str, str | None] = {
        "REKISTERI_ENV_FILE": str(tmp_path / "missing.env"),
        "REKISTERI_STAFF": None,
        "REKISTERI_STAFF_ROLE": None,
        "RECORDS_PG_DSN": None,
        "RECORDS_KEK": None,
        "COLUMNS": "200",
    }
    return env | extra


def invoke(args: list[str], env: dict[str, str | None]) -> Any:
    return runner.invoke(app, args, env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["customer", "show", "EX-1"], "say who you are"),
        (["customer", "show", "EX-1", "--as", "t1"], "say who you are"),
        (["customer", "show", "EX-1", "--role", "reception"], "say who you are"),
        (["customer", "show", AINO_HETU, "--as", "t1", "--role", "reception"], "identity code"),
        (["customer", "show", "EX 1", "--as", "t1", "--role", "reception"], "customer number"),
        (["customer", "show", "EX-1", "--as", "t1", "--role", "boss"], "boss"),
        (
            ["customer", "show", "EX-1", "--as", "t1", "--role", "reception", "--history", "x"],
            "--history",
        ),
    ],
)
def test_argument_errors_exit_2_before_touching_anything(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.main, "show", _must_not_be_called)
    result = invoke(args, cli_env(tmp_path))
    assert result.exit_code == 2
    assert message in result.output
    assert AINO_HETU not in result.output


async def _must_not_be_called(*_args: object) -> Lookup:
    raise AssertionError("the register was reached")


def test_staff_identity_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ShowRequest] = []

    async def fake_show(_dsn: str, kek: bytes, req: ShowRequest) -> Lookup:
        assert kek == bytes(32)
        seen.append(req)
        return Lookup(None, error=NOT_FOUND)

    monkeypatch.setattr(cli.main, "show", fake_show)
    env = cli_env(
        tmp_path,
        REKISTERI_STAFF="t9",
        REKISTERI_STAFF_ROLE="clinician",
        RECORDS_PG_DSN="postgresql://unused",
        RECORDS_KEK=ZERO_KEK,
    )
    result = invoke(["customer", "show", "EX-1", "--json"], env)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": "customer_not_found"}
    assert seen[0].staff == Staff("t9", StaffRole.CLINICIAN)
    result = invoke(["customer", "show", "EX-1"], env)
    assert result.exit_code == 1
    assert "no such customer" in result.output
    assert "EX-1" not in result.output


def test_missing_register_settings_are_a_clear_error(tmp_path: Path) -> None:
    result = invoke(
        ["customer", "show", "EX-1", "--as", "t1", "--role", "reception"], cli_env(tmp_path)
    )
    assert result.exit_code == 1
    assert "RECORDS_PG_DSN" in result.output


def test_customer_show_json_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_show(_dsn: str, _kek: bytes, req: ShowRequest) -> Lookup:
        result, _ = await run_lookup(await register(), req)
        return result

    monkeypatch.setattr(cli.main, "show", fake_show)
    env = cli_env(tmp_path, RECORDS_PG_DSN="postgresql://unused", RECORDS_KEK=ZERO_KEK)
    base = ["customer", "show", AINO, "--as", "t1", "--role", "reception"]
    result = invoke([*base, "--json"], env)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["customer_id"] == AINO
    assert doc["items"]["hetu"]["value"] == "120785-****"
    revealed = json.loads(invoke([*base, "--json", "--reveal"], env).stdout)
    assert revealed["items"]["hetu"]["value"] == AINO_HETU
    assert revealed["hetu_revealed"] is True
    table = invoke(base, env)
    assert table.exit_code == 0
    assert "120785-****" in table.stdout
    assert AINO_HETU not in table.stdout


class FakeIntakeClient(IntakeClient):
    """Seals like the real client; keeps what it would send; answers chosen rejections."""

    def __init__(self, reject: dict[int, list[Reason]]) -> None:
        _, public = generate_keypair()
        super().__init__(
            bootstrap_servers="unused:9092",
            username="clinic-app",
            password="unused",  # noqa: S106 - never connects
            intake_public_key=public,
        )
        self.sent: list[dict[str, Any]] = []
        self.reject = reject
        self.entered = False

    async def __aenter__(self) -> Self:
        self.entered = True
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def submit_nowait(
        self, document: dict[str, Any] | Event
    ) -> tuple[UUID, asyncio.Future[Any]]:
        _, value, event_id = self.encode(document)
        self.sent.append(json.loads(value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return event_id, done

    async def rejections(
        self,
        event_ids: set[UUID] | None = None,
        *,
        idle_seconds: float = 10.0,
        from_beginning: bool = True,
    ) -> AsyncIterator[SubmissionRejected]:
        assert event_ids is not None
        assert idle_seconds == 0.5
        assert from_beginning
        for index, reasons in self.reject.items():
            event_id = UUID(self.sent[index]["event_id"])
            assert event_id in event_ids
            yield SubmissionRejected(
                producer="intake", submission_event_id=event_id, reasons=tuple(reasons)
            )


def jsonl(tmp_path: Path, lines: Iterable[bytes]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_submit_refuses_non_json_lines_locally_and_reports_rejections_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = example_lines("registrations.jsonl")[:2]
    path = jsonl(
        tmp_path,
        [b"{not json", b"", b'["an", "array"]', b'{"type": "FeedbackGiven"}', *good],
    )
    fake = FakeIntakeClient({1: [Reason(code="hetu_checksum", field="demographics.hetu")]})
    monkeypatch.setattr(cli.main, "intake_client", lambda _env: fake)
    result = invoke(["submit", str(path), "--json", "--wait", "0.5"], cli_env(tmp_path))
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "sent": 2,
        "refused_locally": [
            {"line": 1, "reason": "not_json"},
            {"line": 3, "reason": "not_object"},
            {"line": 4, "reason": "missing_customer_id"},
        ],
        "rejected": [
            {
                "line": 6,
                "event_id": json.loads(good[1])["event_id"],
                "reasons": ["hetu_checksum@demographics.hetu"],
            }
        ],
    }
    assert fake.entered
    # Sealed: nothing personal in clear in what would go on the wire.
    assert all("Esimerkki" not in json.dumps(doc) for doc in fake.sent)


def test_submit_keeps_event_ids_unless_fresh_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = example_lines("registrations.jsonl")
    original = [json.loads(line)["event_id"] for line in lines]
    path = jsonl(tmp_path, lines)
    for args, same in (([], True), (["--fresh-ids"], False)):
        fake = FakeIntakeClient({})
        monkeypatch.setattr(cli.main, "intake_client", lambda _env, f=fake: f)
        result = invoke(["submit", str(path), "--wait", "0.5", *args], cli_env(tmp_path))
        assert result.exit_code == 0, result.output
        assert "sent 8 events; 0 rejected by intake; 0 refused locally" in result.stdout
        ids = [doc["event_id"] for doc in fake.sent]
        assert (ids == original) is same
        assert len(set(ids)) == len(ids)
        assert [d["customer_id"] for d in fake.sent] == [
            json.loads(line)["customer_id"] for line in lines
        ]


def test_submit_table_lists_refusals_and_rejections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = jsonl(tmp_path, [b"[1]", example_lines("registrations.jsonl")[0]])
    fake = FakeIntakeClient({0: [Reason(code="not_supported_yet")]})
    monkeypatch.setattr(cli.main, "intake_client", lambda _env: fake)
    result = invoke(["submit", str(path), "--wait", "0.5"], cli_env(tmp_path))
    assert result.exit_code == 1
    assert "sent 1 events; 1 rejected by intake; 1 refused locally" in result.stdout
    assert "(not sent)" in result.stdout
    assert "not_object" in result.stdout
    assert "not_supported_yet" in result.stdout


def test_submit_report_document_sorts_by_line() -> None:
    report = SubmitReport(
        sent={"a": 2, "b": 1},
        refused=[(3, "not_json")],
        rejected=[(2, "a", ["x"]), (1, "b", ["y@z"])],
    )
    assert report.document() == {
        "sent": 2,
        "refused_locally": [{"line": 3, "reason": "not_json"}],
        "rejected": [
            {"line": 1, "event_id": "b", "reasons": ["y@z"]},
            {"line": 2, "event_id": "a", "reasons": ["x"]},
        ],
    }


def test_status_json_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    async def fake_collect(kafka: dict[str, Any]) -> tuple[list[GroupLag], list[DlqCount]]:
        seen.append(kafka)
        return (
            [
                GroupLag("intake", "intake.submissions.v1", 90, 100),
                GroupLag("records", "records.commands.v1", 7, 5),
            ],
            [DlqCount("records.commands.v1.dlq", 3)],
        )

    monkeypatch.setattr(cli.main, "collect", fake_collect)
    password = "pw-not-secret"  # noqa: S105 - a fake collector, never sent anywhere
    env = cli_env(
        tmp_path, REKISTERI_KAFKA_BOOTSTRAP="k:1", REKISTERI_KAFKA_PASSWORD_OPERATOR=password
    )
    result = invoke(["status", "--json"], env)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "lag": [
            {"group": "intake", "topic": "intake.submissions.v1", "lag": 10},
            {"group": "records", "topic": "records.commands.v1", "lag": 0},
        ],
        "dlq": [{"topic": "records.commands.v1.dlq", "count": 3}],
    }
    assert seen[0]["sasl_plain_username"] == "operator"
    table = invoke(["status"], env)
    assert "records.commands.v1.dlq" in table.stdout
    assert password not in table.output


def test_status_without_settings_is_a_clear_error(tmp_path: Path) -> None:
    env = cli_env(tmp_path, REKISTERI_KAFKA_BOOTSTRAP=None, REKISTERI_KAFKA_PASSWORD_OPERATOR=None)
    result = invoke(["status"], env)
    assert result.exit_code == 1
    assert "no Kafka settings" in result.output


# --- The example files -----------------------------------------------------------------------


def test_the_registration_examples_are_valid_and_use_test_codes() -> None:
    lines = example_lines("registrations.jsonl")
    docs = [json.loads(line) for line in lines]
    assert len({d["event_id"] for d in docs}) == len(docs)
    assert {d["type"] for d in docs} >= {
        "CustomerRegistered",
        "ContactDetailsChanged",
        "VisitRecorded",
        "FeedbackGiven",
    }
    for line, doc in zip(lines, docs, strict=True):
        result = route_submission(line, key=doc["customer_id"].encode(), today=TODAY)
        assert isinstance(result, Accepted), (doc["event_id"], result)
        hetu = doc.get("demographics", {}).get("hetu")
        if hetu is not None:
            assert validate_hetu(hetu, today=TODAY).temporary


EXPECTED_ERRORS = {
    2: ["hetu_checksum@demographics.hetu"],
    3: ["hetu_format@demographics.hetu"],
    4: ["email_invalid@contact.emails[0]"],
    5: ["unknown_type@type"],
    7: ["not_supported_yet"],
}
"""What intake answers to each line of `with-errors.jsonl` (line 6 is refused locally)."""


def test_the_error_examples_fail_as_documented() -> None:
    lines = example_lines("with-errors.jsonl")
    assert len(lines) == 7
    docs = [json.loads(line) for line in lines]
    assert len({d["event_id"] for d in docs}) == len(docs)
    assert "customer_id" not in docs[5]
    for number, (line, doc) in enumerate(zip(lines, docs, strict=True), start=1):
        if number == 6:
            continue
        result = route_submission(line, key=doc["customer_id"].encode(), today=TODAY)
        if number == 1:
            assert isinstance(result, Accepted)
            continue
        assert not isinstance(result, Accepted)
        got = [f"{r.code}@{r.field}" if r.field else r.code for r in result.event.reasons]
        assert got == EXPECTED_ERRORS[number], number
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for codes in EXPECTED_ERRORS.values():
        assert codes[0] in readme
