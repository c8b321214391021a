"""What the records service publishes: the current register entry of each customer.

`records.customer.v1` is a compacted topic keyed by the customer number: the latest
`CustomerRecord` of a customer is their whole current register entry, and a tombstone (a null
value) deletes it. Every personal value travels only in `pii`, encrypted with the customer's own
data key (`services.common.crypto`), so shredding that key makes every copy unreadable; the
other fields are non-identifying metadata, and `analytics` the coarse categories analytics
counts (see `AnalyticsFacts`).

Reading `pii`: `crypto.decrypt_fields(key, record.pii, crypto.associated_data(customer_id,
"CustomerRecord", 1))` gives, per field, the JSON text of the value (see `PII_FIELDS`).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints, field_validator

from contracts.envelope import Event, WireModel
from contracts.intake import Language  # noqa: TC001 - pydantic resolves annotations at runtime

CUSTOMER_TOPIC: Final = "records.customer.v1"
"""The compacted topic of current register entries, keyed by customer_id."""
PII_CONTEXT: Final = "CustomerRecord"
"""The event type named in the associated data of every `pii` field."""
PII_SCHEMA_VERSION: Final = 1
"""The schema version named in the associated data of every `pii` field."""

DataClass = Literal["customer_register", "patient_record", "billing"]
"""The data class of a stored item, which decides its retention (DESIGN.md)."""

PII_FIELDS: Final[dict[str, str]] = {
    "name": 'object {"given_names", "family_name"}',
    "hetu": "string: the personal identity code as issued",
    "date_of_birth": "string: ISO date (age is derived from it, never stored)",
    "gender": "string: female, male, other or undisclosed",
    "title": "string: title or profession",
    "mother_tongue": "string: ISO 639-1 or 639-3 code",
    "address": 'object {"street", "postal_code", "city", "country"}',
    "phones": "array of E.164 strings",
    "emails": "array of normalised e-mail addresses",
    "preferred_language": "string: fi, sv or en",
    "guardians": 'object {"guardians": [...], "no_disclosure_to_guardian": bool}',
    "acquisition": 'object {"channel", "way"}',
    "billing_reference": "string",
    "dvv_bans": "object of the population-register ban flags",
    "privacy_notice_version": "string: the notice version shown at registration",
}
"""Every field `pii` may carry, and the JSON shape its decrypted text has. Absent: not held."""

AgeBand = Literal["0-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]
"""Age bands in whole years (the ten-year bands of Statistics Finland, children together)."""
AcquisitionChannel = Literal["web", "phone", "walk_in", "referral", "campaign", "other"]
"""The channel a customer came through: `contracts.intake.Acquisition.channel`'s vocabulary."""
VisitMonth = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
"""A calendar month, `YYYY-MM`."""


class AnalyticsFacts(WireModel):
    """The coarse categories analytics counts, in clear: no name, no date, no free text.

    Why these may travel unencrypted next to `pii`: each is a category shared by a large part
    of the clientele (an age band of ten years, one of three languages, one of six acquisition
    channels, calendar months of visits), never a value that singles a person out, and none is
    the free text (`Acquisition.way`), the date of birth or the visit dates themselves. The
    topic is read only by the analytics and rights principals (the Kafka ACLs of
    `contracts.topics`); analytics keys what it keeps by a keyed hash of the customer number,
    counts only customers whose consent allows it and hides small cells. What remains
    personal data about the customer here is pseudonymous at the consumer and minimal by
    construction. The age band is computed when the snapshot is made (age is never stored),
    so it is as of the snapshot's `occurred_at`. Unlike `pii`, these facts are not shredded
    with the customer's key: erasure relies on the record's tombstone and compaction.
    """

    age_band: AgeBand | None = Field(
        None,
        description=(
            "The customer's age band on the day of the snapshot, from the date of birth "
            "(null: no date of birth held)."
        ),
    )
    preferred_language: Language | None = Field(
        None, description="The language the customer wants to be served in (null: not held)."
    )
    acquisition_channel: AcquisitionChannel | None = Field(
        None, description="The channel the customer came to the clinic through (null: not held)."
    )
    visit_months: tuple[VisitMonth, ...] = Field(
        (),
        description=(
            "The month (YYYY-MM) of each of the customer's visits, one per visit, sorted; "
            "the visit dates themselves stay encrypted."
        ),
    )

    @field_validator("visit_months")
    @classmethod
    def _sorted(cls, months: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(months))


class CustomerRecord(Event):
    """The whole current register entry of one customer (records.customer.v1, compacted)."""

    type: Literal["CustomerRecord"] = Field("CustomerRecord", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="The clinic's customer number (asiakasnumero); also the Kafka key.",
    )
    producer: Literal["records"] = Field(
        "records", description="Always the records service, the register's only writer."
    )
    version: int = Field(
        ge=1,
        description=(
            "The customer's register version: bumped by every command applied to them, so a "
            "reader keeps the record with the highest version."
        ),
    )
    registered: bool = Field(
        description=(
            "Whether the customer's registration has arrived (false: only changes so far, "
            "which arrived before it)."
        )
    )
    data_classes: tuple[DataClass, ...] = Field(
        description=(
            "The data classes of everything the register holds on the customer, sorted "
            "(items, visits and feedback): what retention and erasure must consider."
        )
    )
    sources: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Where each current item came from, by `pii` field name (customer, service_use, "
            "population_register, ...): what the Art. 14 notice must name."
        ),
    )
    pii: dict[str, str] = Field(
        repr=False,
        description=(
            "The current personal items by field name (see PII_FIELDS), each the base64 "
            "AES-256-GCM ciphertext of the value's JSON text under the customer's data key, "
            "with associated data `customer_id|CustomerRecord|1|<field>`."
        ),
    )
    analytics: AnalyticsFacts | None = Field(
        None,
        description=(
            "The coarse, non-identifying categories analytics counts (age band, language, "
            "acquisition channel, visit months), in clear; null when not computed (a "
            "snapshot older than this field)."
        ),
    )
