"""The events clinic apps publish to `intake.submissions.v1`, and intake's rejections.

Clinic apps (reception desk, online booking, kiosk) publish one of the `Submission` events below,
keyed by the customer number, with everything but the envelope sealed to intake's public key
(`contracts.sealing`, `contracts.client`); a submission with payload fields in clear is rejected
`not_sealed`, so personal data never rests in clear on Kafka. Intake validates each one (shape
here, domain rules in `services.intake.domain`) and either forwards it, normalised and sealed to
the owner's key, to the service that owns it, or publishes a `SubmissionRejected` to
`intake.rejected.v1` under the same key, naming the submission's `event_id` and listing
machine-readable `Reason`s. A reason names a check and a field path, never a value, so a
rejection carries no personal data.

The models here are deliberately moderate in their own constraints (types, lengths, closed
vocabularies); checks that need domain knowledge (identity code, e-mail, phone number, dates
against each other) live in the intake domain so each failure maps to a clean reason code.
"""

from __future__ import annotations

from datetime import date  # noqa: TC003 - pydantic resolves annotations at runtime
from enum import StrEnum
from typing import Annotated, Final, Literal
from uuid import UUID  # noqa: TC003 - pydantic resolves annotations at runtime

from pydantic import Field

from contracts.consent import Actor as ConsentActor
from contracts.consent import ConsentChannel, Purpose
from contracts.envelope import Event, WireModel

# --- Shared vocabularies and field shapes -------------------------------------------------

SINGLE_LINE: Final = r"^[^\x00-\x1f\x7f]*$"
"""Pattern of one-line text: no control characters."""
MULTI_LINE: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Pattern of free text: no control characters except tab and line breaks."""
IDENTIFIER: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""Pattern of opaque identifiers (customer numbers, staff ids, versions)."""

Language = Literal["fi", "sv", "en"]
"""A language the clinic serves its notice and communication in."""
Source = Literal["customer", "service_use", "population_register", "credit_agency", "web_analytics"]
"""Where a piece of data came from (Art. 14 requires telling the customer about non-customer
sources)."""
Gender = Literal["female", "male", "other", "undisclosed"]
"""Gender as the customer declares it; never derived from the personal identity code."""
Channel = Literal["reception", "web", "kiosk", "phone", "email", "post"]
"""Where the customer was when they said it."""
GuardianType = Literal["guardian", "trustee"]
"""A minor's guardian (huoltaja) or an appointed trustee (edunvalvoja)."""
GuardianScope = Literal["health_care", "personal_matters", "financial_matters"]
"""What a representative may act on."""
ConsentPurpose = Purpose
"""A purpose of the closed catalogue (`contracts.consent.Purpose`), recorded separately."""

Phone = Annotated[str, Field(min_length=1, max_length=32, pattern=SINGLE_LINE)]
Email = Annotated[str, Field(min_length=1, max_length=320, pattern=SINGLE_LINE)]

# --- Value models --------------------------------------------------------------------------


class PersonName(WireModel):
    """A person's name."""

    given_names: str = Field(
        min_length=1, max_length=100, pattern=SINGLE_LINE, repr=False, description="Given names."
    )
    family_name: str = Field(
        min_length=1, max_length=100, pattern=SINGLE_LINE, repr=False, description="Family name."
    )


class Address(WireModel):
    """A postal address."""

    street: str = Field(
        min_length=1,
        max_length=200,
        pattern=SINGLE_LINE,
        repr=False,
        description="Street address, including any c/o line.",
    )
    postal_code: str = Field(
        min_length=1,
        max_length=16,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]*$",
        repr=False,
        description="Postal code.",
    )
    city: str = Field(
        min_length=1,
        max_length=100,
        pattern=SINGLE_LINE,
        repr=False,
        description="Post office or city.",
    )
    country: str = Field(
        "FI", pattern=r"^[A-Z]{2}$", description="Country, ISO 3166-1 alpha-2 (default FI)."
    )


