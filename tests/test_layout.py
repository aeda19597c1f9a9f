"""The repository stands alone: every document a source file or doc cites is in the repository."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("hiergen", "runtime", "training", "export", "calibration", "tests", "models")
           for p in (ROOT / d).rglob("*.py")] + list((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def test_every_cited_markdown_document_exists():
    missing = []
    for src in SOURCES:
        if src.is_relative_to(ROOT / "tests"):         # tests name temporary files such as e.md
            continue
        for ref in re.findall(r"[\w./-]*[\w-]+\.md\b", src.read_text()):
            ref = ref.lstrip("./")
            candidates = [ROOT / ref, src.parent / ref, ROOT / "docs" / ref]
            if not any(c.is_file() for c in candidates):
                missing.append(f"{src.relative_to(ROOT)} cites {ref}")
    assert not missing, "\n".join(missing)


def test_no_source_points_outside_the_repository():
    outside = [f"{p.relative_to(ROOT)}" for p in SOURCES if p != Path(__file__) and "../" + "shared" in p.read_text()]
    assert not outside, outside


# ---------------------------------------------------------------- the import graph
# Wings, lowest first; a module may import its own wing and the ones below, never one above.
PACKAGE_DIRS = {"hiergen": "hiergen", "training": "hiergen.training", "export": "hiergen.export",
                "runtime": "hiergen.runtime", "calibration": "hiergen.calibration"}
TOOLS = ("hiergen.tools",)
TOP = ("hiergen", "hiergen.cli")                     # the public facade (from hiergen import Pipeline) and the CLI


def wing(module: str) -> int:
    if module in TOP:
        return 5
    if module.startswith(TOOLS):
        return 4
    for rank, prefix in ((3, "hiergen.export"), (3, "hiergen.calibration"), (2, "hiergen.training"),
                         (1, "hiergen.runtime")):
        if module.startswith(prefix):
            return rank
    return 0                                         # the ground: config, captions, data, video I/O, analyzer...


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            if folder == "hiergen" and parts and parts[0] in PACKAGE_DIRS:
                continue
            out[".".join([package, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Every hiergen module -> the hiergen modules it imports anywhere in its body (lazy imports too)."""
    import ast
    mods = modules()
    graph = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hiergen"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                          for a in node.names if a.name != "__version__"}     # a constant, not the facade
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("hiergen")}
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def test_no_module_imports_upward_or_back():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if wing(d) > wing(m)]
    assert not upward, "imports from a higher wing:\n" + "\n".join(sorted(upward))
    cycles = []

    def visit(node, path):
        for dep in graph[node]:
            if dep in path:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)
    done: set[str] = set()
    for m in graph:
        if m not in done:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_runtime_never_imports_torch_training_or_export():
    bad = [f"{m} -> {d}" for m, deps in import_graph().items() if m.startswith("hiergen.runtime")
           for d in deps if d.startswith(("hiergen.training", "hiergen.export"))]
    torch = [str(p) for p in (ROOT / "runtime").rglob("*.py") if "import torch" in p.read_text()]
    assert not bad and not torch, bad + torch
