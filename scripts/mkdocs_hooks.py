"""MkDocs hooks of the documentation site (named in mkdocs.yml's ``hooks:``).

The docstrings name other objects with Sphinx roles (``:func:`x```, ``:class:`x```, ``:mod:`x```), which
Markdown renders as the role's text before a code span. The role is dropped from the rendered page, so
``:func:`interp.stats.bootstrap``` reads as the code span alone.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|const):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    """The page's HTML without Sphinx role prefixes before code spans."""
    return ROLE.sub("", html)