class ContactDetails(WireModel):
    """How to reach a person.

    In `CustomerRegistered` a null field means the customer gave none. In
    `ContactDetailsChanged` a null field means unchanged, and an empty list removes them all.
    """

    address: Address | None = Field(None, description="Postal address.")
    phones: tuple[Phone, ...] | None = Field(
        None,
        max_length=5,
        repr=False,
        description="Phone numbers as entered; intake stores them in E.164 (default region FI).",
    )
    emails: tuple[Email, ...] | None = Field(
        None,
        max_length=5,
        repr=False,
        description="E-mail addresses; intake stores them normalised.",
    )


class Demographics(WireModel):
    """Who the customer is. A change event carries the whole block, replacing the old one."""

    name: PersonName = Field(description="The customer's name.")
    hetu: str | None = Field(
        None,
        max_length=32,
        repr=False,
        description=(
            "Personal identity code (henkilötunnus), all 11 characters as issued; the century "
            "sign is part of the identity and is never rewritten. Null: the customer has none."
        ),
    )
    date_of_birth: date | None = Field(
        None,
        repr=False,
        description=(
            "Date of birth; age is derived from it, never stored. Filled in by intake from the "
            "identity code when absent, and must agree with it when both are given."
        ),
    )
    gender: Gender | None = Field(
        None, description="Gender as declared by the customer; never derived from the code."
    )
    title: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=SINGLE_LINE,
        repr=False,
        description="Title or profession; optional, kept only where a purpose requires it.",
    )
    mother_tongue: str | None = Field(
        None, pattern=r"^[a-z]{2,3}$", description="Mother tongue, ISO 639-1 or 639-3 code."
    )


class Guardian(WireModel):
    """A representative of the customer: a minor's guardian or an appointed trustee."""

    type: GuardianType = Field(description="`guardian` (huoltaja) or `trustee` (edunvalvoja).")
    name: PersonName = Field(description="The representative's name.")
    customer_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The representative's own customer number, if they are a customer too.",
    )
    contact: ContactDetails | None = Field(None, description="How to reach the representative.")
    scope: tuple[GuardianScope, ...] = Field(
        min_length=1,
        max_length=3,
        description="What the representative may act on; a trustee only within this mandate.",
    )
    valid_from: date = Field(description="First day of the representation.")
    valid_until: date | None = Field(
        None,
        description=(
            "Last day of the representation (null: open-ended; a guardian's ends at the "
            "minor's 18th birthday regardless)."
        ),
    )


class DvvBans(WireModel):
    """Disclosure bans recorded in the population register (DVV), stored as received."""

    direct_marketing_ban: bool = Field(
        default=False, description="Ban on direct marketing (suoramarkkinointikielto)."
    )
    market_research_ban: bool = Field(
        default=False, description="Ban on market and opinion research."
    )
    address_disclosure_ban: bool = Field(
        default=False, description="Ban on disclosing contact details."
    )
    register_update_ban: bool = Field(
        default=False, description="Ban on updating customer registers from DVV."
    )
    security_ban: bool = Field(
        default=False,
        description="Security ban (turvakielto): the address is masked and never exported.",
    )


class Acquisition(WireModel):
    """How the customer came to the clinic."""

    channel: Literal["web", "phone", "walk_in", "referral", "campaign", "other"] = Field(
        description="The channel the customer came through."
    )
    way: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=SINGLE_LINE,
        repr=False,
        description="The way, in the clinic's words (e.g. the campaign or the referring party).",
    )


class StaffMember(WireModel):
    """A member of the clinic's staff."""

    staff_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The staff member's account id.",
    )
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=SINGLE_LINE,
        repr=False,
        description="The staff member's name.",
    )


# --- Submissions ---------------------------------------------------------------------------


class Submission(Event):
    """Base of every event a clinic app publishes to `intake.submissions.v1`.

    Unlike other events, a submission must name its `event_id` (the app's retries reuse it, and
    a rejection points back to it) and its `customer_id` (also the Kafka key).
    """

    event_id: UUID = Field(
        description="Unique id of this submission, set by the app and kept across its retries."
    )
    customer_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The clinic's customer number (asiakasnumero); also the Kafka key.",
    )
    producer: str = Field(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The clinic app that sent it, e.g. reception-desk or online-booking.",
    )


