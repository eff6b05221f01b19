"""The documentation site covers the whole public API, and its navigation points at real pages.

Fast checks only (no ``mkdocs build``; CI builds the site separately with ``mkdocs build --strict``):

* every public symbol appears in the API reference (``docs/reference/*.md``). Public symbols are the names in
  ``gridattn.__all__`` and, for every module under ``gridattn/`` whose dotted path has no part starting with
  ``_``, the names in its ``__all__`` or, without one, the non-underscore names it defines at top level.
  A reference page documents a symbol through a mkdocstrings directive ``::: path``: an object directive
  documents that object; a module directive documents the module and its ``members:`` list, or, without one,
  its ``__all__`` (or defined public names), and nothing when ``members: false``. Names are compared by where
  they are defined, so ``gridattn.GridAttention``, ``gridattn.layers.GridAttention`` and
  ``gridattn.layers.grid_attention.GridAttention`` are one symbol, documented by any of those paths.
* every directive resolves to a module or a module-level name (read from the sources, not imported, so modules
  of optional integrations need not have their library installed);
* every page named in ``mkdocs.yml``'s ``nav`` exists, and every reference page is in the nav.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import gridattn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
MKDOCS_YML = ROOT / "mkdocs.yml"

Symbol = tuple[str, str]  # (defining module, name); ("<module>", dotted path) for a module itself


# ---------------------------------------------------------------------------------------------------------
# where a name is defined


@cache
def _source(module_name: str) -> Path | None:
    """The source file of a gridattn module (found without importing it: optional dependencies need not be
    installed), or None when there is no such module."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    return None if spec is None or spec.origin is None else Path(spec.origin)


def _is_module(path: str) -> bool:
    return _source(path) is not None


