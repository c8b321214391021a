"""The topic catalog: every Kafka topic Rekisteri uses, named exactly once.

Provisioning (`deploy/provision.py`) reads this catalog to create topics with their settings and
to grant each service's Kafka principal access to just the topics it produces or consumes. Every
consumed topic gets a dead-letter twin `<topic>.dlq` with the same retention, written by the
topic's consumers when a message cannot be processed after bounded retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

DAY_MS: Final = 24 * 60 * 60 * 1000


class Cleanup(StrEnum):
    """Kafka `cleanup.policy` of a topic."""

    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class Topic:
    """One Kafka topic and its settings.

    Attributes:
        name: The topic name, `<owner>.<what>.v<major>`.
        description: What flows on the topic, for humans and the AsyncAPI documents.
        key: What the record key is (always the customer number for customer data).
        partitions: Partition count; per-key order holds within a partition.
        cleanup: `delete` for event streams, `compact` for current-state topics.
        retention_ms: How long records are kept (-1 for ever), for delete topics.
        producers: Principals allowed to write.
        consumers: Principals allowed to read (each reads with its own consumer group).
        dlq: Whether the topic has a `<name>.dlq` twin (every consumed topic does).
    """

    name: str
    description: str
    key: str
    partitions: int
    cleanup: Cleanup
    retention_ms: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    dlq: bool = True
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def dlq_name(self) -> str:
        """The dead-letter twin's name."""
        return f"{self.name}.dlq"

    def config(self, *, compaction_ms: int | None = None) -> dict[str, str]:
        """The topic-level Kafka configuration.

        Args:
            compaction_ms: For compacted topics, the bound on how long a superseded value or a
                tombstone may survive (`segment.ms`, `max.compaction.lag.ms`); defaults to one
                day, tests pass small values so deletes really happen while they watch.
        """
        conf: dict[str, str] = {"cleanup.policy": str(self.cleanup)}
        if self.cleanup is Cleanup.COMPACT:
            lag = compaction_ms if compaction_ms is not None else DAY_MS
            conf |= {
                "segment.ms": str(lag),
                "max.compaction.lag.ms": str(lag),
                "min.cleanable.dirty.ratio": "0.01",
                # Offline consumers must still see a tombstone: keep it at least 7 days.
                "delete.retention.ms": str(7 * DAY_MS),
            }
        else:
            conf["retention.ms"] = str(self.retention_ms)
        conf["min.insync.replicas"] = "1"
        return conf | self.extra_config


SERVICES: Final = (
    "intake",
    "records",
    "photos",
    "consent",
    "rights",
    "marketing",
    "analytics",
    "compliance",
)
"""Every service; each has its own Kafka principal, Postgres role and schema, S3 identity."""

CLINIC_APP: Final = "clinic-app"
"""The principal of clinic apps (reception desk, online booking, kiosk): the front door only."""
OPERATOR: Final = "operator"
"""The principal of the staff CLI's operational commands: reads DLQs and consumer lag."""
AUDITOR: Final = "auditor"
"""The compliance officer's read-only principal for the audit ledger and checkpoints."""

_WEEK: Final = 7 * DAY_MS
_MONTH: Final = 30 * DAY_MS
_CONSENT_READERS: Final = ("marketing", "analytics", "photos")
_STOPPERS: Final = ("marketing", "analytics", "photos", "records")
_ALL: Final = SERVICES

