"""Family ``truncation``: the sample cut short.

The sample is cut at every element boundary (File Meta Information, dataset, sequences,
items, delimiters, pixel data), inside every element header and inside every value; the
offsets come from walking the sample's elements (tests/reliability/corpus/reading.py).
"""

from tests.reliability.corpus.encoding import UNDEFINED
from tests.reliability.corpus.reading import Span, find, meta_end, meta_values, walk
from tests.reliability.corpus.sample import Dimse, Expect, Item, Maker, dimse_of


def truncations(salt: str) -> list[Item]:
    """The sample cut at each element boundary, inside each header and inside each value."""
    make = Maker(salt, "truncation")
    placeholder = make.uid("placeholder")
    whole = make.file("placeholder")
    end = meta_end(whole)
    assert end is not None
    cuts: dict[int, tuple[str, Span]] = {}
    for span in walk(whole, 132, len(whole)):
        cuts.setdefault(span.offset, ("boundary", span))
        cuts.setdefault(span.offset + span.header // 2 + 1, ("mid-header", span))
        if span.length != UNDEFINED and span.length >= 2:
            cuts.setdefault(span.offset + span.header + span.length // 2, ("mid-value", span))
    cuts.setdefault(len(whole) - 1, ("last byte missing", find(whole, 0x7FE00010)))
    items = []
    for cut, (kind, span) in sorted(cuts.items()):
        name = f"{cut:05d} {kind} {span.label} depth {span.depth}"
        uid = make.uid(name)
        data = whole[:cut].replace(placeholder.encode(), uid.encode())
        clean = kind == "boundary" and span.depth == 0 and cut >= end
        expect: Expect = "either" if clean else "refused"
        dimse = dimse_of(data) if cut >= end else None
        if dimse is None and cut >= end:
            values = meta_values(whole)
            dimse = Dimse(values[0x00020002], uid, values[0x00020010], data[end:])
        items.append(make.item(name, data, expect, dimse=dimse))
    return items
