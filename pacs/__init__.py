"""Dalat PACS: the composition root (CLI, settings, ``serve``).

The only package that imports all the others.
"""

__version__ = "0.1.0"
