import json
from pathlib import Path

import pytest

from alignmix.run import Runner, Stage, StageContext


class Interrupted(Exception):
    pass


def make_stages(log: list[str], settings: dict, fail_second_after_partial: bool = False) -> list[Stage]:
    def first(ctx: StageContext) -> dict:
        log.append("first")
        ctx.output.mkdir(parents=True)
        (ctx.output / "numbers.txt").write_text(" ".join(str(i) for i in range(settings["n"])))
        return {"written": settings["n"]}

    def second(ctx: StageContext) -> dict:
        log.append("second-resume" if ctx.resuming else "second")
        ctx.output.mkdir(parents=True, exist_ok=True)
        partial = ctx.output / "partial.txt"
        if not partial.exists():
            partial.write_text("half")
            if fail_second_after_partial:
                raise Interrupted
        numbers = (ctx.inputs["first"] / "numbers.txt").read_text().split()
        (ctx.output / "sum.txt").write_text(str(sum(map(int, numbers))))
        return {"sum": sum(map(int, numbers))}

    return [
        Stage("first", Path("first"), {"n": settings["n"]}, first),
        Stage("second", Path("second"), {"factor": settings.get("factor", 1)}, second, ("first",)),
    ]


def run(tmp_path: Path, log: list[str], settings: dict, **kwargs) -> dict:
    return Runner(tmp_path, make_stages(log, settings, **kwargs), {"recipe": "t"}, echo=lambda _: None).run()


def test_unchanged_stages_are_skipped(tmp_path: Path):
    log: list[str] = []
    manifest = run(tmp_path, log, {"n": 5})
    assert [s["status"] for s in manifest["stages"]] == ["ran", "ran"]
    assert (tmp_path / "second" / "sum.txt").read_text() == "10"
    manifest = run(tmp_path, log, {"n": 5})
    assert [s["status"] for s in manifest["stages"]] == ["skipped", "skipped"]
    assert log == ["first", "second"]
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["stages"][1]["inputs"]["first"] == written["stages"][0]["output_digest"]
    assert written["stages"][0]["counts"] == {"written": 5}
    assert "torch" in written["packages"] and "datatrove" in written["packages"]


def test_changed_settings_rerun_the_stage_and_its_dependents(tmp_path: Path):
    log: list[str] = []
    run(tmp_path, log, {"n": 5})
    manifest = run(tmp_path, log, {"n": 6})
    assert [s["status"] for s in manifest["stages"]] == ["ran", "ran"]
    assert (tmp_path / "second" / "sum.txt").read_text() == "15"
    manifest = run(tmp_path, log, {"n": 6, "factor": 2})
    assert [s["status"] for s in manifest["stages"]] == ["skipped", "ran"]


def test_deleted_output_is_rebuilt(tmp_path: Path):
    log: list[str] = []
    run(tmp_path, log, {"n": 3})
    (tmp_path / "second" / "sum.txt").unlink()
    manifest = run(tmp_path, log, {"n": 3})
    assert [s["status"] for s in manifest["stages"]] == ["skipped", "ran"]


def test_interrupted_stage_resumes_without_losing_its_partial_output(tmp_path: Path):
    log: list[str] = []
    with pytest.raises(Interrupted):
        run(tmp_path, log, {"n": 4}, fail_second_after_partial=True)
    assert (tmp_path / "second" / "partial.txt").exists()
    manifest = run(tmp_path, log, {"n": 4})
    assert [s["status"] for s in manifest["stages"]] == ["skipped", "resumed"]
    assert log == ["first", "second", "second-resume"]
    assert (tmp_path / "second" / "sum.txt").read_text() == "6"


def test_dependency_must_run_first(tmp_path: Path):
    stages = make_stages([], {"n": 1})
    with pytest.raises(ValueError, match="depends on"):
        Runner(tmp_path, list(reversed(stages)), {}, echo=print)
