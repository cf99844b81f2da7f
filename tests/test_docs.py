"""The docs are run: every ```bash run``` block of README.md and docs/*.md runs in a temporary folder (the repo's
recipes/ and benchmarks/ reachable, the venv's bin/ on PATH) and must exit 0; ```bash skip=REASON``` blocks (a GPU,
a server, a cluster, minutes) are reported as skipped. Every command's --help names the docs page that covers it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.cli.docs_pages import DOCS_PAGES, registered

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_REASONS = {
    "gpu": "needs a CUDA GPU",
    "server": "needs an LLM server (vLLM or an OpenAI-compatible API)",
    "slurm": "needs a Slurm cluster",
    "ray": "needs a Ray cluster",
    "run": "needs a finished run folder (make demo) or your own data",
    "slow": "takes minutes",
}
LINKED_INTO_THE_TEMP_FOLDER = ("recipes", "benchmarks")
README_MAX_LINES = 250


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its info string and its text."""

    page: Path
    line: int
    info: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page (fences may be indented, as inside a list item)."""
    blocks, lines = [], page.read_text().splitlines()
    opened: tuple[int, str, int] | None = None  # line number, info string, indent
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if opened is None and stripped.startswith("```"):
            opened = (number, stripped[3:].strip(), len(line) - len(line.lstrip()))
        elif opened is not None and stripped == "```":
            start, info, indent = opened
            blocks.append(Block(page, start, info, "\n".join(ln[indent:] for ln in lines[start:number - 1])))
            opened = None
    assert opened is None, f"{page}:{opened[0]}: a fence that is never closed"
    return blocks


SHELL_BLOCKS = [b for page in PAGES for b in fenced_blocks(page) if b.info.split()[:1] == ["bash"]]


def test_every_shell_block_is_marked_run_or_skip_with_a_known_reason():
    unmarked = [f"{b.where}: ```{b.info}" for b in SHELL_BLOCKS
                if b.info != "bash run" and not (b.info.startswith("bash skip=") and b.info[10:] in SKIP_REASONS)]
    assert not unmarked, f"mark each as `bash run` or `bash skip=` one of {sorted(SKIP_REASONS)}: {unmarked}"


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.where for b in SHELL_BLOCKS])
def test_shell_block(block: Block, tmp_path: Path, request: pytest.FixtureRequest):
    if block.info != "bash run":
        reason = block.info.removeprefix("bash skip=")
        pytest.skip(f"{block.where}: {SKIP_REASONS.get(reason, reason)}")
    if "builtin:SmolLM2" in block.code:  # the session's de-quantised SmolLM2 (ALIGNMIX_MODELS), not a second one
        request.getfixturevalue("released_models")
    for name in LINKED_INTO_THE_TEMP_FOLDER:
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{block.where} exited {result.returncode}\n--- block\n{block.code}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}")


def test_every_command_has_a_docs_page_and_the_mapping_names_no_other():
    names = {name for name, _ in registered(app)}
    assert not names - set(DOCS_PAGES), f"add to DOCS_PAGES (alignmix/cli/docs_pages.py): {names - set(DOCS_PAGES)}"
    assert not set(DOCS_PAGES) - names, f"DOCS_PAGES names commands that do not exist: {set(DOCS_PAGES) - names}"


@pytest.mark.parametrize("name", sorted(DOCS_PAGES))
def test_help_ends_with_the_page_that_shows_the_command(name: str):
    page = DOCS_PAGES[name]
    assert f"alignmix {name}" in (REPO / page).read_text(), f"{page} never shows `alignmix {name}`"
    result = CliRunner().invoke(app, [*name.split(), "--help"], prog_name="alignmix")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].strip() == f"Docs: {page}"


def test_the_readme_is_one_page_and_maps_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    unmapped = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unmapped, f"the README's map of the docs lacks {unmapped}"


def test_the_readme_keeps_current_figures_and_points_a_new_user_at_the_shipped_model():
    readme = (REPO / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("\n## ")[0]
    assert "builtin:SmolLM2-135M-Instruct" in quickstart and "(docs/evaluation.md#evaluate-a-released-model)" in quickstart
    assert "Earlier rounds" not in readme and "4 min 17 s" not in readme  # the history lives in docs/benchmarks.md
    assert "Earlier rounds measured 0.422" in (REPO / "docs" / "benchmarks.md").read_text()
    evaluation = (REPO / "docs" / "evaluation.md").read_text()
    assert evaluation.split("\n## ")[1].startswith("Evaluate a released model")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_lead_to_files_and_headings(page: Path):
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
        if "://" in target:
            continue
        linked = (page.parent / target) if target else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked)):
            broken.append(f"{target}#{anchor}" if anchor else target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_the_test_files_and_tests_the_docs_name_exist():
    text = "\n".join(page.read_text() for page in PAGES)
    missing = [f for f in sorted(set(re.findall(r"\btests/[\w/]+\.py\b", text))) if not (REPO / f).is_file()]
    defined = {name for test_file in (REPO / "tests").rglob("test_*.py")
               for name in re.findall(r"^(?:async )?def (test_\w+)", test_file.read_text(), re.MULTILINE)}
    missing += sorted(set(re.findall(r"`(test_\w+)`", text)) - defined)
    assert not missing, f"the docs name tests that do not exist: {missing}"


COMMAND_LINE = re.compile(r"^\s*(?:\w+=\S*\s+)*(?:\S*/)?alignmix (.*)$")  # `[VAR=value ...] [path/]alignmix ...`


def command_uses(page: Path) -> list[str]:
    """The arguments of each `alignmix ...` command the page shows: in code blocks, a line that starts with the
    command and the indented lines that continue it; in inline code, the span."""
    uses = []
    for block in fenced_blocks(page):
        segment: list[str] = []
        for line in [*block.code.splitlines(), ""]:
            if segment and line[:1].isspace() and not COMMAND_LINE.match(line):
                segment.append(line)
                continue
            if segment:
                uses.append(" ".join(segment))
            match = COMMAND_LINE.match(line)
            segment = [match.group(1)] if match else []
    outside = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    uses += [match.group(1) for span in outside.split("`")[1::2] if (match := COMMAND_LINE.match(span))]
    return uses


def test_every_command_and_option_the_docs_show_exists():
    import typer.main

    root, wrong = typer.main.get_command(app), []
    for page in PAGES:
        for arguments in command_uses(page):
            words = re.match(r"([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", arguments)
            if words is None:
                continue
            name, command = words[1], root.commands.get(words[1])
            if command is None:
                wrong.append(f"{page.name}: alignmix {name}")
                continue
            if hasattr(command, "commands"):  # a group: check its sub-command, if one is named
                name, command = f"{name} {words[2]}", command.commands.get(words[2] or "")
                if command is None:
                    continue
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
            wrong += [f"{page.name}: alignmix {name} {o}" for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", arguments)
                      if o not in options]
    assert not wrong, f"commands or options the CLI does not have: {wrong}"