@cache
def _top_level(module_name: str) -> tuple[dict[str, Symbol], list[str], list[str] | None]:
    """For one module: name -> symbol of every top-level import, the names it defines itself (in order), and
    its ``__all__`` (None without one)."""
    source = _source(module_name)
    tree = ast.parse(source.read_text(encoding="utf-8"))
    package = module_name if source.name == "__init__.py" else module_name.rpartition(".")[0]
    imported: dict[str, Symbol] = {}
    defined: list[str] = []
    exported = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                imported[alias.asname or alias.name] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name.partition(".")[0]] = ("<module>", alias.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
            if "__all__" in names:
                exported = list(ast.literal_eval(node.value))
            defined += names
    return imported, defined, exported


@cache
def symbol(module_name: str, name: str) -> Symbol:
    """Where ``module_name.name`` is defined, following re-exports (``from .x import name``)."""
    imported, defined, _ = _top_level(module_name)
    if name in defined:
        return (module_name, name)
    if name in imported:
        source, original = imported[name]
        if source == "<module>":
            return ("<module>", original)
        if _is_module(f"{source}.{original}"):  # from . import blocks
            return ("<module>", f"{source}.{original}")
        if source.startswith("gridattn"):
            return symbol(source, original)
        return (source, original)
    if _is_module(f"{module_name}.{name}"):  # a submodule listed in __all__ without an import
        return ("<module>", f"{module_name}.{name}")
    raise AssertionError(f"{module_name} has no top-level name {name!r}")


def public_modules() -> list[str]:
    """``gridattn`` and every module under it whose dotted path has no part starting with an underscore."""
    names = ["gridattn"]
    for info in pkgutil.walk_packages(gridattn.__path__, "gridattn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def public_names(module_name: str) -> list[str]:
    """A module's ``__all__``, or the non-underscore names it defines at top level."""
    _, defined, exported = _top_level(module_name)
    if exported is not None:
        return exported
    return [name for name in defined if not name.startswith("_")]


def public_symbols() -> dict[Symbol, list[str]]:
    """Every public symbol, mapped to the public paths it is reachable under."""
    found: dict[Symbol, list[str]] = {}
    for module_name in public_modules():
        for name in public_names(module_name):
            found.setdefault(symbol(module_name, name), []).append(f"{module_name}.{name}")
    return found


# ---------------------------------------------------------------------------------------------------------
# what the reference documents

_DIRECTIVE = re.compile(r"^:::\s*(\S+)\s*$")


def _members_option(options: list[str], where: str) -> list[str] | bool | None:
    """The ``members:`` option of a directive's YAML block: a list, ``False``/``True``, or None when absent.

    Accepts ``members: false``, ``members: [a, b]`` and a block list (``members:`` then ``- a`` lines)."""
    for i, line in enumerate(options):
        match = re.match(r"^(\s*)members:\s*(.*?)\s*$", line)
        if not match:
            continue
        value = match.group(2)
        if value.lower() in ("false", "true"):
            return value.lower() == "true"
        if value.startswith("[") and value.endswith("]"):
            return [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
        if value == "":
            items = []
            for item in options[i + 1:]:
                entry = re.match(r"^\s*-\s*(\S+)\s*$", item)
                if not entry:
                    break
                items.append(entry.group(1).strip("'\""))
            return items
        raise AssertionError(f"{where}: cannot read the members option {value!r}")
    return None


def directives(text: str, where: str = "page") -> list[tuple[str, list[str] | bool | None]]:
    """``(path, members option)`` of every ``::: path`` directive of a markdown page."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        options = []
        for following in lines[i + 1:]:
            if following.strip() and not following.startswith((" ", "\t")):
                break
            options.append(following)
        found.append((match.group(1), _members_option(options, f"{where}: ::: {match.group(1)}")))
    return found


def resolve(path: str) -> tuple[str, str | None]:
    """``(module, None)`` for a module path, ``(module, name)`` for a module-level object."""
    if _is_module(path):
        return path, None
    module_name, _, name = path.rpartition(".")
    if not module_name or not _is_module(module_name):
        raise AssertionError(f"::: {path} names neither a module nor a module-level object")
    imported, defined, _ = _top_level(module_name)
    if name not in imported and name not in defined:
        raise AssertionError(f"::: {path}: module {module_name} has no top-level name {name!r}")
    return module_name, name


def documented(pages: dict[str, str]) -> set[Symbol]:
    """Every symbol the given reference pages (name -> markdown text) document."""
    result: set[Symbol] = set()
    for page, text in pages.items():
        for path, members in directives(text, page):
            module_name, name = resolve(path)
            if name is not None:
                result.add(symbol(module_name, name))
                continue
            result.add(("<module>", module_name))
            names = public_names(module_name) if members in (None, True) else (members or [])
            result.update(symbol(module_name, member) for member in names)
    return result


def reference_pages() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(REFERENCE.glob("*.md"))}


def missing_from(pages: dict[str, str]) -> list[str]:
    covered = documented(pages)
    return sorted(" = ".join(paths) for sym, paths in public_symbols().items() if sym not in covered)


# ---------------------------------------------------------------------------------------------------------
# tests


def test_every_public_symbol_is_in_the_reference():
    missing = missing_from(reference_pages())
    assert not missing, (
        f"{len(missing)} public names are in no ::: directive of docs/reference/*.md "
        "(add them to the page of their area):\n  " + "\n  ".join(missing)
    )


def test_reference_directives_resolve():
    for page, text in reference_pages().items():
        for path, _ in directives(text, page):
            resolve(path)  # raises with the page's bad path


def test_coverage_check_fails_when_an_entry_is_removed():
    """The check above can fail: drop one directive from a page and the symbol it documented is reported."""
    pages = reference_pages()
    text = pages["layers.md"]
    assert "::: gridattn.layers.GridAttention\n" in text
    pages["layers.md"] = text.replace("::: gridattn.layers.GridAttention\n", "")
    missing = missing_from(pages)
    assert any("gridattn.layers.GridAttention" in entry for entry in missing), missing


def test_directive_parser():
    text = (
        "# t\n\n::: gridattn.functional\n    options:\n      members: [attention, unpad]\n      heading_level: 2\n\n"
        "::: gridattn.blocks\n    options:\n      members:\n        - GAB\n\n::: gridattn.models\n    options:\n"
        "      members: false\n\n::: gridattn.layers.Mlp\n"
    )
    assert directives(text) == [
        ("gridattn.functional", ["attention", "unpad"]),
        ("gridattn.blocks", ["GAB"]),
        ("gridattn.models", False),
        ("gridattn.layers.Mlp", None),
    ]
    assert symbol("gridattn", "GridAttention") == ("gridattn.layers.grid_attention", "GridAttention")
    assert symbol("gridattn", "functional") == ("<module>", "gridattn.functional")


def _nav_pages() -> list[str]:
    text = MKDOCS_YML.read_text(encoding="utf-8")
    block = re.search(r"^nav:\s*\n((?:[ \t]+.*\n?|\s*\n)+)", text, re.M)
    assert block, "mkdocs.yml has no nav"
    pages = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", block.group(1), re.M)
    assert pages, "mkdocs.yml's nav names no page"
    return pages


def test_nav_entries_exist():
    pages = _nav_pages()
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist under docs/: {missing}"
    assert len(set(pages)) == len(pages), "a page appears twice in the nav"


def test_reference_pages_are_in_the_nav():
    pages = set(_nav_pages())
    absent = [f"reference/{name}" for name in reference_pages() if f"reference/{name}" not in pages]
    assert not absent, f"reference pages missing from mkdocs.yml's nav: {absent}"


def test_nav_parser_agrees_with_yaml():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))

    def leaves(entries):
        for entry in entries:
            if isinstance(entry, str):
                yield entry
            else:
                for value in entry.values():
                    yield from ([value] if isinstance(value, str) else leaves(value))

    assert list(leaves(config["nav"])) == _nav_pages()
