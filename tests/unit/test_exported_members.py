"""The public API is exactly ``llm_operator.__all__``: what ``__init__.py`` exports, each importable and documented
(after httpx's tests/test_exported_members.py)."""

import ast
import importlib
import inspect
import pathlib

import pytest

import llm_operator

INIT = pathlib.Path(llm_operator.__file__)
#: Module-level names that are public without being in ``__all__``.
PUBLIC_DUNDERS = {"__version__"}


def _bound_by_init() -> dict[str, str | None]:
    """Each name ``__init__.py`` binds at module level, with the module it imports it from (None when assigned)."""
    names: dict[str, str | None] = {}
    for node in ast.parse(INIT.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            source = "." * node.level + (node.module or "")
            for alias in node.names:
                names[alias.asname or alias.name] = source
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = alias.name
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update((t.id, None) for t in targets if isinstance(t, ast.Name))
    return names


def test_all_has_no_duplicates():
    assert len(llm_operator.__all__) == len(set(llm_operator.__all__))


def test_all_is_what_init_exports():
    public = {name for name in _bound_by_init() if not name.startswith("_")}
    assert sorted(llm_operator.__all__) == sorted(public)


def test_all_is_what_the_package_has():
    """No other public attribute: submodules are private (``_api``...), so importing them adds none."""
    public = {name for name in vars(llm_operator) if not name.startswith("_") or name in PUBLIC_DUNDERS}
    assert sorted(public) == sorted([*llm_operator.__all__, *PUBLIC_DUNDERS])


def test_star_import_gives_all():
    namespace: dict = {}
    exec("from llm_operator import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == sorted(llm_operator.__all__)


@pytest.mark.parametrize("name", llm_operator.__all__)
def test_each_member_is_importable_from_the_package(name):
    member = getattr(importlib.import_module("llm_operator"), name)
    assert member is getattr(llm_operator, name)


@pytest.mark.parametrize("name", llm_operator.__all__)
def test_each_member_is_documented(name):
    """A class or function has a docstring of its own (not one inherited); a constant has a ``#:`` comment
    (Sphinx's autodoc convention) on the line above its assignment in the module that defines it."""
    member = getattr(llm_operator, name)
    if inspect.isclass(member):
        assert (vars(member).get("__doc__") or "").strip(), f"class {name} has no docstring"
    elif callable(member):
        assert (member.__doc__ or "").strip(), f"function {name} has no docstring"
    else:
        source = _bound_by_init()[name]
        assert source is not None, f"{name} is assigned in __init__.py; import it from the module that documents it"
        module = importlib.import_module(source, "llm_operator")
        lines = inspect.getsource(module).splitlines()
        assigned = [node.lineno for node in ast.parse("\n".join(lines)).body
                    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
        assert assigned, f"{name} is not assigned at module level in {module.__name__}"
        above = lines[assigned[0] - 2].strip() if assigned[0] >= 2 else ""
        assert above.startswith("#:"), f"{module.__name__}.{name} has no #: comment on the line above it"
