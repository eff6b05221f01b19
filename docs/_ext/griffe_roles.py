"""Griffe extension for the docs build: Sphinx-style roles in docstrings become mkdocstrings cross-references.

gridattn's docstrings are Google style but refer to other objects the Sphinx way (``:func:`attention```,
``:class:`~gridattn.GridAttention```). Markdown shows those roles literally, so before rendering every role is
turned into an autorefs link, ``[`attention`][gridattn.functional.backends.attention]``, resolved in the scope
of the object whose docstring it is. Targets outside gridattn (``torch.…``) become plain code.
A section titled ``Example:`` is read as ``Examples:`` (griffe would otherwise make it an admonition and show
its ``>>>`` lines as quoted text instead of code).
Loaded by ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([\w.]+)(\(\))?`")


def _target(obj: griffe.Object, name: str) -> str | None:
    """Full path of ``name`` as seen from ``obj``'s docstring, or None outside gridattn / unresolvable."""
    if name.startswith("gridattn.") or name == "gridattn":
        return name
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:  # the object itself (methods, attributes), then its parents
        try:
            base = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        path = f"{base}.{rest}" if rest else base
        return path if path.startswith("gridattn") else None
    return None


def _convert(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match) -> str:
        tilde, name, call = match.groups()
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + (call or "")
        target = _target(obj, name)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    return _EXAMPLE_TITLE.sub(r"\1Examples:", _ROLE.sub(link, text))


class SphinxRolesToAutorefs(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _convert(obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
