"""Realistic intake submissions with canaries, for end-to-end tests and the benchmark.

Every customer gets unique canary values (name, e-mail, identity code, street, feedback text) so
a test can later search every topic and table for them. The invalid submissions cover each kind
of bad input intake must reject: bad identity codes (check character, century sign, date),
bad e-mail and phone, unknown type and schema version, missing customer number, not sealed, not
JSON, not UTF-8, over 1 MB, and an owner that does not exist yet.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from services.intake.hetu import build_hetu

HETU_RE = re.compile(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-FHJ-NPR-Y]")
"""Anything shaped like a personal identity code."""
GIVEN = ("Aino", "Eino", "Helmi", "Väinö", "Linnea", "Onni", "Saga", "Elias", "Ilona", "Leo")
FAMILY = ("Virtanen", "Korhonen", "Nieminen", "Mäkinen", "Hämäläinen", "Lindqvist", "Laine")
STREETS = ("Mariankatu", "Maneesikatu", "Liisankatu", "Snellmaninkatu", "Kruunuvuorenkatu")


@dataclass(frozen=True)
class Sent:
    """One submission as bytes, with what the test expects of it."""

    key: bytes | None
    value: bytes | dict[str, Any]
    """Raw bytes sent as they are, or a document the client seals."""
    event_id: str | None
    customer_id: str | None
    expect_reason: str | None = None
    """The rejection code expected, or None when the submission is valid."""


@dataclass
class Customer:
    """A valid customer and the values its register entry must end with."""

    customer_id: str
    canaries: dict[str, str]
    last_email: str = ""
    events: int = 0


@dataclass
class Dataset:
    """Submissions in send order, and the expected outcome."""

    sent: list[Sent] = field(default_factory=list)
    customers: dict[str, Customer] = field(default_factory=dict)

    @property
    def invalid(self) -> list[Sent]:
        """The submissions that must be rejected."""
        return [s for s in self.sent if s.expect_reason is not None]

    def hetus(self) -> set[str]:
        """The identity codes of every customer (they cannot carry the run's tag)."""
        return {c for c in self.canaries() if HETU_RE.fullmatch(c)}

    def canaries(self) -> set[str]:
        """Every canary value of every customer (valid or not)."""
        out: set[str] = set()
        for c in self.customers.values():
            out |= set(c.canaries.values())
        for s in self.invalid:
            if isinstance(s.value, dict):
                out |= set(s.value.get("_canaries", ()))
        return out


def _envelope(kind: str, customer_id: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "schema_version": 1,
        "customer_id": customer_id,
        "producer": "kiosk",
        "occurred_at": "2026-11-20T10:00:00+02:00",
    }


class Generator:
    """Deterministic (seeded) generator of customers and their submissions."""

    def __init__(self, run: str, seed: int = 7) -> None:
        self.run = run
        self.rng = random.Random(seed)
        self._n = 0

    @property
    def tag(self) -> str:
        """Marks every canary of this run (and nothing else: customer numbers use another)."""
        return f"q{self.run[8:16]}q"

    def _canary(self, label: str) -> str:
        self._n += 1
        return f"{label}{self.tag}{self._n:07d}"

    def _hetu(self) -> str:
        born = date(1940, 1, 1) + timedelta(days=self.rng.randrange(0, 365 * 80))
        return build_hetu(born, self.rng.randrange(2, 900))

    def registration(self, customer_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        """A valid CustomerRegistered (~1 KB) and its canaries."""
        hetu = self._hetu()
        family = self._canary("Sukunimi")
        email = f"{self._canary('posti').lower()}@example.fi"
        street = f"{self.rng.choice(STREETS)} {self._canary('Katu')}"
        doc = _envelope("CustomerRegistered", customer_id) | {
            "demographics": {
                "name": {"given_names": self.rng.choice(GIVEN), "family_name": family},
                "hetu": hetu,
                "gender": self.rng.choice(("female", "male", "other", "undisclosed")),
                "mother_tongue": self.rng.choice(("fi", "sv", "en")),
            },
            "contact": {
                "address": {"street": street, "postal_code": "00170", "city": "Helsinki"},
                "phones": [f"040{self.rng.randrange(1000000, 9999999)}"],
                "emails": [email],
            },
            "preferred_language": self.rng.choice(("fi", "sv", "en")),
            "privacy_notice_version": "2026-11",
            "acquisition": {"channel": "web", "way": "hakukone, yleishammaslääkäri"},
            "billing_reference": f"LASKU-{self.rng.randrange(10**8)}",
            "source": "customer",
        }
        return doc, {"family": family, "email": email, "hetu": hetu, "street": street}

    def contact_change(self, customer_id: str) -> tuple[dict[str, Any], str]:
        """A valid ContactDetailsChanged with a new canary e-mail."""
        email = f"{self._canary('uusi').lower()}@example.fi"
        doc = _envelope("ContactDetailsChanged", customer_id) | {
            "contact": {"emails": [email], "phones": [f"+35850{self.rng.randrange(10**6, 10**7)}"]},
            "source": "customer",
        }
        return doc, email

    def visit(self, customer_id: str) -> dict[str, Any]:
        """A valid VisitRecorded."""
        return _envelope("VisitRecorded", customer_id) | {
            "visit_date": "2026-11-19",
            "treating_staff": [{"staff_id": "HML-7", "name": "Hammaslääkäri Seppo Esimerkki"}],
        }

    def feedback(self, customer_id: str) -> tuple[dict[str, Any], str]:
        """A valid FeedbackGiven with a canary text."""
        text = f"Toive: {self._canary('Palaute')}"
        return _envelope("FeedbackGiven", customer_id) | {"kind": "wish", "text": text}, text

    def dataset(self, total: int, *, invalid_share: float = 0.10) -> Dataset:
        """`total` submissions; `invalid_share` of them invalid, each kind in turn."""
        data = Dataset()
        n_invalid = int(total * invalid_share)
        n_valid = total - n_invalid
        # About four valid events per customer: registration, two contact changes, a visit or
        # feedback; the last contact change must win.
        while sum(c.events for c in data.customers.values()) < n_valid:
            cid = f"E{self.run[:8]}-{len(data.customers):06d}"
            doc, canaries = self.registration(cid)
            customer = Customer(cid, canaries, last_email=canaries["email"])
            data.customers[cid] = customer
            data.sent.append(Sent(cid.encode(), doc, doc["event_id"], cid))
            customer.events += 1
            for _ in range(2):
                if (
                    customer.events >= 4
                    or sum(c.events for c in data.customers.values()) >= n_valid
                ):
                    break
                change, email = self.contact_change(cid)
                customer.canaries[f"email{customer.events}"] = email
                customer.last_email = email
                data.sent.append(Sent(cid.encode(), change, change["event_id"], cid))
                customer.events += 1
        kinds = list(INVALID_KINDS)
        bad: list[Sent] = [self.invalid(kinds[i % len(kinds)]) for i in range(n_invalid)]
        # Interleave the invalid ones through the stream.
        step = max(len(data.sent) // max(n_invalid, 1), 1)
        for i, s in enumerate(bad):
            data.sent.insert(min(i * (step + 1), len(data.sent)), s)
        return data

    def invalid(self, kind: str) -> Sent:  # noqa: C901, PLR0911, PLR0912 - one branch per kind of bad input
        """One invalid submission of the given kind."""
        cid = f"X{self.run[:8]}-{self._n:07d}"
        doc, canaries = self.registration(cid)
        doc["_canaries"] = list(canaries.values())
        eid = doc["event_id"]

        def sealed(d: dict[str, Any], reason: str) -> Sent:
            return Sent(cid.encode(), d, eid, cid, reason)

        match kind:
            case "hetu_checksum":
                hetu = doc["demographics"]["hetu"]
                wrong = "0" if hetu[-1] != "0" else "1"
                doc["demographics"]["hetu"] = hetu[:-1] + wrong
                return sealed(doc, "hetu_checksum")
            case "hetu_century":
                hetu = doc["demographics"]["hetu"]
                doc["demographics"]["hetu"] = hetu[:6] + "G" + hetu[7:]
                return sealed(doc, "hetu_format")
            case "hetu_date":
                doc["demographics"]["hetu"] = "310285-123A"
                return sealed(doc, "hetu_date")
            case "email":
                doc["contact"]["emails"] = ["not-an-email"]
                return sealed(doc, "email_invalid")
            case "phone":
                doc["contact"]["phones"] = ["12"]
                return sealed(doc, "phone_invalid")
            case "unknown_type":
                doc["type"] = "CustomerTeleported"
                return sealed(doc, "unknown_type")
            case "unknown_schema_version":
                doc["schema_version"] = 9
                return sealed(doc, "unknown_schema_version")
            case "not_supported_yet":
                photo = _envelope("PhotoUploaded", cid) | {
                    "upload_id": str(uuid.uuid4()),
                    "view": "front",
                    "sha256": "ab" * 32,
                    "size_bytes": 123_456,
                }
                return Sent(cid.encode(), photo, photo["event_id"], cid, "not_supported_yet")
            case "not_sealed":
                plain = json.dumps(
                    {k: v for k, v in doc.items() if k in _ENVELOPE} | {"billing_reference": "X"}
                ).encode()
                return Sent(cid.encode(), plain, eid, cid, "not_sealed")
            case "not_json":
                return Sent(cid.encode(), b"{this is not json", None, None, "not_json")
            case "not_utf8":
                return Sent(cid.encode(), b'{"type": "\xff\xfe"}', None, None, "not_utf8")
            case "too_large":
                return Sent(cid.encode(), b"{" + b" " * 1_000_100 + b"}", None, None, "too_large")
            case "missing_customer_id":
                raw = dict(doc)
                raw.pop("customer_id")
                body = json.dumps({k: v for k, v in raw.items() if k in _ENVELOPE}).encode()
                return Sent(None, body, eid, None, "missing_customer_id")
            case _:
                raise ValueError(kind)


_ENVELOPE = frozenset(
    {
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "customer_id",
        "producer",
    }
)
INVALID_KINDS = (
    "hetu_checksum",
    "hetu_century",
    "hetu_date",
    "email",
    "phone",
    "unknown_type",
    "unknown_schema_version",
    "not_supported_yet",
    "not_sealed",
    "not_json",
    "not_utf8",
    "too_large",
    "missing_customer_id",
)
