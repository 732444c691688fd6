"""Imports point down only: no cycle among qkvjax's modules (a lazy import
inside a function counts), and no library module imports the experiments'
configs or the entry point."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qkvjax"

# The framework (and the studies above it) may load configs/NAME.py by name;
# every other module of qkvjax is library.
ABOVE_LIBRARY = {"qkvjax.registry", "qkvjax.study", "qkvjax.runner", "qkvjax.sweep",
                 "qkvjax.report", "qkvjax.plotting", "qkvjax.claim_kinds",
                 "qkvjax.figure_kinds", "qkvjax.sample_kinds"}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Every module ``path`` imports, at the top or inside a function."""
  name = _module_name(path)
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
      # pkg.module, or pkg.name (a name inside pkg: resolved to pkg below).
      out.update(f"{base}.{a.name}" for a in node.names)
  return out


def graph() -> dict[str, set[str]]:
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  edges = {}
  for name, path in modules.items():
    targets = set()
    for imported in _imports(path):
      while imported and imported not in modules:  # a name inside a module
        imported = imported.rpartition(".")[0]
      if imported and imported != name:
        targets.add(imported)
    edges[name] = targets
  return edges


def _cycle(edges):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(edges):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_graph_sees_top_level_lazy_and_relative_imports():
  edges = graph()
  assert "qkvjax.train" in edges["qkvjax.runner"]          # top level
  assert "qkvjax.sweep" in edges["qkvjax.study"]           # inside a function
  assert "qkvjax.models.attention_block" in edges["qkvjax.models"]
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
  cycle = _cycle(graph())
  assert cycle is None, " -> ".join(cycle)


def test_study_and_runner_depend_one_way():
  edges = graph()
  assert "qkvjax.runner" in edges["qkvjax.study"]
  assert "qkvjax.study" not in edges["qkvjax.runner"]


def test_library_modules_import_neither_configs_nor_the_entry_point():
  bad = []
  for path in PACKAGE.rglob("*.py"):
    name = _module_name(path)
    if name in ABOVE_LIBRARY or name.startswith(("qkvjax.studies", "qkvjax.commands")):
      continue
    for imported in _imports(path):
      top = imported.split(".")[0]
      if top in ("configs", "experiments"):
        bad.append(f"{name} imports {imported}")
  assert not bad, bad


def test_the_run_directory_is_library():
  """``RunDir`` is used by the framework and the commands, and uses none of them."""
  above = ABOVE_LIBRARY | {"qkvjax.studies", "qkvjax.commands"}
  assert not {m for m in graph()["qkvjax.rundir"]
              if m in above or m.startswith(("qkvjax.studies.", "qkvjax.commands."))}


def test_loggers_do_not_need_config():
  assert "qkvjax.config" not in graph()["qkvjax.loggers"]


def test_studies_import_no_other_study():
  """What two studies share lives in the framework (claim_kinds, figure_kinds,
  report...), not in one of them; a study split over modules of its own name
  (``induction_*``) is one study."""
  bad = []
  for name, targets in graph().items():
    if name.startswith("qkvjax.studies."):
      own = name.split(".")[2].split("_")[0]
      bad += [f"{name} imports {t}" for t in targets if t.startswith("qkvjax.studies.")
              and t.split(".")[2].split("_")[0] != own]
  assert not bad, bad


def test_framework_imports_no_study():
  edges = graph()
  bad = [f"{m} imports {t}" for m in ABOVE_LIBRARY for t in edges.get(m, ())
         if t.startswith("qkvjax.studies")]
  assert not bad, bad
