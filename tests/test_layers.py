"""The layer ranks of docs/ARCHITECTURE.md, enforced: every import in jaxgc/ points down.

Every ``import`` statement of every module is parsed, those inside functions included. A module
may import modules of a lower rank, or of its own rank when that makes no cycle; never a module
of a higher rank. Every module must have a rank (a new top-level module gets one here and in
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxgc"

# Bottom to top. A module's rank is that of the longest prefix listed here (the root package
# itself, ``jaxgc/__init__.py``, only by its exact name).
RANKS = {
    "jaxgc": 0, "jaxgc._fileio": 0, "jaxgc._aliases": 0, "jaxgc.stats": 0,
    "jaxgc.ownership": 0, "jaxgc._signals": 0,
    "jaxgc.models": 1,
    "jaxgc.convert": 2, "jaxgc.parallel": 2, "jaxgc.data": 2, "jaxgc.report": 2,
    "jaxgc.compress": 3, "jaxgc.eval": 3, "jaxgc.train": 3, "jaxgc.checkpoint": 3,
    "jaxgc.jobs": 4, "jaxgc.export": 4,
    "jaxgc.cli": 5, "jaxgc.__main__": 5,
}


def module_name(root: pathlib.Path, path: pathlib.Path) -> str:
  parts = (root.name,) + path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(root: pathlib.Path, dotted: str) -> bool:
  rel = pathlib.Path(*dotted.split(".")[1:])
  return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports_of(root: pathlib.Path, path: pathlib.Path) -> set[str]:
  """The package's own modules that ``path`` imports (anywhere in the file).

  Importing ``a.b.c`` also runs the ``__init__`` of the package ``a.b``: that package counts as
  imported too, unless it encloses ``path`` itself (its ``__init__`` is already running then).
  """
  name = module_name(root, path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      for alias in node.names:
        sub = f"{mod}.{alias.name}"
        found.add(sub if _is_module(root, sub) else mod)
  own = {m for m in found if m == root.name or m.startswith(root.name + ".")}
  enclosing = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)} | {name}
  parents = {m.rsplit(".", k)[0] for m in own for k in range(1, m.count(".") + 1)}
  return own | {p for p in parents if p not in enclosing}


def rank_of(module: str, ranks: dict[str, int]) -> int | None:
  best = None
  root = min(ranks, key=len)
  for prefix, rank in ranks.items():
    if module == prefix or (prefix != root and module.startswith(prefix + ".")):
      if best is None or len(prefix) > len(best[0]):
        best = (prefix, rank)
  return None if best is None else best[1]


def violations(root: pathlib.Path, ranks: dict[str, int]) -> list[str]:
  """Every unranked module, upward import and import cycle under ``root``, one line each."""
  graph = {module_name(root, p): imports_of(root, p) for p in sorted(root.rglob("*.py"))}
  problems = [f"{m} has no rank" for m in graph if rank_of(m, ranks) is None]
  for src, dsts in graph.items():
    for dst in sorted(dsts):
      rs, rd = rank_of(src, ranks), rank_of(dst, ranks)
      if rs is not None and rd is not None and rd > rs:
        problems.append(f"upward import: {src} (rank {rs}) imports {dst} (rank {rd})")
  # Cycles: strongly connected components of more than one module, or a self-import (Tarjan).
  index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1 or v in graph[v]:
        problems.append("import cycle: " + " -> ".join(sorted(comp)))

  for v in graph:
    if v not in index:
      visit(v)
  return problems


def test_every_import_in_jaxgc_points_down():
  problems = violations(ROOT, RANKS)
  assert not problems, "\n".join(problems)


def test_every_rank_prefix_names_a_module():
  for prefix in RANKS:
    assert prefix == "jaxgc" or _is_module(ROOT, prefix), f"{prefix} is not a module of jaxgc"


def _write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for rel, text in files.items():
    p = root / "pkg" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
  return root / "pkg"


@pytest.mark.parametrize("files, expected", [
    # An upward import hidden inside a function.
    ({"__init__.py": "", "low.py": "def f():\n  from pkg import high\n", "high.py": ""},
     "upward import: pkg.low (rank 0) imports pkg.high (rank 1)"),
    # A cycle between two modules of the same rank, through a relative import.
    ({"__init__.py": "", "mid/__init__.py": "", "mid/a.py": "from . import b\n",
      "mid/b.py": "import pkg.mid.a\n", "low.py": "", "high.py": ""},
     "import cycle: pkg.mid.a -> pkg.mid.b"),
    # A submodule importing its own package, whose __init__ imports it back.
    ({"__init__.py": "", "mid/__init__.py": "from pkg.mid.a import x\n",
      "mid/a.py": "from pkg import mid\nx = 1\n", "low.py": "", "high.py": ""},
     "import cycle: pkg.mid -> pkg.mid.a"),
    ({"__init__.py": "", "stray.py": ""}, "pkg.stray has no rank"),
    # A cycle through a package __init__: importing pkg.mid.a runs pkg/mid/__init__.py, which
    # imports pkg.high, which imports pkg.mid.a.
    ({"__init__.py": "", "mid/__init__.py": "from pkg import high\n", "mid/a.py": "",
      "high.py": "def f():\n  import pkg.mid.a\n", "low.py": ""},
     "import cycle: pkg.high -> pkg.mid"),
])
def test_the_checker_finds_upward_imports_cycles_and_unranked_modules(tmp_path, files, expected):
  root = _write(tmp_path, files)
  ranks = {"pkg": 0, "pkg.low": 0, "pkg.mid": 1, "pkg.high": 1}
  assert expected in violations(root, ranks)


def test_the_checker_accepts_downward_and_same_rank_acyclic_imports(tmp_path):
  root = _write(tmp_path, {"__init__.py": "", "low.py": "",
                           "mid/__init__.py": "from pkg.mid import a\n",
                           "mid/a.py": "from pkg import low\nfrom . import b\n",
                           "mid/b.py": "from pkg.low import *\n",
                           "high.py": "import pkg.mid.a\n"})
  assert violations(root, {"pkg": 0, "pkg.low": 0, "pkg.mid": 1, "pkg.high": 1}) == []
