"""The `rekisteri` command: what staff and operators do with the register.

    rekisteri submit FILE.jsonl [--fresh-ids] [--json]
        publish intake events as a clinic app would; report rejections by line
    rekisteri customer show ID --as STAFF_ID --role ROLE [--reveal] [--history KIND] [--json]
        the decrypted register entry (identity code masked); every lookup is audited
    rekisteri status [--json]
        consumer lag and dead letters per service

Connection settings come from the environment or the generated `.rekisteri/env` (see
`cli.config`). Exit codes: 0 success, 1 something was rejected, not found, denied or
unreachable, 2 usage errors. Examples to submit are in `docs/examples/`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cli.config import kafka_args, load_environment, records_store
from cli.consent import consent_app
from cli.customer import (
    Lookup,
    ShowRequest,
    StaffRole,
    UsageError,
    check_customer_id,
    clinic_today,
    entry_document,
    error_message,
    render,
    show,
    staff_of,
)
from cli.marketing import marketing_app
from cli.status import collect
from contracts.client import IntakeClient, LocalRejectionError
from contracts.envelope import new_event_id
from services.records.domain import ItemKind  # noqa: TC001 - typer reads annotations at run time

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Rekisteri for staff and operators: submit intake events, look customers up, "
    "check the pipeline.",
    epilog="Settings come from the environment or .rekisteri/env (or REKISTERI_ENV_FILE). "
    "Exit codes: 0 success; 1 rejected, not found, denied or unreachable; 2 usage error.",
)
customer_app = typer.Typer(no_args_is_help=True, help="Look customers up (staff).")
app.add_typer(customer_app, name="customer")
app.add_typer(consent_app, name="consent")
app.add_typer(marketing_app, name="marketing")
console = Console()
errors = Console(stderr=True)


def intake_client(env: dict[str, str]) -> IntakeClient:
    """The client `submit` publishes with: principal `clinic-app`, as a clinic app would."""
    kafka = kafka_args(env, "clinic-app")
    try:
        public_key = env["REKISTERI_INTAKE_PUBLIC_KEY"]
    except KeyError:
        raise SystemExit(
            "rekisteri: no REKISTERI_INTAKE_PUBLIC_KEY to seal submissions to"
        ) from None
    return IntakeClient(
        bootstrap_servers=kafka["bootstrap_servers"],
        username="clinic-app",
        password=kafka["sasl_plain_password"],
        intake_public_key=public_key,
        producer_name="rekisteri-cli",
        security_protocol=kafka["security_protocol"],
    )


@app.command()
def submit(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, one event a line")
    ],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for rejections after sending")
    ] = 10.0,
    fresh_ids: Annotated[
        bool,
        typer.Option(
            "--fresh-ids",
            help="Give every line a new event_id (intake ignores an event_id it has seen)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Publish intake events from FILE as a clinic app would, then report rejections."""
    client = intake_client(load_environment())
    try:
        code = asyncio.run(_submit(client, file, wait=wait, as_json=as_json, fresh_ids=fresh_ids))
    except KafkaError as exc:
        errors.print(Text(f"rekisteri: cannot reach Kafka ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@dataclass
class SubmitReport:
    """What `submit` did: lines sent (by event id), refused locally, and rejected by intake."""

    sent: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str, list[str]]] = field(default_factory=list)

    def document(self) -> dict[str, object]:
        """The `--json` output."""
        return {
            "sent": len(self.sent),
            "refused_locally": [{"line": n, "reason": r} for n, r in self.refused],
            "rejected": [
                {"line": n, "event_id": e, "reasons": rs} for n, e, rs in sorted(self.rejected)
            ],
        }