class CustomerRegistered(Submission):
    """A new customer was entered in the register."""

    type: Literal["CustomerRegistered"] = Field(
        "CustomerRegistered", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    demographics: Demographics = Field(description="Who the customer is.")
    contact: ContactDetails = Field(
        default_factory=ContactDetails, description="How to reach the customer."
    )
    preferred_language: Language = Field(
        description="Language for notices and communication (fi, sv or en)."
    )
    privacy_notice_version: str = Field(
        min_length=1,
        max_length=32,
        pattern=IDENTIFIER,
        description="Version of the privacy notice shown to the customer at registration.",
    )
    guardians: tuple[Guardian, ...] = Field(
        (), max_length=5, description="The customer's guardians and trustees."
    )
    no_disclosure_to_guardian: bool = Field(
        default=False,
        description="A minor forbids disclosing their records to their guardians (785/1992 §9).",
    )
    acquisition: Acquisition | None = Field(None, description="How the customer came.")
    billing_reference: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=SINGLE_LINE,
        repr=False,
        description="Billing reference (e.g. an employer or insurer reference).",
    )
    source: Source = Field("customer", description="Where this data came from.")
    dvv_bans: DvvBans | None = Field(
        None, description="Population-register bans, when known (null: not known)."
    )


class ContactDetailsChanged(Submission):
    """The customer's contact details or preferred language changed."""

    type: Literal["ContactDetailsChanged"] = Field(
        "ContactDetailsChanged", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    contact: ContactDetails = Field(
        description="The changed details; null fields are unchanged, an empty list clears."
    )
    preferred_language: Language | None = Field(
        None, description="New preferred language (null: unchanged)."
    )
    source: Source = Field("customer", description="Where this data came from.")
    dvv_bans: DvvBans | None = Field(
        None, description="Population-register bans received with the change (null: unchanged)."
    )


class DemographicsChanged(Submission):
    """The customer's name, identity code, birth date, gender, title or mother tongue changed."""

    type: Literal["DemographicsChanged"] = Field(
        "DemographicsChanged", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    demographics: Demographics = Field(
        description="The whole demographics block, replacing the previous one."
    )
    source: Source = Field("customer", description="Where this data came from.")


class GuardianChanged(Submission):
    """The customer's guardians or trustees, or the minor's disclosure ban, changed."""

    type: Literal["GuardianChanged"] = Field("GuardianChanged", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    guardians: tuple[Guardian, ...] = Field(
        max_length=5, description="The whole current set of representatives (empty: none)."
    )
    no_disclosure_to_guardian: bool = Field(
        default=False,
        description="A minor forbids disclosing their records to their guardians (785/1992 §9).",
    )


class VisitRecorded(Submission):
    """The customer visited the clinic (a patient-record item)."""

    type: Literal["VisitRecorded"] = Field("VisitRecorded", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    visit_date: date = Field(description="Date of the visit.")
    treating_staff: tuple[StaffMember, ...] = Field(
        min_length=1, max_length=10, description="The staff who treated the customer."
    )


class FeedbackGiven(Submission):
    """The customer gave feedback or expressed a wish."""

    type: Literal["FeedbackGiven"] = Field("FeedbackGiven", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    kind: Literal["feedback", "wish"] = Field(
        "feedback", description="Feedback on a service, or a wish for the future."
    )
    text: str = Field(
        min_length=1,
        max_length=4000,
        pattern=MULTI_LINE,
        repr=False,
        description="The customer's words.",
    )
    channel: Channel | None = Field(None, description="Where it was given.")


class ConsentCaptured(Submission):
    """The customer gave (or refused) a consent for one purpose (owner: consent).

    Carries what ISO/IEC TS 27560 asks of a consent record: the purpose, the status, the notice
    shown (id, version, language, hash of the exact text), the channel, who expressed it, and
    the evidence; `occurred_at` is when it was expressed.
    """

    type: Literal["ConsentCaptured"] = Field("ConsentCaptured", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    purpose: Purpose = Field(description="The one purpose consented to (or refused).")
    status: Literal["given", "refused"] = Field(
        "given", description="`given`, or `refused` when the customer was asked and declined."
    )
    notice_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The notice (wording) shown (null: the purpose's own, `consent.<purpose>`).",
    )
    notice_version: str = Field(
        min_length=1,
        max_length=32,
        pattern=IDENTIFIER,
        description="Version of the consent wording the customer saw.",
    )
    language: Language = Field(description="Language of the wording the customer saw.")
    notice_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "SHA-256 (lower-case hex) of the exact text shown (null: consent takes it from its "
            "notice catalogue when it knows the notice)."
        ),
    )
    channel: ConsentChannel = Field(description="Where: desk, web, kiosk, phone or paper.")
    actor: ConsentActor = Field(
        "customer",
        description="Who expressed it: the customer, their guardian, or staff acting for them.",
    )
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The guardian's customer number or the staff account acting (null: none).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The staff account that entered it (desk, phone, paper), if any.",
    )
    photo_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="For photo purposes: the one photo the consent covers (null: every photo).",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=SINGLE_LINE,
        description="Reference to the evidence (e.g. a signed form's archive id).",
    )


class ConsentWithdrawn(Submission):
    """The customer withdrew a consent, or staff revoked it for them (owner: consent)."""

    type: Literal["ConsentWithdrawn"] = Field("ConsentWithdrawn", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    purpose: Purpose = Field(description="The purpose withdrawn.")
    channel: ConsentChannel = Field(description="Where: desk, web, kiosk, phone or paper.")
    actor: ConsentActor = Field(
        "customer",
        description=(
            "Who withdrew it: the customer or their guardian (status withdrawn), or staff "
            "revoking it on the customer's behalf (status revoked)."
        ),
    )
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The guardian's customer number or the staff account acting (null: none).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The staff account that entered it (desk, phone, paper), if any.",
    )
    photo_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="For photo purposes: the one photo (null: every photo).",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=SINGLE_LINE,
        description="Reference to the evidence (e.g. a signed form's archive id).",
    )


ObjectionName = Literal[
    "direct_marketing",
    "distance_selling",
    "market_research",
    "opinion_research",
    "analytics",
    "research",
]
"""What an objection names; consent maps each to its kind (`consent.OBJECTION_ALIASES`)."""


class ObjectionLodged(Submission):
    """The customer objected to a processing (owner: consent)."""

    type: Literal["ObjectionLodged"] = Field("ObjectionLodged", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    objection: ObjectionName = Field(
        description=(
            "What is objected to; the direct-marketing and research kinds are absolute "
            "(Art. 21(2)-(3)) and can never be refused, analytics is Art. 21(1)."
        )
    )
    channel: ConsentChannel = Field(description="Where: desk, web, kiosk, phone or paper.")
    actor: ConsentActor = Field(
        "customer",
        description="Who objected: the customer, their guardian, or staff acting for them.",
    )
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The guardian's customer number or the staff account acting (null: none).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The staff account that entered it (desk, phone, paper), if any.",
    )
    grounds: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        pattern=MULTI_LINE,
        repr=False,
        description="The customer's grounds, for an Art. 21(1) objection (none needed otherwise).",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=SINGLE_LINE,
        description="Reference to the evidence (e.g. a signed form's archive id).",
    )


