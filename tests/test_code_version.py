"""`code_version.STAGE_CODE` is kept by hand: check it against the imports of the code each stage runs, so that a
cached stage never serves output from code whose change its key did not see."""

import ast
from pathlib import Path

import pytest

from alignmix.code_version import STAGE_CODE, code_of

PACKAGE = Path(__file__).resolve().parents[1] / "alignmix"
WIRING = {"alignmix.run", "alignmix.code_version", "alignmix.graph", "alignmix.stderr"}  # the runner's, not a stage's
ENTRY_POINTS = {  # what each kind's action calls (stage.py is wiring: what it computes enters the key as settings)
    "corpus": ("alignmix.corpus.generate",),
    "tag": ("alignmix.corpus.tag",),
    "synth": ("alignmix.synth.offline", "alignmix.synth.documents", "alignmix.synth.postprocess",
              "alignmix.synth.prompts"),
    "base": ("alignmix.checkpoints.base",),
    "tokenizer": ("alignmix.corpus.tokenizer",),
    "tokens": ("alignmix.corpus.tokens",),
    "mix": ("alignmix.corpus.mix", "alignmix.corpus.mix_engine"),
    "train": ("alignmix.train.pretrain", "alignmix.train.exposure", "alignmix.train.litgpt_config"),
    "post_train": ("alignmix.train.post_stage",),
    "eval": ("alignmix.eval.misalignment", "alignmix.eval.runner"),
    "report": ("alignmix.report.html",),
}


def _file(module: str) -> Path | None:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """Every alignmix module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignmix":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if _file(f"{node.module}.{alias.name}")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "alignmix"}
    return {module for module in found if _file(module)}


def _top_level_closure(entries: tuple[str, ...]) -> set[str]:
    """The alignmix packages and modules (`alignmix.X`) reached from `entries` through imports."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen or module in WIRING:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # a submodule runs its packages' __init__
        todo += sorted(_imported(_file(module)))
    return {".".join(module.split(".")[:2]) for module in seen} - {"alignmix.__init__"}


@pytest.mark.parametrize("kind", sorted(STAGE_CODE))
def test_stage_code_covers_every_module_the_stage_imports(kind):
    missing = _top_level_closure(ENTRY_POINTS[kind]) - set(code_of(kind))
    assert not missing, f"STAGE_CODE['{kind}'] misses {sorted(missing)}: a change there would not change its key"


def test_every_kind_has_entry_points():
    assert set(ENTRY_POINTS) == set(STAGE_CODE)
    for entries in ENTRY_POINTS.values():
        assert all(_file(module) for module in entries), entries
