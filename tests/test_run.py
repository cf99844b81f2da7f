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
        Stage("first", Path("first"), {"n": settings["n"]}, first, kind="corpus"),
        Stage("second", Path("second"), {"factor": settings.get("factor", 1)}, second, ("first",), kind="tag"),
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


def test_output_changed_in_place_keeping_its_size_is_rebuilt_not_skipped(tmp_path: Path):
    log: list[str] = []
    said: list[str] = []
    run(tmp_path, log, {"n": 40})
    numbers = tmp_path / "first" / "numbers.txt"
    data = bytearray(numbers.read_bytes())
    data[10:74] = bytes(b ^ 0x5A for b in data[10:74])  # 64 bytes flipped, the size kept
    numbers.write_bytes(bytes(data))
    manifest = Runner(tmp_path, make_stages(log, {"n": 40}), {"recipe": "t"}, echo=said.append).run()
    assert [s["status"] for s in manifest["stages"]] == ["ran", "skipped"]
    assert log == ["first", "second", "first"]
    assert numbers.read_text() == " ".join(str(i) for i in range(40))
    assert any("first: its output changed since it was written (sha256 differs" in line for line in said)


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


def test_a_second_run_into_a_held_folder_is_refused_and_kill_9_releases_it(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys

    from alignmix.run import RunFolderBusy

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from alignmix.run import run_folder_lock\n"
         "with run_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    log: list[str] = []
    with pytest.raises(RunFolderBusy, match=rf"another alignmix run is writing here \(pid {holder.pid} on"):
        run(tmp_path, log, {"n": 2})
    assert log == [] and not (tmp_path / "first").exists()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert [s["status"] for s in run(tmp_path, log, {"n": 2})["stages"]] == ["ran", "ran"]


def test_the_stage_key_follows_the_code_that_produces_it(tmp_path: Path, monkeypatch):
    from alignmix import code_version as versions

    log: list[str] = []
    stages = make_stages(log, {"n": 3})
    stages[1].code = ("alignmix.report",)
    Runner(tmp_path, stages, {}, echo=lambda _: None).run()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"][1]["code"] == versions.code_version(("alignmix.report",))
    real = versions._source_sha256
    monkeypatch.setattr(versions, "_source_sha256", lambda m: "edited" if m == "alignmix.report" else real(m))
    statuses = [s["status"] for s in Runner(tmp_path, stages, {}, echo=lambda _: None).run()["stages"]]
    assert statuses == ["skipped", "ran"]


def test_step_checkpoints_enter_the_digest_by_name_and_size_only(tmp_path: Path):
    from alignmix.run import digest

    (tmp_path / "step-00000010").mkdir()
    (tmp_path / "final").mkdir()
    (tmp_path / "step-00000010" / "lit_model.pth").write_bytes(b"a" * 10)
    (tmp_path / "final" / "lit_model.pth").write_bytes(b"b" * 10)
    before = digest(tmp_path)
    (tmp_path / "step-00000010" / "lit_model.pth").write_bytes(b"c" * 10)  # same size: not read
    assert digest(tmp_path) == before
    (tmp_path / "final" / "lit_model.pth").write_bytes(b"c" * 10)  # the final artefact is read
    assert digest(tmp_path) != before


def test_an_alignmix_error_inside_a_stage_names_the_stage_and_keeps_the_traceback_in_its_log(tmp_path: Path):
    from alignmix.eval.runner import EvalError
    from alignmix.run import StageFailed

    def broken(ctx: StageContext) -> dict:
        raise EvalError("model folder has no tokenizer")

    with pytest.raises(StageFailed, match=r"stage 'eval/x' failed: model folder has no tokenizer \(log: "):
        Runner(tmp_path, [Stage("eval/x", Path("eval/x"), {}, broken, kind="eval")], {}, echo=lambda _: None).run()
    assert "Traceback" in (tmp_path / "logs" / "eval--x.log").read_text()