class ObjectionLifted(Submission):
    """The customer explicitly lifted an objection (owner: consent).

    Only the customer (or their guardian) can lift an objection; staff may enter it for them
    (`recorded_by`). Capturing a marketing consent never lifts one.
    """

    type: Literal["ObjectionLifted"] = Field("ObjectionLifted", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    objection: ObjectionName = Field(description="The objection lifted.")
    channel: ConsentChannel = Field(description="Where: desk, web, kiosk, phone or paper.")
    actor: Literal["customer", "guardian"] = Field(
        "customer", description="Who lifted it: the customer or their guardian, never staff."
    )
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The guardian's customer number (null: the customer).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The staff account that entered it (desk, phone, paper), if any.",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=SINGLE_LINE,
        description="Reference to the evidence (e.g. a signed form's archive id).",
    )


class PhotoUploaded(Submission):
    """A tooth photo was uploaded to quarantine (a claim check; owner: photos)."""

    type: Literal["PhotoUploaded"] = Field("PhotoUploaded", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    upload_id: UUID = Field(description="The upload intent the photo was uploaded under.")
    view: Literal["front", "left", "right"] = Field(description="Which view of the teeth.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the uploaded bytes, lower-case hex."
    )
    size_bytes: int = Field(ge=1, le=50_000_000, description="Size of the uploaded bytes.")


class RightsRequestReceived(Submission):
    """The customer made a data-subject request (owner: rights)."""

    type: Literal["RightsRequestReceived"] = Field(
        "RightsRequestReceived", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    right: Literal[
        "access",
        "rectification",
        "erasure",
        "restriction",
        "portability",
        "objection",
        "access_log",
    ] = Field(description="The right invoked (Art. 15-21; access_log: who processed the data).")
    channel: Channel = Field(description="Where the request was received.")
    actor: str = Field(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="Who recorded it: a staff account id, or `customer` for self-service.",
    )
    identity_check: Literal["strong_eid", "id_document", "not_verified"] = Field(
        "not_verified", description="How the requester's identity was verified, if at all."
    )
    details: str | None = Field(
        None,
        min_length=1,
        max_length=4000,
        pattern=MULTI_LINE,
        repr=False,
        description="The request in the customer's words.",
    )


SUBMISSIONS: Final[dict[tuple[str, int], type[Submission]]] = {
    (cls.model_fields["type"].default, cls.model_fields["schema_version"].default): cls
    for cls in (
        CustomerRegistered,
        ContactDetailsChanged,
        DemographicsChanged,
        GuardianChanged,
        VisitRecorded,
        FeedbackGiven,
        ConsentCaptured,
        ConsentWithdrawn,
        ObjectionLodged,
        ObjectionLifted,
        PhotoUploaded,
        RightsRequestReceived,
    )
}
"""Every accepted submission model by (type, schema_version)."""

SUBMISSION_TYPES: Final = frozenset(name for name, _ in SUBMISSIONS)
"""The names of every submission type intake knows."""

# --- Rejections ----------------------------------------------------------------------------


class ReasonCode(StrEnum):
    """The reason codes intake uses; the wire carries them as plain strings (additive)."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    DUPLICATE_KEY = "duplicate_key"
    NOT_OBJECT = "not_object"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    CUSTOMER_ID_INVALID = "customer_id_invalid"
    KEY_MISMATCH = "key_mismatch"
    FIELD_MISSING = "field_missing"
    FIELD_TYPE = "field_type"
    FIELD_FORMAT = "field_format"
    FIELD_TOO_LONG = "field_too_long"
    FIELD_TOO_SHORT = "field_too_short"
    TOO_MANY_ITEMS = "too_many_items"
    TOO_FEW_ITEMS = "too_few_items"
    FIELD_VALUE = "field_value"
    FIELD_INVALID = "field_invalid"
    TIMEZONE_MISSING = "timezone_missing"
    LANGUAGE_INVALID = "language_invalid"
    EMAIL_INVALID = "email_invalid"
    PHONE_INVALID = "phone_invalid"
    HETU_FORMAT = "hetu_format"
    HETU_DATE = "hetu_date"
    HETU_INDIVIDUAL_NUMBER = "hetu_individual_number"
    HETU_CHECKSUM = "hetu_checksum"
    DATE_OF_BIRTH_MISMATCH = "date_of_birth_mismatch"
    DATE_IN_FUTURE = "date_in_future"
    GUARDIAN_DATES = "guardian_dates"
    GUARDIAN_NOT_MINOR = "guardian_not_minor"
    NO_DISCLOSURE_NOT_MINOR = "no_disclosure_not_minor"
    NOT_SUPPORTED_YET = "not_supported_yet"
    NOT_SEALED = "not_sealed"
    SEALED_INVALID = "sealed_invalid"
    SEALED_UNDECRYPTABLE = "sealed_undecryptable"


class Reason(WireModel):
    """One failed check: what failed and where, never the offending value."""

    code: str = Field(
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Machine-readable reason code, e.g. hetu_checksum (see ReasonCode).",
    )
    field: str | None = Field(
        None,
        max_length=200,
        description="JSON path of the field, e.g. contact.emails[0] (null: the whole message).",
    )


class SubmissionRejected(Event):
    """Intake refused a submission; published to `intake.rejected.v1` under the same key."""

    type: Literal["SubmissionRejected"] = Field(
        "SubmissionRejected", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    submission_event_id: UUID | None = Field(
        None, description="The submission's event_id (null: it could not be read)."
    )
    submission_type: str | None = Field(
        None, max_length=64, description="The submission's type, when it is a known type."
    )
    reasons: tuple[Reason, ...] = Field(
        min_length=1, description="Every check that failed, in the order they were made."
    )
