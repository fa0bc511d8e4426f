"""A version of the code that builds an artifact, for its cache key.

`code_version("sae_studies.train", "sae_studies.saes")` hashes the source of those modules (a
package: every ``.py`` file under it) after parsing it and dropping docstrings (attribute
docstrings included), so a change to what the code *does* changes the digest while comments,
docstrings and formatting do not. A builder passes the modules it depends on to
`Store.get_or_build(..., code=...)`, so a changed builder recomputes its artifacts (and, through
their keys, everything downstream), and a warm cache never serves an artifact an older version of
the code made.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path


class _DropDocstrings(ast.NodeTransformer):
    """Drops every statement that is a bare string: docstrings, and the attribute docstrings under
    a dataclass's fields, which no other statement reads (editing one must not change a key)."""

    def visit_Expr(self, node: ast.Expr) -> ast.Expr | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]  # a body that held only a docstring
        return node


def source_files(module: str) -> list[Path]:
    """The ``.py`` files of a module, or of every module of a package (sorted)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"code_version: no module named {module!r}")
    if spec.submodule_search_locations:
        return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.py"))
    return [Path(spec.origin)]


def file_digest(path: Path) -> str:
    """Digest of one source file's code (docstrings, comments and layout left out)."""
    tree = _DropDocstrings().visit(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


@cache  # a process does not change its code; keys are computed often
def code_version(*modules: str) -> str:
    """16 hex digits naming the code of `modules` (module or package names, order ignored)."""
    h = hashlib.sha256()
    for module in sorted(set(modules)):
        for path in source_files(module):
            h.update(f"{module}:{path.name}:{file_digest(path)}".encode())
    return h.hexdigest()[:16]
