"""A corpus of malformed DICOM, made here from our own synthetic sample, never downloaded.

:func:`corpus` builds the items of eight families from one sample (a CT slice of
``tests/factories.py`` with two sequences added, one of undefined and one of defined
length; sample.py), each item a name, its bytes and its family. Each family has a module
of its own, whose docstring says what its items are:

* ``truncation``: truncations.py, the sample cut at every element boundary, inside every
  element header and inside every value.
* ``vr-length``: wrong_vrs_and_lengths.py, wrong VRs and wrong lengths.
* ``nesting``: deep_nesting.py, sequences of undefined length nested up to 10,000 deep.
* ``huge-length``: huge_lengths.py, declared lengths and image sizes no file could hold.
* ``transfer-syntax``: transfer_syntaxes.py, unknown, private and malformed Transfer
  Syntax UIDs, and File Meta Information that lies, is missing or is broken.
* ``preamble``: polyglot_preambles.py, executable and archive headers in the preamble.
* ``bomb``: bombs.py, a deflate bomb, and compressed or encapsulated pixel data that
  declares far more than it holds or whose item structure is broken.
* ``uid``: bad_uids.py, UIDs no archive should take, and SOP classes nobody knows.

They share encoding.py (elements encoded by hand: the corpus needs what encoders refuse to
write) and reading.py (where each element of a file is, found by walking its bytes).

Every item has a fresh SOP Instance UID derived from the corpus' `salt` and its name (all
of one length, so that a UID changes no offset), so that the same corpus can be sent over
several channels to one archive without one copy answering for another. The corpus is
deterministic: the same salt gives the same bytes.

Each item says what it may come to (``expect``): ``refused`` where storing it would keep a
broken file, ``stored`` where it is a valid instance in disguise (a polyglot preamble),
``either`` where a tolerant reader may keep it as received. It also gives its C-STORE form
(``dimse``: what a modality announces and the dataset bytes it sends), or None where the
fault lives in what C-STORE does not carry (the preamble, the File Meta Information).
"""

from tests.reliability.corpus.bad_uids import bad_uids
from tests.reliability.corpus.bombs import bombs
from tests.reliability.corpus.deep_nesting import deep_nesting
from tests.reliability.corpus.huge_lengths import huge_lengths
from tests.reliability.corpus.polyglot_preambles import polyglot_preambles
from tests.reliability.corpus.reading import meta_end
from tests.reliability.corpus.sample import Item, Maker
from tests.reliability.corpus.transfer_syntaxes import transfer_syntaxes
from tests.reliability.corpus.truncations import truncations
from tests.reliability.corpus.wrong_vrs_and_lengths import wrong_vrs_and_lengths

__all__ = ["FAMILIES", "Item", "Maker", "corpus", "meta_end"]

FAMILIES = (
    "truncation",
    "vr-length",
    "nesting",
    "huge-length",
    "transfer-syntax",
    "preamble",
    "bomb",
    "uid",
)

_BUILDERS = {
    "truncation": truncations,
    "vr-length": wrong_vrs_and_lengths,
    "nesting": deep_nesting,
    "huge-length": huge_lengths,
    "transfer-syntax": transfer_syntaxes,
    "preamble": polyglot_preambles,
    "bomb": bombs,
    "uid": bad_uids,
}


def corpus(salt: str, families: tuple[str, ...] = FAMILIES) -> list[Item]:
    """Every item of `families`, with UIDs of their own for `salt`."""
    return [item for family in families for item in _BUILDERS[family](salt)]
