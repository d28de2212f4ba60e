"""Query values → conditions (PS3.4 C.2.2.2), pure."""

import pytest

from storage import BY_KEYWORD, InvalidQuery
from storage.matching import AnyOf, Exact, Range, Universal, Wildcard, parse_condition


def parse(keyword: str, value: str | None) -> object:
    return parse_condition(BY_KEYWORD[keyword], value)


@pytest.mark.parametrize("value", [None, "", "*", "  "])
def test_empty_and_star_are_universal(value: str | None) -> None:
    assert parse("PatientName", value) == Universal()


def test_single_value_and_wildcards() -> None:
    assert parse("PatientID", "12345") == Exact("12345")
    assert parse("PatientName", "Nguy*") == Wildcard("Nguy*")
    assert parse("AccessionNumber", "A?C") == Wildcard("A?C")


def test_uid_lists() -> None:
    assert parse("StudyInstanceUID", "1.2.3\\1.2.4") == AnyOf((Exact("1.2.3"), Exact("1.2.4")))


@pytest.mark.parametrize("value", ["1.2.*", "1.2.a", "../x"])
def test_uids_refuse_wildcards_and_junk(value: str) -> None:
    with pytest.raises(InvalidQuery):
        parse("SOPInstanceUID", value)


def test_date_ranges() -> None:
    assert parse("StudyDate", "20260101-20261231") == Range("20260101", "20261231")
    assert parse("StudyDate", "-20261231") == Range(None, "20261231")
    assert parse("StudyDate", "20260101-") == Range("20260101", None)
    assert parse("StudyDate", "2026.01.01") == Exact("20260101")


@pytest.mark.parametrize("value", ["2026", "20261301x", "20261231-20260101", "1-2-3"])
def test_bad_dates_are_refused(value: str) -> None:
    with pytest.raises(InvalidQuery):
        parse("StudyDate", value)


def test_times_pad_to_whole_units() -> None:
    assert parse("StudyTime", "10-11") == Range("100000", "115959.999999")
    assert parse("StudyTime", "1030") == Range("103000", "103059.999999")
    assert parse("StudyTime", "103015") == Exact("103015")


def test_numbers() -> None:
    assert parse("SeriesNumber", "3") == Exact(3)
    with pytest.raises(InvalidQuery):
        parse("SeriesNumber", "three")
    assert parse("SeriesNumber", str(-(2**63))) == Exact(-(2**63))
    with pytest.raises(InvalidQuery, match="out of range"):  # the index's integers are 64-bit
        parse("SeriesNumber", str(2**63))
