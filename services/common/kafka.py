"""The Kafka broker factory every service uses, and its retry/dead-letter middleware.

`create_broker` builds a FastStream `KafkaBroker` that authenticates as the service's own SCRAM
principal, produces idempotently with `acks=all`, commits a consumed offset only after the
handler returned (`AckPolicy.NACK_ON_ERROR`), and runs every handler under
`RetryDlqMiddleware`: a failing handler is retried in place a bounded number of times with
exponential backoff, then the original record goes to `<topic>.dlq` with a machine-readable
reason in its headers and the offset commits, so a poison message never blocks its partition.
Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faststream.exceptions import AckMessage, IgnoredException, SetupError
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy, BaseMiddleware
from faststream.security import SASLScram512
from pydantic import ValidationError

from contracts.topics import BY_NAME

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord
    from faststream._internal.basic_types import AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

    from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

SASL_MECHANISM: Final = "SCRAM-SHA-512"
MAX_RETRY_DELAY_MS: Final = 30_000
"""Cap on one backoff delay."""
MAX_TOTAL_RETRY_MS: Final = 120_000
"""Cap on all backoff delays of one message together: well under aiokafka's default
`max_poll_interval_ms` (5 min), so a retrying consumer is never evicted from its group."""

_REASON_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_CUSTOMER_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_GROUP_SUFFIX_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Sleep = Callable[[float], Awaitable[None]]


class PermanentError(Exception):
    """An error that retrying cannot fix: the message goes to the dead-letter topic at once.

    `reason` is a machine-readable code (lower case, e.g. `customer_unknown`); it becomes the
    `x-error` header and the exception text, so it must never contain personal data.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadLetterTopicMissingError(SetupError):
    """A consumed topic has no `<topic>.dlq` twin in the catalog, so it cannot be dead-lettered."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic!r} has no dead-letter twin in contracts.topics; "
            "the retry/DLQ middleware must not consume it"
        )
        self.topic = topic


PERMANENT_ERRORS: Final[tuple[type[Exception], ...]] = (
    PermanentError,
    ValidationError,
    json.JSONDecodeError,
    UnicodeDecodeError,
)
"""Errors that are certainly permanent: they skip the retries."""


def dlq_topic_for(topic: str) -> str:
    """The dead-letter twin of a catalog topic.

    Raises:
        DeadLetterTopicMissingError: The topic is unknown or has no twin.
    """
    entry = BY_NAME.get(topic)
    if entry is None or not entry.dlq:
        raise DeadLetterTopicMissingError(topic)
    return entry.dlq_name


def error_reason(exc: BaseException) -> str:
    """The machine-readable reason code of an error, never its (possibly personal) message.

    An exception's `reason` attribute wins when it looks like a code (lower-case letters,
    digits, `_.:-`, at most 64 characters); otherwise the exception's class name.
    """
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and _REASON_RE.fullmatch(reason):
        return reason
    return type(exc).__name__


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying `exc` is pointless (bad payload, or an explicit `PermanentError`)."""
    return isinstance(exc, PERMANENT_ERRORS)


OUTAGE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    KafkaConnectionError,
    KafkaTimeoutError,
)
"""Errors of the infrastructure, not of the message: never a reason to dead-letter it."""


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a server is unreachable (Postgres, Kafka), not that the message is bad.

    Such a message is retried, then left uncommitted (redelivered after the outage), never
    dead-lettered: an outage must not empty a topic into its DLQ.
    """
    return isinstance(exc, OUTAGE_ERRORS)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried before dead-lettering.

    Attributes:
        max_retries: Attempts after the first.
        backoff_ms: Delay before the first retry; it doubles for each further retry.
        max_delay_ms: Cap on one delay.
        max_total_ms: Cap on the sum of all delays of one message.
    """

    max_retries: int
    backoff_ms: int
    max_delay_ms: int = MAX_RETRY_DELAY_MS
    max_total_ms: int = MAX_TOTAL_RETRY_MS

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        """The policy configured by `max_retries` and `retry_backoff_ms`."""
        return cls(max_retries=settings.max_retries, backoff_ms=settings.retry_backoff_ms)

    def delays(self) -> tuple[float, ...]:
        """Seconds to wait before each retry, in order: one per retry, each and all capped."""
        out: list[float] = []
        budget = self.max_total_ms
        for n in range(self.max_retries):
            delay = min(self.backoff_ms * 2**n, self.max_delay_ms, budget)
            budget -= delay
            out.append(delay / 1000)
        return tuple(out)


def _records(msg: StreamMessage[Any]) -> tuple[ConsumerRecord[Any, Any], ...]:
    raw = msg.raw_message
    return tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)


