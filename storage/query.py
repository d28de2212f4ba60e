"""Find patients, studies, series and instances in the index (C-FIND and QIDO-RS share it).

A :class:`Query` names a level and conditions on attributes at or above it; :func:`find`
turns it into one SQL statement over the level's table joined to its parents, and returns a
:class:`Match` per row with every attribute the index holds for that row. Attributes the
index does not keep as columns can be read from the stored header bytes of a representative
instance (:func:`header_datasets`), never from the blob store.
"""

import io
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Connection, Select, and_, exists, func, or_, select, true
from sqlalchemy.orm import aliased

from storage.attributes import ATTRIBUTES, BY_KEYWORD, Attribute, Kind, Level
from storage.errors import InvalidQuery
from storage.index.tables import Base, Instance, Patient, Series, Study
from storage.matching import (
    AnyOf,
    Condition,
    Exact,
    Range,
    Universal,
    Wildcard,
    name_key,
    parse_condition,
)
from storage.scope import EVERYTHING, Scope, visible_patients, visible_studies

TABLES: dict[Level, type[Base]] = {
    Level.PATIENT: Patient,
    Level.STUDY: Study,
    Level.SERIES: Series,
    Level.IMAGE: Instance,
}


@dataclass(frozen=True, slots=True)
class Query:
    level: Level
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    limit: int | None = None
    offset: int = 0
    scope: Scope = EVERYTHING
    """Whose query it is: only the studies they may see match (storage.scope)."""


@dataclass(frozen=True, slots=True)
class Match:
    level: Level
    pk: int
    values: dict[str, Any]
    """DICOM keyword → value, for every attribute the index keeps at or above the level."""


def build_query(
    level: Level,
    keys: Mapping[str, str | None],
    *,
    limit: int | None = None,
    offset: int = 0,
    scope: Scope = EVERYTHING,
) -> Query:
    """A query from raw key values (keyword → value as sent).

    Keywords the index does not know are left to the caller; keys of levels below `level`
    may only be empty (return keys), except ``Modality`` at study level, read as
    ``ModalitiesInStudy`` as many viewers mean it.

    Raises:
        InvalidQuery: a value cannot be matched, or a lower level is matched on.
    """
    conditions: dict[str, Condition] = {}
    for keyword, raw in keys.items():
        if level is Level.STUDY and keyword == "Modality":
            keyword = "ModalitiesInStudy"
        attribute = BY_KEYWORD.get(keyword)
        if attribute is None:
            continue
        condition = parse_condition(attribute, raw)
        if isinstance(condition, Universal):
            continue
        if attribute.level.depth > level.depth:
            raise InvalidQuery(
                f"{keyword} is a {attribute.level.value}-level key; it cannot be matched "
                f"in a {level.value}-level query"
            )
        conditions[keyword] = _merge(conditions.get(keyword), condition)
    return Query(level, conditions, limit, offset, scope)


def _merge(previous: Condition | None, condition: Condition) -> Condition:
    if previous is None:
        return condition
    raise InvalidQuery("a key is given twice")


def find(conn: Connection, query: Query, *, fold_names: bool) -> list[Match]:
    level_table = TABLES[query.level]
    pk = level_table.__table__.c.id
    statement = _select(query.level).add_columns(pk.label("_pk"))
    patients = query.level is Level.PATIENT
    statement = _narrowed(statement, query, fold_names=fold_names, patients=patients)
    statement = statement.order_by(pk)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    if query.offset:
        statement = statement.offset(query.offset)
    keywords = [a.keyword for a in _returned(query.level)]
    # Rows hold the returned attributes in `keywords` order, then the key: zipped by
    # position, which costs a tenth of looking each one up by name for 800 matches.
    return [
        Match(query.level, row[-1], dict(zip(keywords, row[:-1], strict=True)))
        for row in conn.execute(statement)
    ]


def _narrowed(
    statement: Select[*tuple[Any, ...]], query: Query, *, fold_names: bool, patients: bool = False
) -> Select[*tuple[Any, ...]]:
    """`statement` kept to what `query` matches, within its scope: the studies it may see
    (for rows of ``patients``: those with one such study; rows of instances keep to the
    visible studies themselves, whatever the query's level)."""
    if not query.scope.everything:
        visible = visible_patients if patients else visible_studies
        statement = statement.where(visible(query.scope))
    for keyword, condition in query.conditions.items():
        statement = statement.where(_clause(BY_KEYWORD[keyword], condition, fold_names=fold_names))
    return statement


@cache
def _returned(level: Level) -> list[Attribute]:
    return [a for a in ATTRIBUTES if a.level.depth <= level.depth]


@cache
def _select(level: Level) -> Select[*tuple[Any, ...]]:
    """The level's columns and joins; built once (a Select is immutable: where() copies)."""
    columns = [getattr(TABLES[a.level], a.column).label(a.keyword) for a in _returned(level)]
    statement = select(*columns).select_from(TABLES[level])
    if level.depth >= Level.IMAGE.depth:
        statement = statement.join(Series, Series.id == Instance.series_pk)
    if level.depth >= Level.SERIES.depth:
        statement = statement.join(Study, Study.id == Series.study_pk)
    if level.depth >= Level.STUDY.depth:
        statement = statement.join(Patient, Patient.id == Study.patient_pk)
    return statement


