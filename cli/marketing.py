"""`rekisteri marketing audience`: who may be contacted for a campaign on a channel, now.

    rekisteri marketing audience --campaign CODE --channel CHANNEL --as STAFF --role ROLE
        [--count-only] [--json]

Staff run the CLI on the clinic's server, so it reads marketing's schema directly as the
marketing role (`MARKETING_PG_DSN`) with marketing's read API (`audience`): customers whose
latest consent allows the channel's purpose and who have no suppression for it, decided in one
statement at the moment of use. The export is recorded with each customer's consent version and
audited by marketing itself (one `export` audit event per customer, the staff account as the
actor); `--count-only` prints only the size, but the export is recorded and audited the same.

Only the marketing role and the privacy officer may export an audience (DOMAIN.md S2: marketing
sees only what consent allows). Any other role is refused before anything is read: the attempt
is audited in marketing's outbox as an `export` of `marketing.audience`, outcome `denied`,
reason `role_not_permitted`, with no customer id (it names nobody), and the command exits 1.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final

import asyncpg
import typer
from rich.console import Console
from rich.text import Text

from cli.config import load_environment
from cli.consent import connect, schema_dsn
from cli.customer import Staff, StaffRole, UsageError, staff_of
from contracts.audit import AuditAction, AuditEvent, AuditOutcome
from contracts.consent import LEGAL_BASIS, Purpose
from contracts.envelope import new_event_id
from services.common import audit
from services.marketing.domain import SERVICE, AudienceError, check_campaign, check_channel
from services.marketing.repository import AUDIENCE_RESOURCE, audience

if TYPE_CHECKING:
    from services.common.db import Connection

SCHEMA: Final = SERVICE
"""The schema marketing lives in."""
DSN_VARIABLE: Final = "MARKETING_PG_DSN"
"""Where the marketing role's DSN is found (environment or `.rekisteri/env`)."""
DENIED: Final = "role_not_permitted"
AUDIENCE_ROLES: Final = frozenset({StaffRole.MARKETING, StaffRole.PRIVACY_OFFICER})
"""Roles that may export an audience."""


class AudienceChannel(StrEnum):
    """The purposes marketing contacts customers for (`services.marketing.domain.CHANNELS`)."""

    MARKETING_EMAIL = "marketing_email"
    MARKETING_SMS = "marketing_sms"
    MARKETING_POST = "marketing_post"
    MARKETING_PHONE = "marketing_phone"
    RESEARCH = "research"


Exporter = Callable[..., Awaitable[list[str]]]
"""`services.marketing.repository.audience`, or a stand-in for it."""


@dataclass(frozen=True, slots=True)
class AudienceRequest:
    """One audience export: which campaign, which channel, by whom."""

    campaign: str
    channel: Purpose
    staff: Staff
    correlation_id: uuid.UUID = field(default_factory=new_event_id)


@dataclass(frozen=True, slots=True)
class AudienceResult:
    """What an export found, or why it was refused.

    Attributes:
        customers: The customer numbers that may be contacted, sorted (None when refused).
        error: `role_not_permitted`, or None.
        audited: The audit events the CLI wrote itself (a denial; marketing audits exports).
    """

    customers: tuple[str, ...] | None
    error: str | None = None
    audited: tuple[AuditEvent, ...] = ()


def audience_request(
    campaign: str,
    channel: AudienceChannel | str,
    staff_id: str | None,
    role: StaffRole | str | None,
) -> AudienceRequest:
    """The request from the options.

    Raises:
        UsageError: The staff, the campaign code or the channel is not valid (the message
            names the option, never its value).
    """
    staff = staff_of(staff_id, role)
    try:
        check_campaign(campaign)
    except AudienceError:
        raise UsageError("--campaign must be a code: letters, digits and _.:- (1-64)") from None
    try:
        purpose = check_channel(channel)
    except AudienceError:
        raise UsageError(
            "--channel must be one of " + ", ".join(c.value for c in AudienceChannel)
        ) from None
    return AudienceRequest(campaign, purpose, staff)


