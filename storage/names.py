"""Person-name normalisation for matching (pure functions).

Vietnamese names carry diacritics (``Nguyễn Thị Hằng``); staff at another hospital may type
them without (``NGUYEN THI HANG``). The index keeps the name as received plus two keys:
``upper`` (case folded, diacritics kept) and ``folded`` (case and diacritics folded).
"""

import unicodedata

# Letters that are not a base letter plus a combining mark, so NFD leaves them alone.
_EXTRA_FOLDS = str.maketrans({"đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ø": "o", "Ø": "O"})


def upper_key(text: str) -> str:
    """Case-insensitive key: NFC, upper case, diacritics kept."""
    return unicodedata.normalize("NFC", text).upper()


def folded_key(text: str) -> str:
    """Case- and diacritic-insensitive key: ``"Nguyễn^Thị Hằng"`` → ``"NGUYEN^THI HANG"``."""
    decomposed = unicodedata.normalize("NFD", text.translate(_EXTRA_FOLDS))
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", stripped).upper()