def _clause(attribute: Attribute, condition: Condition, *, fold_names: bool) -> ColumnElement[bool]:
    table = TABLES[attribute.level]
    if attribute.kind is Kind.MODALITIES:
        # Any series of the study: an alias, else a series- or image-level query's own
        # Series row is correlated into the subquery, which is then left without a FROM.
        any_series = aliased(Series)
        inner = _value_clause(any_series.modality, attribute, condition, fold_names=False)
        return exists(select(1).where(any_series.study_pk == Study.id, inner))
    if attribute.kind is Kind.NAME:
        suffix = "_folded" if fold_names else "_upper"
        column = getattr(table, attribute.column + suffix)
        return _value_clause(column, attribute, condition, fold_names=fold_names)
    column = getattr(table, attribute.column)
    if attribute.multi and isinstance(condition, Exact | Wildcard | AnyOf):
        return _multi_value_clause(column, condition)
    return _value_clause(column, attribute, condition, fold_names=fold_names)


def _value_clause(
    column: Any, attribute: Attribute, condition: Condition, *, fold_names: bool
) -> ColumnElement[bool]:
    is_name = attribute.kind is Kind.NAME
    match condition:
        case Universal():
            return true()
        case Exact(value):
            if is_name:
                value = name_key(str(value), fold=fold_names)
            return column == value  # type: ignore[no-any-return]
        case Wildcard(pattern):
            if is_name:
                pattern = name_key(pattern, fold=fold_names)
            return column.like(_like(pattern), escape="\\")  # type: ignore[no-any-return]
        case Range(low, high):
            parts = [column.is_not(None)]
            if low is not None:
                parts.append(column >= low)
            if high is not None:
                parts.append(column <= high)
            return and_(*parts)
        case AnyOf(options):
            exact = [o.value for o in options if isinstance(o, Exact)]
            if len(exact) == len(options) and not is_name:
                return column.in_(exact)  # type: ignore[no-any-return]
            return or_(
                *(_value_clause(column, attribute, o, fold_names=fold_names) for o in options)
            )
    raise AssertionError(condition)


def _multi_value_clause(column: Any, condition: Exact | Wildcard | AnyOf) -> ColumnElement[bool]:
    """A multi-valued attribute (stored joined by backslashes) matches if any value matches."""
    separator = "\\\\"  # a literal backslash in a LIKE pattern whose escape is a backslash
    options = condition.options if isinstance(condition, AnyOf) else (condition,)
    clauses = []
    for option in options:
        core = _like(option.pattern) if isinstance(option, Wildcard) else _escape(str(option.value))
        for pattern in (
            core,
            f"{core}{separator}%",
            f"%{separator}{core}",
            f"%{separator}{core}{separator}%",
        ):
            clauses.append(column.like(pattern, escape="\\"))
    return or_(*clauses)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(pattern: str) -> str:
    """DICOM wildcards to a LIKE pattern (escape character ``\\``)."""
    return _escape(pattern).replace("*", "%").replace("?", "_")


def stored_instances_select(*more: Any) -> Select[*tuple[Any, ...]]:
    """Instances with where their bytes are (and `more` columns), joined to their series,
    study and patient."""
    return (
        select(
            Instance.sop_class_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Study.study_instance_uid,
            Instance.blob_key,
            Instance.size,
            Instance.sha256,
            *more,
        )
        .select_from(Instance)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .join(Patient, Patient.id == Study.patient_pk)
        .order_by(Instance.id)
    )


def find_instances(conn: Connection, query: Query, *, fold_names: bool) -> list[dict[str, Any]]:
    """Every instance under the rows `query` matches, whatever its level."""
    statement = _narrowed(stored_instances_select(), query, fold_names=fold_names)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return [dict(row._mapping) for row in conn.execute(statement)]


def instance_details(conn: Connection, query: Query, *, fold_names: bool) -> list[dict[str, Any]]:
    """For DICOMweb: every instance under what `query` matches, with its series, stored
    header and where its pixel data lies in the blob; by series and instance number."""
    statement = (
        stored_instances_select(
            Series.series_instance_uid,
            Instance.header,
            Instance.pixel_data_offset,
            Instance.pixel_data_length,
            Instance.number_of_frames,
        )
        .order_by(None)
        .order_by(Series.id, Instance.instance_number, Instance.id)
    )
    statement = _narrowed(statement, query, fold_names=fold_names)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return [dict(row._mapping) for row in conn.execute(statement)]


def header_datasets(conn: Connection, level: Level, pks: Iterable[int]) -> dict[int, Dataset]:
    """For each row of `level`, the stored header of a representative instance (the first).

    Used to return attributes that the index does not keep as columns. Rows whose header was
    too large to keep are missing from the result.
    """
    pks = list(pks)
    if not pks:
        return {}
    group: Any
    if level is Level.IMAGE:
        statement = select(Instance.id.label("owner"), Instance.header).where(Instance.id.in_(pks))
    else:
        group = {
            Level.SERIES: Series.id,
            Level.STUDY: Study.id,
            Level.PATIENT: Study.patient_pk,
        }[level]
        first = (
            select(group.label("owner"), func.min(Instance.id).label("first"))
            .select_from(Instance)
            .join(Series, Series.id == Instance.series_pk)
            .join(Study, Study.id == Series.study_pk)
            .where(group.in_(pks))
            .group_by(group)
            .subquery()
        )
        statement = select(first.c.owner, Instance.header).join(
            Instance, Instance.id == first.c.first
        )
    result: dict[int, Dataset] = {}
    for owner, header in conn.execute(statement):
        if header is not None:
            result[owner] = parse_header_bytes(header)
    return result


def parse_header_bytes(header: bytes) -> Dataset:
    """The dataset (without pixel data) from an instance's stored header bytes."""
    raw = zlib.decompress(header)
    return dcmread(io.BytesIO(b"\0" * 128 + raw), stop_before_pixels=True)