async def export(
    conn: Connection, request: AudienceRequest, *, exporter: Exporter | None = None
) -> AudienceResult:
    """Export the audience as the staff member, or refuse (and audit) a role that may not.

    Args:
        conn: A connection of the marketing schema (not in a transaction).
        request: The campaign, channel and staff member.
        exporter: Marketing's `audience` when None (tests pass a stand-in).
    """
    staff = request.staff
    if staff.role not in AUDIENCE_ROLES:
        async with conn.transaction():
            event = await audit.emit(
                conn,
                service=SERVICE,
                actor=staff.staff_id,
                actor_role=staff.role.value,
                action=AuditAction.EXPORT,
                customer_id=None,
                resource=AUDIENCE_RESOURCE,
                outcome=AuditOutcome.DENIED,
                purpose=request.channel.value,
                legal_basis=LEGAL_BASIS[request.channel],
                reason_code=DENIED,
                correlation_id=request.correlation_id,
            )
        return AudienceResult(None, DENIED, (event,))
    run = exporter if exporter is not None else audience
    members = await run(
        conn,
        request.campaign,
        request.channel,
        actor=staff.staff_id,
        actor_role=staff.role.value,
    )
    return AudienceResult(tuple(members))


def audience_document(
    result: AudienceResult, request: AudienceRequest, *, count_only: bool
) -> dict[str, Any]:
    """The `--json` output of an export (`customers` left out with `--count-only`)."""
    customers = result.customers or ()
    doc: dict[str, Any] = {
        "campaign": request.campaign,
        "channel": request.channel.value,
        "count": len(customers),
    }
    if not count_only:
        doc["customers"] = list(customers)
    return doc


@asynccontextmanager
async def open_marketing(env: Mapping[str, str]) -> AsyncIterator[Connection]:
    """Connect to marketing's schema as the marketing role (`MARKETING_PG_DSN`)."""
    conn = await connect(schema_dsn(env, DSN_VARIABLE), SCHEMA)
    try:
        yield conn
    finally:
        await conn.close()


# --- The command -----------------------------------------------------------------------------

marketing_app = typer.Typer(
    no_args_is_help=True,
    help="Marketing audiences (marketing and the privacy officer): who may be contacted now.",
)
console = Console()
errors = Console(stderr=True)


@marketing_app.command("audience")
def audience_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    campaign: Annotated[
        str, typer.Option(help="The campaign code, e.g. spring-2026.whitening (never free text)")
    ],
    channel: Annotated[AudienceChannel, typer.Option(help="The channel (purpose) contacted on")],
    staff_id: Annotated[
        str | None,
        typer.Option("--as", envvar="REKISTERI_STAFF", help="Your staff account id (required)"),
    ] = None,
    role: Annotated[
        StaffRole | None,
        typer.Option(envvar="REKISTERI_STAFF_ROLE", help="The role you act in (required)"),
    ] = None,
    count_only: Annotated[
        bool, typer.Option("--count-only", help="Print only how many may be contacted")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The customer numbers that may be contacted for CAMPAIGN on CHANNEL now, one a line.

    Decided at the moment of use from the latest consent and every suppression. The export is
    recorded and audited per customer; only the marketing role and the privacy officer may run
    it (other roles' attempts are logged).
    """
    try:
        request = audience_request(campaign, channel, staff_id, role)
    except UsageError as exc:
        errors.print(Text(f"rekisteri: {exc}"))
        raise typer.Exit(2) from None
    env = load_environment()

    async def run() -> AudienceResult:
        async with open_marketing(env) as conn:
            return await export(conn, request)

    try:
        result = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The type says enough; a server message could quote the connection settings.
        errors.print(Text(f"rekisteri: cannot reach marketing ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    if result.customers is None:
        if as_json:
            print(json.dumps({"error": result.error}))
        else:
            errors.print(
                Text(
                    "rekisteri: only the marketing role and the privacy officer may export an "
                    "audience (the attempt was logged)"
                )
            )
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(audience_document(result, request, count_only=count_only)))
        return
    if count_only:
        print(len(result.customers))
        return
    for customer_id in result.customers:
        print(customer_id)
    errors.print(
        Text(
            f"{len(result.customers)} customers may be contacted on {request.channel.value} for "
            "this campaign; the export was recorded and logged for audit",
            style="dim",
        )
    )
