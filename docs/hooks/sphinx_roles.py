"""MkDocs hook: the docstrings' Sphinx cross-reference roles shown as plain code.

The docstrings are read by Sphinx-minded tools and by mkdocstrings alike, and say
``:func:`~napari_sparseseg.io.volumes.read_image``` where they refer to another object. Markdown
renders that as ``:func:`` followed by code; this hook drops the role and, as Sphinx does for
a leading ``~``, keeps only the last part of the dotted name.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj|py:\w+):<code>(~?)([^<]*)</code>")


def _plain(m: re.Match) -> str:
    tilde, target = m.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, page, config, files) -> str:
    """Replace ``:role:<code>target</code>`` with ``<code>target</code>``."""
    return _ROLE.sub(_plain, html)
