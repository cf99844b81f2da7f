"""Stage outputs are named in one place: no module but `alignmix/outputs.py` spells the file name of a stage
output (a tagged source's shards and stats, a mixture's manifest, a model's `final/`, metrics and exposure, an
eval's results); each goes through `alignmix.outputs`' readers, writers and names."""

import ast
from pathlib import Path

from alignmix import outputs

PACKAGE = Path(__file__).resolve().parents[1] / "alignmix"
NAMES = {outputs.STATS_FILE, outputs.MANIFEST_FILE, outputs.METRICS_FILE, outputs.RESULTS_FILE, outputs.EXPOSURE_FILE,
         outputs.FINAL_DIR}
ALLOWED = {  # (module, name): why it may spell it
    ("recipe/corpus.py", outputs.SHARD_SUFFIX): "an input file format's suffix (corpus files read by `tag`)",
    ("corpus/engines.py", outputs.STATS_FILE): "datatrove's own statistics in a pipeline's logging folder",
}


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def _spelt(text: str) -> str | None:
    """The output name `text` spells: the name itself or a path ending in it, or a documents shard's suffix."""
    if text.endswith(outputs.SHARD_SUFFIX):
        return outputs.SHARD_SUFFIX
    return next((name for name in NAMES if text == name or text.endswith("/" + name)), None)


def test_no_module_but_outputs_spells_a_stage_output_file_name():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "outputs.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                name = _spelt(node.value)
                if name is not None and (relative, name) not in ALLOWED:
                    found.append(f"alignmix/{relative}:{node.lineno} spells {node.value!r}")
    assert not found, "use alignmix.outputs instead:\n" + "\n".join(found)


def test_the_check_sees_a_spelt_name():
    assert _spelt("mixture_manifest.json") and _spelt("logs/metrics.csv") and _spelt("00000.jsonl.gz")
    assert _spelt("finals") is None and _spelt("results") is None
