"""The layering docs/architecture.md promises, read from the source: which part of pipeline/ imports which
(deferred imports inside functions and under TYPE_CHECKING included), no import cycle among the project's
modules, and ComfyUI imported by nodes/ only."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOTTOM = {"pipeline", "pipeline.config", "pipeline.errors", "pipeline.images", "pipeline.sources"}
# part -> the parts it may import besides the bottom modules and itself (docs/architecture.md, "Which part may
# import which"); a dotted entry allows that one module of a part.
ALLOWED = {
    "llm": set(),
    "comfy_api": set(),
    "record": set(),
    "generation": {"comfy_api", "services.protocol"},
    "scoring": {"services.protocol"},
    "beam": {"record", "generation.protocol"},
    "evaluation": {"llm", "scoring", "beam", "record"},
    "cli": {"llm", "comfy_api", "record", "generation", "scoring", "beam", "services", "evaluation"},
    "services": {"llm", "comfy_api", "record", "generation", "scoring", "beam"},
    "__main__": {"cli"},                       # `python -m pipeline`
}
COMFY_MODULES = {"comfy", "comfy_extras", "folder_paths", "server", "nodes", "latent_preview", "node_helpers",
                 "execution", "comfy_api", "comfy_execution", "comfyui_version"}


def project_modules() -> dict[str, Path]:
    found = {}
    for package in ("pipeline", "nodes"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """(absolute module, level) of every import in the file; level 0 = an absolute import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(module, node.level)] + [(f"{module}.{alias.name}", node.level) for alias in node.names]
    return found


def project_edges() -> dict[str, set[str]]:
    modules = project_modules()
    edges = defaultdict(set)
    for name, path in modules.items():
        for target, _level in imports_of(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            own_face = path.name == "__init__.py" and target.startswith(name + ".")
            if target and target != name and not own_face:
                edges[name].add(target)
    return edges


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module not in BOTTOM) else ""


def allowed(source: str, target: str) -> bool:
    if target in BOTTOM or not target.startswith("pipeline."):
        return True
    mine, theirs = part_of(source), part_of(target)
    if mine == theirs:
        return True
    rules = ALLOWED.get(mine, set())
    return theirs in rules or target.removeprefix("pipeline.") in rules


def test_each_part_imports_only_what_the_architecture_allows():
    wrong = sorted(f"{source} -> {target}" for source, targets in project_edges().items()
                   if source.startswith("pipeline.") and source not in BOTTOM for target in targets
                   if not allowed(source, target))
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_bottom_modules_import_no_part():
    edges = project_edges()
    upward = sorted(f"{m} -> {t}" for m in BOTTOM for t in edges.get(m, ()) if t not in BOTTOM)
    assert not upward


def test_no_import_cycle():
    edges = project_edges()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in project_modules():
        if module not in index:
            visit(module)
    assert not cycles


def test_comfyui_is_imported_by_nodes_only():
    offenders = []
    for name, path in project_modules().items():
        if not name.startswith("pipeline"):
            continue
        for target, level in imports_of(name, path):
            if level == 0 and target.split(".")[0] in COMFY_MODULES:
                offenders.append(f"{name} imports {target}")
    assert not offenders


def test_the_rules_see_a_forbidden_import():
    """The checks above are only worth something if they can fail: an upward import is reported."""
    assert not allowed("pipeline.record.report", "pipeline.beam.types")
    assert not allowed("pipeline.generation.diffusers_flux", "pipeline.scoring.scorer")
    assert not allowed("pipeline.beam.run", "pipeline.generation.diffusers_flux")
    assert allowed("pipeline.beam.render", "pipeline.generation.protocol")
    assert allowed("pipeline.cli.search", "pipeline.beam.config")
