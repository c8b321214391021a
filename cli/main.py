"""The `rekisteri` command: what staff and operators do with the register.

    rekisteri submit FILE.jsonl          publish intake events as a clinic app would
    rekisteri customer show ID           the decrypted register entry (identity code masked)
    rekisteri status                     consumer lag and dead letters per service

Connection settings come from the environment or the generated `.rekisteri/env` (see
`cli.config`). Exit codes: 0 success, 1 something was rejected or not found, 2 usage errors.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.config import kafka_args, load_environment
from cli.status import collect
from contracts.client import IntakeClient, LocalRejectionError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
customer_app = typer.Typer(no_args_is_help=True, help="Look customers up (staff).")
app.add_typer(customer_app, name="customer")
console = Console()
errors = Console(stderr=True)


@app.command()
def submit(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, one event a line")
    ],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for rejections after sending")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Publish intake events from FILE as a clinic app would, then report rejections."""
    env = load_environment()
    raise typer.Exit(asyncio.run(_submit(env, file, wait=wait, as_json=as_json)))


async def _submit(env: dict[str, str], file: Path, *, wait: float, as_json: bool) -> int:
    kafka = kafka_args(env, "clinic-app")
    client = IntakeClient(
        bootstrap_servers=kafka["bootstrap_servers"],
        username="clinic-app",
        password=kafka["sasl_plain_password"],
        intake_public_key=env["REKISTERI_INTAKE_PUBLIC_KEY"],
        producer_name="rekisteri-cli",
    )
    lines = (await asyncio.to_thread(file.read_bytes)).splitlines()
    local: list[tuple[int, str]] = []
    sent: dict[str, int] = {}
    pending = []
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
            for number, line in enumerate(lines, start=1):
                progress.advance(task)
                if not line.strip():
                    continue
                try:
                    event_id, acked = await client.submit_nowait(client.parse_line(line))
                except LocalRejectionError as exc:
                    local.append((number, exc.reason))
                    continue
                sent[str(event_id)] = number
                pending.append(acked)
            await asyncio.gather(*pending)
        rejected: list[tuple[int, str, list[str]]] = []
        if sent:
            ids = {uuid.UUID(e) for e in sent}
            async for r in client.rejections(ids, idle_seconds=wait):
                reasons = [f"{x.code}@{x.field}" if x.field else x.code for x in r.reasons]
                rid = str(r.submission_event_id)
                rejected.append((sent[rid], rid, reasons))
    rejected.sort()
    if as_json:
        print(
            json.dumps(
                {
                    "sent": len(sent),
                    "refused_locally": [{"line": n, "reason": r} for n, r in local],
                    "rejected": [
                        {"line": n, "event_id": e, "reasons": rs} for n, e, rs in rejected
                    ],
                }
            )
        )
    else:
        console.print(
            f"sent {len(sent)} events; {len(rejected)} rejected by intake; "
            f"{len(local)} refused locally"
        )
        if local or rejected:
            table = Table("line", "event_id", "reasons")
            for n, reason in local:
                table.add_row(str(n), "(not sent)", reason)
            for n, e, rs in rejected:
                table.add_row(str(n), e, ", ".join(rs))
            console.print(table)
    return 1 if (local or rejected) else 0


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Consumer lag per service and dead letters per DLQ topic."""
    env = load_environment()
    lags, dlqs = asyncio.run(collect(kafka_args(env, "operator")))
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
