"""The floor plan, checked on the code's own imports: no stage package (corpus, synth, train, eval, report)
imports another, and no base module (checkpoints, classifiers, llm, scenarios, recipe, ...) imports a stage.
Only the composition layer (graph, run, the CLI) sees every stage."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "alignmix"
STAGES = {"corpus", "synth", "train", "eval", "report"}
COMPOSITION = {"graph", "run", "cli", "__main__"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignmix."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("alignmix.")]
    return found


def test_no_stage_imports_another_and_no_base_module_imports_a_stage():
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        room = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        if room in COMPOSITION:
            continue
        for line, module in _imports(path):
            target = module.split(".")[1]
            if target in STAGES and target != room:
                crossings.append(f"alignmix/{relative}:{line} imports {module}")
    assert not crossings, "\n".join(crossings)


def test_the_check_sees_the_stage_packages():
    assert all((PACKAGE / stage / "__init__.py").is_file() for stage in STAGES)
