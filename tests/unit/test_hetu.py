"""The personal identity code rules of DOMAIN.md §2.3 (requirements I2, I3, I4)."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.hetu import (
    CENTURY_OF_SIGN,
    CHECK_CHARACTERS,
    HetuError,
    HetuReason,
    HetuResult,
    build_hetu,
    check_character,
    is_hetu_shaped,
    validate_hetu,
)

TODAY = date(2026, 1, 15)


def reason_of(code: str) -> HetuReason:
    with pytest.raises(HetuError) as caught:
        validate_hetu(code, today=TODAY)
    return caught.value.reason


def with_check(body: str) -> str:
    """`DDMMYY` + sign + `ZZZ` completed with its correct check character."""
    return body + check_character(body[0:6], body[7:10])


# --- The DOMAIN.md test vectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "birth_date", "temporary"),
    [
        ("131052-308T", date(1952, 10, 13), False),
        ("010594Y9032", date(1994, 5, 1), True),
        ("020516C903K", date(2016, 5, 2), True),
    ],
)
def test_valid_vectors(code: str, birth_date: date, temporary: bool) -> None:
    result = validate_hetu(code, today=TODAY)
    assert result == HetuResult(code=code, birth_date=birth_date, temporary=temporary)
    assert result.code is code


def test_bad_checksum_vector() -> None:
    assert reason_of("131052-308U") is HetuReason.CHECKSUM


def test_separator_is_identity_bearing() -> None:
    dash = validate_hetu("100190-999P", today=TODAY)
    y = validate_hetu("100190Y999P", today=TODAY)
    assert dash.birth_date == y.birth_date == date(1990, 1, 10)
    assert dash.code == "100190-999P"
    assert y.code == "100190Y999P"
    assert dash != y


# --- Each failure has its own reason ----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "",
        "131052-308",
        "131052-308TT",
        "131052-308t",  # upper case only
        "131052/308T",
        "131052T308T",  # T is not a century sign
        "131052Z308T",
        "131052-308G",  # G, I, O, Q, Z are not check characters
        "131052-308I",
        "131052-308Z",
        "131052-308T\n",  # `$` alone would accept a trailing newline
        " 131052-308T",
        "131052-308T ",
        "١٣١٠٥٢-308T",  # Arabic-Indic digits are digits to `\d` without re.ASCII
        "131052-3O8T",
    ],
)
def test_format(code: str) -> None:
    assert reason_of(code) is HetuReason.FORMAT


def test_non_string_is_a_format_error() -> None:
    with pytest.raises(HetuError) as caught:
        validate_hetu(131052308, today=TODAY)  # type: ignore[arg-type]
    assert caught.value.reason is HetuReason.FORMAT


@pytest.mark.parametrize(
    "body",
    [
        "000190-123",  # day 0
        "320190-123",  # day 32
        "310490-123",  # 31 April
        "101390-123",  # month 13
        "290200-123",  # 1900 was not a leap year
        "290201A123",  # 2001 was not a leap year
        "010130A123",  # 2030: after today
        "010199F123",  # 2099: after today
    ],
)
def test_date(body: str) -> None:
    assert reason_of(with_check(body)) is HetuReason.DATE


@pytest.mark.parametrize(
    ("body", "birth_date"),
    [
        ("290200A123", date(2000, 2, 29)),  # 2000 was a leap year
        ("290296-123", date(1996, 2, 29)),
        ("290296U123", date(1996, 2, 29)),
        ("311299+123", date(1899, 12, 31)),
        ("010100+123", date(1800, 1, 1)),
        ("150126A123", TODAY),
    ],
)
def test_date_in_the_century_of_the_sign(body: str, birth_date: date) -> None:
    assert validate_hetu(with_check(body), today=TODAY).birth_date == birth_date


@pytest.mark.parametrize("number", ["000", "001"])
def test_individual_number_below_002(number: str) -> None:
    assert reason_of(with_check(f"131052-{number}")) is HetuReason.INDIVIDUAL_NUMBER


@pytest.mark.parametrize(("number", "temporary"), [(2, False), (899, False), (900, True)])
def test_temporary_from_900(number: int, temporary: bool) -> None:
    code = build_hetu(date(1952, 10, 13), number)
    assert validate_hetu(code, today=TODAY).temporary is temporary


def test_no_sex_is_derived() -> None:
    fields = {f.name for f in dataclasses.fields(HetuResult)}
    assert fields == {"code", "birth_date", "temporary"}


def test_no_code_in_repr_or_error_message() -> None:
    code = "131052-308T"
    assert code not in repr(validate_hetu(code, today=TODAY))
    assert "131052" not in repr(validate_hetu(code, today=TODAY))
    with pytest.raises(HetuError) as caught:
        validate_hetu("131052-308U", today=TODAY)
    assert "131052" not in str(caught.value)
    assert "131052" not in repr(caught.value)


def test_default_today_refuses_far_future() -> None:
    with pytest.raises(HetuError) as caught:
        validate_hetu(with_check("010199F123"))
    assert caught.value.reason is HetuReason.DATE


def test_build_hetu() -> None:
    assert build_hetu(date(1952, 10, 13), 308) == "131052-308T"
    assert build_hetu(date(1994, 5, 1), 903, "Y") == "010594Y9032"
    assert build_hetu(date(2016, 5, 2), 903, "C") == "020516C903K"
    with pytest.raises(ValueError, match="century"):
        build_hetu(date(1994, 5, 1), 903, "A")
    with pytest.raises(ValueError, match="range"):
        build_hetu(date(1994, 5, 1), 1)


def test_is_hetu_shaped() -> None:
    assert is_hetu_shaped("131052-308U")
    assert not is_hetu_shaped("C-131052")


# --- Properties -------------------------------------------------------------------------------

SIGNS_BY_CENTURY = {
    century: sorted(s for s, c in CENTURY_OF_SIGN.items() if c == century)
    for century in set(CENTURY_OF_SIGN.values())
}


@st.composite
def valid_parts(draw: st.DrawFn) -> tuple[date, int, str]:
    birth_date = draw(st.dates(min_value=date(1800, 1, 1), max_value=TODAY))
    sign = draw(st.sampled_from(SIGNS_BY_CENTURY[birth_date.year - birth_date.year % 100]))
    number = draw(st.integers(min_value=2, max_value=999))
    return birth_date, number, sign


@given(valid_parts())
def test_any_valid_code_validates_and_round_trips(parts: tuple[date, int, str]) -> None:
    birth_date, number, sign = parts
    code = build_hetu(birth_date, number, sign)
    # Built independently of build_hetu, from the definition.
    digits = birth_date.strftime("%d%m") + f"{birth_date.year % 100:02d}" + f"{number:03d}"
    assert code == digits[:6] + sign + digits[6:] + CHECK_CHARACTERS[int(digits) % 31]
    result = validate_hetu(code, today=TODAY)
    assert result.birth_date == birth_date
    assert result.temporary is (number >= 900)
    assert result.code == code


@given(valid_parts(), st.sampled_from(CHECK_CHARACTERS))
def test_changing_the_check_character_fails(parts: tuple[date, int, str], other: str) -> None:
    code = build_hetu(*parts)
    if other == code[-1]:
        other = CHECK_CHARACTERS[(CHECK_CHARACTERS.index(other) + 1) % len(CHECK_CHARACTERS)]
    with pytest.raises(HetuError) as caught:
        validate_hetu(code[:-1] + other, today=TODAY)
    assert caught.value.reason is HetuReason.CHECKSUM


@given(valid_parts(), st.characters(codec="utf-8"))
def test_any_other_final_character_fails(parts: tuple[date, int, str], other: str) -> None:
    code = build_hetu(*parts)
    if other != code[-1]:
        with pytest.raises(HetuError):
            validate_hetu(code[:-1] + other, today=TODAY)


@given(valid_parts(), st.data())
def test_other_sign_of_the_same_century_is_another_valid_identity(
    parts: tuple[date, int, str], data: st.DataObject
) -> None:
    birth_date, number, sign = parts
    others = [s for s in SIGNS_BY_CENTURY[birth_date.year - birth_date.year % 100] if s != sign]
    if not others:  # the 1800s have only `+`
        return
    other = data.draw(st.sampled_from(others))
    first = validate_hetu(build_hetu(birth_date, number, sign), today=TODAY)
    second = validate_hetu(build_hetu(birth_date, number, other), today=TODAY)
    assert first.code[:6] + first.code[7:] == second.code[:6] + second.code[7:]
    assert first.code != second.code
    assert first != second


@given(st.text(max_size=20))
def test_arbitrary_text_returns_or_raises_hetu_error(text: str) -> None:
    try:
        result = validate_hetu(text, today=TODAY)
    except HetuError as exc:
        reason: HetuReason | None = exc.reason
    else:
        reason = None
        assert result.code == text
    assert reason is None or reason in HetuReason