async def _submit(
    client: IntakeClient, file: Path, *, wait: float, as_json: bool, fresh_ids: bool = False
) -> int:
    lines = (await asyncio.to_thread(file.read_bytes)).splitlines()
    report = SubmitReport()
    async with client:
        with Progress(
            TextColumn("submitting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=errors,
            disable=as_json,
        ) as progress:
            task = progress.add_task("submit", total=len(lines))
            pending = []
            for number, line in enumerate(lines, start=1):
                progress.advance(task)
                if not line.strip():
                    continue
                try:
                    document = client.parse_line(line)
                    if fresh_ids:
                        document["event_id"] = str(new_event_id())
                    event_id, acked = await client.submit_nowait(document)
                except LocalRejectionError as exc:
                    report.refused.append((number, exc.reason))
                    continue
                report.sent[str(event_id)] = number
                pending.append(acked)
            await asyncio.gather(*pending)
        if report.sent:
            ids = {uuid.UUID(e) for e in report.sent}
            async for r in client.rejections(ids, idle_seconds=wait):
                reasons = [f"{x.code}@{x.field}" if x.field else x.code for x in r.reasons]
                rid = str(r.submission_event_id)
                report.rejected.append((report.sent[rid], rid, reasons))
    _print_submit(report, as_json=as_json)
    return 1 if (report.refused or report.rejected) else 0


def _print_submit(report: SubmitReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.document()))
        return
    console.print(
        f"sent {len(report.sent)} events; {len(report.rejected)} rejected by intake; "
        f"{len(report.refused)} refused locally"
    )
    if report.refused or report.rejected:
        table = Table("line", "event_id", "reasons")
        for n, reason in report.refused:
            table.add_row(str(n), "(not sent)", Text(reason))
        for n, e, rs in sorted(report.rejected):
            table.add_row(str(n), e, Text(", ".join(rs)))
        console.print(table)


@customer_app.command("show")
def customer_show(  # noqa: PLR0913, PLR0917 - one parameter per option
    customer_id: Annotated[
        str, typer.Argument(metavar="ID", help="The customer number (asiakasnumero)")
    ],
    staff_id: Annotated[
        str | None,
        typer.Option("--as", envvar="REKISTERI_STAFF", help="Your staff account id (required)"),
    ] = None,
    role: Annotated[
        StaffRole | None,
        typer.Option(envvar="REKISTERI_STAFF_ROLE", help="The role you act in (required)"),
    ] = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show the identity code in full (logged)")
    ] = False,
    history: Annotated[
        ItemKind | None, typer.Option(help="Also list every version of this item")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The customer's register entry, decrypted; the identity code masked unless --reveal.

    Every lookup is logged for audit (who, when, which customer, for what purpose).
    """
    try:
        staff = staff_of(staff_id, role)
        cid = check_customer_id(customer_id)
    except UsageError as exc:
        errors.print(Text(f"rekisteri: {exc}"))
        raise typer.Exit(2) from None
    store = records_store(load_environment())
    request = ShowRequest(cid, staff, reveal=reveal, history=history)
    try:
        result = asyncio.run(show(store.dsn, store.kek, request))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The type says enough; a server message could quote the connection settings.
        errors.print(Text(f"rekisteri: cannot read the register ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    raise typer.Exit(_report(result, request, as_json=as_json))


def _report(result: Lookup, request: ShowRequest, *, as_json: bool) -> int:
    if result.error is not None:
        if as_json:
            print(json.dumps({"error": result.error}))
        else:
            errors.print(Text(f"rekisteri: {error_message(result.error)}"))
        return 1
    doc = entry_document(
        result, reveal=request.reveal, role=request.staff.role, today=clinic_today()
    )
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        render(doc, console)
    return 0


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Consumer lag per service and dead letters per DLQ topic."""
    env = load_environment()
    try:
        lags, dlqs = asyncio.run(collect(kafka_args(env, "operator")))
    except KafkaError as exc:
        errors.print(Text(f"rekisteri: cannot reach Kafka ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    if as_json:
        print(
            json.dumps(
                {
                    "lag": [{"group": g.group, "topic": g.topic, "lag": g.lag} for g in lags],
                    "dlq": [{"topic": d.topic, "count": d.count} for d in dlqs],
                }
            )
        )
        return
    table = Table("consumer group", "topic", "lag")
    for g in lags:
        table.add_row(g.group, g.topic, str(g.lag))
    console.print(table)
    dead = Table("dead-letter topic", "records")
    for d in dlqs:
        dead.add_row(d.topic, str(d.count), style="red" if d.count else None)
    console.print(dead)


if __name__ == "__main__":
    app()