def _log_fields(record: ConsumerRecord[Any, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    key = record.key
    if isinstance(key, bytes):
        text = key.decode("utf-8", errors="replace")
        # Keys are customer numbers by contract; anything else (a misused e-mail) stays out.
        if _CUSTOMER_ID_RE.fullmatch(text):
            fields["customer_id"] = text
    return fields


class RetryDlqMiddleware:
    """FastStream broker middleware: bounded in-place retries, then the dead-letter topic.

    A handler that raises is called again after `policy.delays()` (the partition waits, so
    per-key order holds). Errors in `PERMANENT_ERRORS` are not retried. When the attempts are
    spent, each original record (raw value bytes and key) is published to `<topic>.dlq` with
    the headers `x-error` (reason code, see `error_reason`), `x-error-type`, `x-attempts`,
    `x-original-topic`, `x-original-partition`, `x-original-offset` and `x-consumer`, and the
    message is acknowledged, so its offset commits and the partition moves on. Only a failed
    dead-letter publish propagates (the broker then seeks back and the message is redelivered).
    FastStream's own control exceptions (`AckMessage`, `NackMessage`, ...) pass through.
    A failure on a topic without a DLQ twin is logged and re-raised; `create_broker`'s broker
    refuses such consumer-group subscriptions already when it connects.
    """

    def __init__(self, *, service: str, policy: RetryPolicy, sleep: Sleep = asyncio.sleep) -> None:
        self.service = service
        self.policy = policy
        self.sleep = sleep

    def __call__(self, msg: object, /, *, context: ContextRepo) -> BaseMiddleware[Any, Any]:
        """The middleware instance for one message (FastStream calls this per message)."""
        return _RetryDlqScope(msg, context=context, owner=self)


class _RetryDlqScope(BaseMiddleware[Any, Any]):
    __slots__ = ("owner",)

    def __init__(self, msg: object, /, *, context: ContextRepo, owner: RetryDlqMiddleware) -> None:
        super().__init__(msg, context=context)
        self.owner = owner

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> object:
        delays = self.owner.policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call_next(msg)
            except IgnoredException:
                raise
            except Exception as exc:
                records = _records(msg)
                self._require_dlq(records, exc)
                if is_outage(exc) and attempt > len(delays):
                    log.warning(
                        "infrastructure unavailable; leaving the message for redelivery",
                        extra=_log_fields(records[0]) | {"reason": error_reason(exc)},
                    )
                    raise
                if is_permanent(exc) or attempt > len(delays):
                    await self._dead_letter(msg, records, exc, attempt)
                    # Ack instead of returning None, so no result is published onwards.
                    raise AckMessage from None
                log.warning(
                    "handler failed, retrying",
                    extra=_log_fields(records[0])
                    | {"reason": error_reason(exc), "attempt": attempt},
                )
            await self.owner.sleep(delays[attempt - 1])

    def _require_dlq(self, records: Sequence[ConsumerRecord[Any, Any]], exc: Exception) -> None:
        for record in records:
            try:
                dlq_topic_for(record.topic)
            except DeadLetterTopicMissingError:
                log.error(  # noqa: TRY400 - the handler's error is the one to show
                    "handler failed on a topic without a dead-letter twin; not acknowledging",
                    exc_info=exc,
                    extra=_log_fields(record) | {"reason": error_reason(exc)},
                )
                raise exc from None

    async def _dead_letter(
        self,
        msg: StreamMessage[Any],
        records: Iterable[ConsumerRecord[Any, Any]],
        exc: Exception,
        attempts: int,
    ) -> None:
        broker: KafkaBroker | None = self.context.get_local("broker")
        if broker is None:
            raise SetupError("no broker in the message context to publish dead letters with")
        extra = {k: v for k, v in msg.headers.items() if isinstance(v, str)}
        for record in records:
            await dead_letter(
                broker,
                record,
                exc,
                attempts=attempts,
                service=self.owner.service,
                headers=extra,
                correlation_id=msg.correlation_id,
            )


async def dead_letter(  # noqa: PLR0913 - the dead letter's whole provenance, keyword-only
    broker: KafkaBroker,
    record: ConsumerRecord[Any, Any],
    exc: BaseException,
    *,
    attempts: int,
    service: str,
    headers: dict[str, str] | None = None,
    correlation_id: str | None = None,
) -> None:
    """Publish one record's original bytes and key to its `<topic>.dlq`, with the reason.

    Used by the retry/DLQ middleware, and by batch handlers that isolate a poison record from
    the rest of their batch. The headers name the reason code and the origin, never the
    exception's message (which may quote personal data).

    Raises:
        DeadLetterTopicMissingError: The record's topic has no dead-letter twin.
        Exception: The publish failed; the caller must not commit the record's offset.
    """
    fields = _log_fields(record)
    dlq = dlq_topic_for(record.topic)
    reason = error_reason(exc)
    all_headers = {
        **(headers or {}),
        "x-error": reason,
        "x-error-type": type(exc).__name__,
        "x-attempts": str(attempts),
        "x-original-topic": record.topic,
        "x-original-partition": str(record.partition),
        "x-original-offset": str(record.offset),
        "x-consumer": service,
    }
    try:
        await broker.publish(
            record.value,
            topic=dlq,
            key=record.key or None,
            headers=all_headers,
            correlation_id=correlation_id,
        )
    except Exception:
        log.exception("dead-letter publish failed", extra=fields | {"reason": reason})
        raise
    log.error(
        "message dead-lettered",
        exc_info=exc,
        extra=fields | {"reason": reason, "attempts": attempts, "dlq_topic": dlq},
    )


def check_subscriptions(broker: KafkaBroker) -> None:
    """Refuse consumer-group subscriptions the retry/DLQ middleware cannot serve.

    Every subscriber with a `group_id` must name its topics (no pattern) and each must have a
    dead-letter twin in the catalog. Subscribers without a group (FastStream's test fakes for
    publishers) commit nothing and are left alone.

    Raises:
        DeadLetterTopicMissingError: A grouped subscriber consumes a topic without a twin.
        SetupError: A grouped subscriber uses a pattern or a manual partition assignment.
    """
    for sub in broker.subscribers:
        if getattr(sub, "group_id", None) is None:
            continue
        topics: list[str] = list(getattr(sub, "topic_names_for_subscribe", []))
        if getattr(sub, "pattern", None) is not None or not topics:
            raise SetupError("grouped subscribers must name their topics (no pattern)")
        for topic in topics:
            dlq_topic_for(topic)


class _ServiceBroker(KafkaBroker):
    """A `KafkaBroker` that checks its subscriptions against the catalog before connecting."""

    async def connect(self) -> Callable[..., AIOKafkaConsumer]:
        check_subscriptions(self)
        return await super().connect()


def _bootstrap(settings: ServiceSettings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def create_broker(
    settings: ServiceSettings,
    *,
    service: str,
    middlewares: Sequence[Any] = (),
) -> KafkaBroker:
    """The Kafka broker of one service; nothing connects until it is started.

    Args:
        settings: The service's settings (Kafka endpoint, SCRAM user, retry policy).
        service: The service name: client id `rekisteri-<service>`, `x-consumer` of dead letters.
        middlewares: Extra broker middlewares, outside the retry/DLQ middleware (which is the
            innermost, so a retry re-runs only the handler).

    Returns:
        A broker producing idempotently with `acks=all`, committing after the handler returns
        (`AckPolicy.NACK_ON_ERROR`), never auto-creating topics, with `RetryDlqMiddleware`.
    """
    use_ssl = settings.kafka_security_protocol == "SASL_SSL"
    security = SASLScram512(
        username=settings.kafka_username,
        password=settings.kafka_password.get_secret_value(),
        ssl_context=ssl.create_default_context() if use_ssl else None,
        use_ssl=use_ssl,
    )
    retry = RetryDlqMiddleware(service=service, policy=RetryPolicy.from_settings(settings))
    return _ServiceBroker(
        _bootstrap(settings),
        security=security,
        client_id=f"rekisteri-{service}",
        enable_idempotence=True,
        acks="all",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        allow_auto_create_topics=False,
        middlewares=(*middlewares, retry),
        logger=logging.getLogger(f"rekisteri.faststream.{service}"),
        # Per-message "Received"/"Processed" lines only at DEBUG; failures still log as errors.
        log_level=logging.DEBUG,
        description=f"Rekisteri {service} service",
    )


class SubscriberOptions(TypedDict):
    """Keyword arguments every service subscriber takes (see `subscriber_kwargs`)."""

    group_id: str
    auto_offset_reset: Literal["earliest"]
    ack_policy: AckPolicy


def consumer_group(service: str, suffix: str | None = None) -> str:
    """The consumer group `<service>` or `<service>.<suffix>` (the principal's ACL prefix)."""
    if not service:
        raise ValueError("service must not be empty")
    if suffix is None:
        return service
    if not _GROUP_SUFFIX_RE.fullmatch(suffix):
        raise ValueError("group suffix must be letters, digits, '.', '_' or '-'")
    return f"{service}.{suffix}"


def subscriber_kwargs(service: str, *, suffix: str | None = None) -> SubscriberOptions:
    """Options for `broker.subscriber(topic, **subscriber_kwargs(service))`.

    The group is the service's own (`<service>` or `<service>.<suffix>`), a new group starts
    from the earliest retained record, and offsets commit only after the handler returned.
    """
    return SubscriberOptions(
        group_id=consumer_group(service, suffix),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )


def aiokafka_client_args(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for plain aiokafka clients (tools, tests) as the service's principal."""
    args: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(settings),
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.kafka_password.get_secret_value(),
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        args["ssl_context"] = ssl.create_default_context()
    return args


def broker_ready(broker: KafkaBroker, *, timeout: float = 2.0) -> Callable[[], Awaitable[bool]]:
    """A readiness check for `health.HealthServer`: the broker is connected and answers."""

    async def check() -> bool:
        return bool(broker.running) and await broker.ping(timeout)

    return check
