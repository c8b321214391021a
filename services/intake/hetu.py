"""The Finnish personal identity code (henkilötunnus, HETU): validation without side effects.

A code is `DDMMYY C ZZZ Q`: the birth date, a century sign, an individual number and a check
character (DOMAIN.md §2.3). The century signs are `+` (1800s), `-` `Y` `X` `W` `V` `U` (1900s)
and `A`-`F` (2000s), the last ones in force since 1.1.2023. The check character is `DDMMYYZZZ`
mod 31, so it ignores the sign: `100190-999P` and `100190Y999P` are both valid and are two
*different* people. The code is therefore kept and compared exactly as given, all 11 characters;
nothing here ever rewrites a sign.

Sex is never derived from the individual number: codes are to become gender-neutral and a
person's code can change. `HetuResult` deliberately exposes only the birth date and the
temporary flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Final

HETU_PATTERN: Final = re.compile(r"^\d{6}[-+A-FU-Y]\d{3}[0-9A-FHJ-NPR-Y]$", re.ASCII)
"""The shape of a code (upper case only). Matched with `fullmatch`: `$` alone would let a
trailing newline through, and without `re.ASCII` `\\d` would accept any Unicode digit."""

CHECK_CHARACTERS: Final = "0123456789ABCDEFHJKLMNPRSTUVWXY"
"""The mod-31 alphabet of the check character (no G, I, O, Q, Z)."""

CENTURY_OF_SIGN: Final[dict[str, int]] = {
    "+": 1800,
    **dict.fromkeys("-YXWVU", 1900),
    **dict.fromkeys("ABCDEF", 2000),
}
"""The first year of the century each sign stands for."""

FIRST_INDIVIDUAL_NUMBER: Final = 2
"""Individual numbers 000 and 001 are never issued."""
FIRST_TEMPORARY_NUMBER: Final = 900
"""Individual numbers 900-999 are temporary or test codes, not in the population register."""


class HetuReason(StrEnum):
    """Why a code is not a valid personal identity code (machine-readable, no personal data)."""

    FORMAT = "hetu_format"
    DATE = "hetu_date"
    INDIVIDUAL_NUMBER = "hetu_individual_number"
    CHECKSUM = "hetu_checksum"


class HetuError(ValueError):
    """A code failed validation; `reason` says which check. The message never holds the code."""

    def __init__(self, reason: HetuReason) -> None:
        super().__init__(f"invalid personal identity code: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HetuResult:
    """A validated code.

    Attributes:
        code: The code exactly as given; its century sign is part of the identity.
        birth_date: The birth date the code encodes.
        temporary: Whether the individual number is 900-999 (a temporary or test code).
    """

    code: str = field(repr=False)
    birth_date: date = field(repr=False)
    temporary: bool


def check_character(date_part: str, individual_number: str) -> str:
    """The check character of `DDMMYY` + `ZZZ`: their 9 digits as a number, mod 31.

    Raises:
        ValueError: The parts are not 6 and 3 ASCII digits.
    """
    digits = date_part + individual_number
    if len(date_part) != 6 or len(individual_number) != 3 or not _is_ascii_digits(digits):
        raise ValueError("expected 6 + 3 ASCII digits")
    return CHECK_CHARACTERS[int(digits) % 31]


def validate_hetu(code: str, *, today: date | None = None) -> HetuResult:
    """Validate a personal identity code and return what it encodes.

    Checks, in order: the shape (`hetu_format`); a real calendar date in the century of the
    sign, not after today (`hetu_date`); an individual number of at least 002
    (`hetu_individual_number`); the check character (`hetu_checksum`). 900-999 is valid but
    flagged `temporary`.

    Args:
        code: The code as received. It is not stripped, upper-cased or otherwise rewritten.
        today: The date a birth date may not be after; defaults to today in UTC (with a day
            of slack for time zones).

    Raises:
        HetuError: The code is not valid; `reason` is the first failed check.
    """
    if not isinstance(code, str) or HETU_PATTERN.fullmatch(code) is None:
        raise HetuError(HetuReason.FORMAT)
    day, month, year = int(code[0:2]), int(code[2:4]), int(code[4:6])
    try:
        birth_date = date(CENTURY_OF_SIGN[code[6]] + year, month, day)
    except ValueError:
        raise HetuError(HetuReason.DATE) from None
    latest = today if today is not None else datetime.now(UTC).date() + timedelta(days=1)
    if birth_date > latest:
        raise HetuError(HetuReason.DATE)
    individual = int(code[7:10])
    if individual < FIRST_INDIVIDUAL_NUMBER:
        raise HetuError(HetuReason.INDIVIDUAL_NUMBER)
    if check_character(code[0:6], code[7:10]) != code[10]:
        raise HetuError(HetuReason.CHECKSUM)
    return HetuResult(
        code=code, birth_date=birth_date, temporary=individual >= FIRST_TEMPORARY_NUMBER
    )


def is_hetu_shaped(value: str) -> bool:
    """Whether a string has the shape of a personal identity code (checksum not checked).

    Used to refuse identity codes where only opaque identifiers belong, such as a customer
    number or a Kafka key.
    """
    return HETU_PATTERN.fullmatch(value) is not None


def build_hetu(birth_date: date, individual_number: int, sign: str | None = None) -> str:
    """Compose a valid code from its parts, computing the check character.

    Meant for tests and fixtures (temporary numbers 900-999 are not real people).

    Args:
        birth_date: A date from 1800-01-01 to 2099-12-31.
        individual_number: 2-999.
        sign: A century sign matching the birth date's century; defaults to `+`, `-` or `A`.

    Raises:
        ValueError: A part is out of range or the sign does not match the century.
    """
    century = birth_date.year - birth_date.year % 100
    if sign is None:
        sign = {1800: "+", 1900: "-", 2000: "A"}.get(century, "")
    if CENTURY_OF_SIGN.get(sign) != century:
        raise ValueError("century sign does not match the birth date")
    if not FIRST_INDIVIDUAL_NUMBER <= individual_number <= 999:
        raise ValueError("individual number out of range")
    date_part = birth_date.strftime("%d%m") + f"{birth_date.year % 100:02d}"
    number = f"{individual_number:03d}"
    return date_part + sign + number + check_character(date_part, number)


def _is_ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()