TOPICS: Final[tuple[Topic, ...]] = (
    Topic(
        "intake.submissions.v1",
        "The one front door: events published by clinic apps, validated and routed by intake.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=(CLINIC_APP, OPERATOR),
        consumers=("intake",),
    ),
    Topic(
        "intake.rejected.v1",
        "Submissions intake refused, keyed like the submission, with machine-readable reasons.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=("intake",),
        consumers=(CLINIC_APP, OPERATOR),
        dlq=False,
    ),
    Topic(
        "records.commands.v1",
        "Validated commands for the customer register.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=("intake", OPERATOR),
        consumers=("records",),
    ),
    Topic(
        "records.customer.v1",
        "Current register entry per customer; personal fields encrypted with the customer's key.",
        "customer_id",
        6,
        Cleanup.COMPACT,
        -1,
        producers=("records",),
        consumers=("analytics", "rights"),
    ),
    Topic(
        "photos.commands.v1",
        "Photo claims (PhotoUploaded) and photo requests routed by intake.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=("intake", OPERATOR),
        consumers=("photos",),
    ),
    Topic(
        "photos.events.v1",
        "Photos stored, rejected, restricted or deleted.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=("photos",),
        consumers=("rights",),
    ),
    Topic(
        "consent.commands.v1",
        "Consent captured, withdrawn and objections lodged, for the consent service.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=("intake", OPERATOR),
        consumers=("consent",),
    ),
    Topic(
        "consent.events.v1",
        "Append-only consent history.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=("consent",),
        consumers=("compliance",),
    ),
    Topic(
        "consent.state.v1",
        "Current consent per customer with its version (compacted).",
        "customer_id",
        6,
        Cleanup.COMPACT,
        -1,
        producers=("consent",),
        consumers=_CONSENT_READERS,
    ),
    Topic(
        "privacy.directives.v1",
        "Stop and erase orders (ProcessingStopRequested, ErasureRequested) for every processor.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=("consent", "rights"),
        consumers=_STOPPERS,
    ),
    Topic(
        "privacy.acks.v1",
        "Processors' answers to directives (ProcessingStopped, ErasureCompleted).",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=_STOPPERS,
        consumers=("consent", "rights", "compliance"),
    ),
    Topic(
        "rights.commands.v1",
        "Data-subject requests received through any channel.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _WEEK,
        producers=("intake", OPERATOR),
        consumers=("rights",),
    ),
    Topic(
        "rights.tasks.v1",
        "Work the rights service hands to the services holding the customer's data.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=("rights",),
        consumers=("records", "photos", "consent", "marketing", "analytics"),
    ),
    Topic(
        "rights.events.v1",
        "Rights cases opened, extended, answered and closed.",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=("rights",),
        consumers=("compliance",),
    ),
    Topic(
        "audit.events.v1",
        "PII-free audit events from every service (who, what, which customer, purpose, outcome).",
        "customer_id",
        6,
        Cleanup.DELETE,
        _MONTH,
        producers=_ALL,
        consumers=("compliance",),
    ),
    Topic(
        "audit.ledger.v1",
        "The tamper-evident, sequenced audit ledger: one partition, kept for ever.",
        "seq",
        1,
        Cleanup.DELETE,
        -1,
        producers=("compliance",),
        consumers=(AUDITOR,),
        dlq=False,
    ),
    Topic(
        "audit.checkpoints.v1",
        "Signed Merkle checkpoints of the audit ledger.",
        "origin",
        1,
        Cleanup.DELETE,
        -1,
        producers=("compliance",),
        consumers=(AUDITOR,),
        dlq=False,
    ),
)

BY_NAME: Final = {t.name: t for t in TOPICS}


SEALED_COMMAND_TOPICS: Final = (
    "records.commands.v1",
    "photos.commands.v1",
    "consent.commands.v1",
    "rights.commands.v1",
)
"""Service command topics whose payloads are sealed with a topic key (see contracts.sealing)."""


def topic(name: str) -> Topic:
    """Look a topic up by name; an unknown name is a programming error."""
    return BY_NAME[name]


def dlq_topics() -> tuple[Topic, ...]:
    """The dead-letter twins, one per consumed topic, with the same retention as the original.

    A DLQ is written by the original topic's consumers and read by operators.
    """
    twins = []
    for t in TOPICS:
        if not t.dlq:
            continue
        retention = t.retention_ms if t.cleanup is Cleanup.DELETE else _MONTH
        writers = tuple(c for c in t.consumers if c in SERVICES)
        twins.append(
            Topic(
                t.dlq_name,
                f"Dead letters of {t.name}: original bytes, reason and origin in headers.",
                t.key,
                t.partitions,
                Cleanup.DELETE,
                retention,
                producers=writers,
                consumers=(OPERATOR,),
                dlq=False,
            )
        )
    return tuple(twins)


def all_topics() -> tuple[Topic, ...]:
    """Every topic, dead-letter twins included."""
    return TOPICS + dlq_topics()


BUCKETS: Final[dict[str, tuple[str, ...]]] = {
    "quarantine": ("photos",),
    "photos": ("photos",),
    "exports": ("rights",),
    "audit-checkpoints": ("compliance",),
}
"""S3 buckets and the service identities that may use them (nobody else may)."""
