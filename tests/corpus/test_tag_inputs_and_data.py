"""Round three of bad inputs, tagging side: damaged and misnamed WARC files, an output folder inside the input
folder, two commands into one output, a newline in a file name, inputs named twice, ids 0, "" and null, a row's
own `source` and `media`, and a full disk.

In skip mode `documents_in = kept + flagged + skipped` and every good document comes out; in fail mode the user
sees one `error:` line naming the file and no traceback."""

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.corpus.test_tag_cli import alignmix, docs_in
from tests.corpus.test_tag_damaged_inputs import GOOD, _jsonl, _one_error_line, _parquet, _stats, _tag


def _warc_records(count: int, compressed: bool) -> list[bytes]:
    """`count` HTML response records, each as written on its own (a gzip member each when `compressed`)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    records = []
    for i in range(count):
        buffer = io.BytesIO()
        writer = WARCWriter(buffer, gzip=compressed)
        html = (f"<html><body><article><p>Page {i}: an AI assistant helped a farmer plan the harvest and talked at"
                f" length about the weather, the cows and the fields, number {i}.</p></article></body></html>")
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        writer.write_record(writer.create_warc_record(f"http://example.com/{i}", "response",
                                                      payload=io.BytesIO(html.encode()), http_headers=headers))
        records.append(buffer.getvalue())
    return records


def _said(result: subprocess.CompletedProcess) -> str:
    """What a command printed, its lines as the console wrapped them joined again."""
    return " ".join(result.stdout.split())


def _damaged_warc(tmp_path: Path, damage: str) -> tuple[Path, int]:
    """A WARC file damaged as named, and how many whole records come before the damage."""
    if damage == "not WARC":
        path = tmp_path / "notes.warc"
        path.write_text("These are my notes.\nThey are not a web archive.\n")
        return path, 0
    compressed = damage != "plain file cut inside a record"
    records = _warc_records(8, compressed)
    whole = b"".join(records[:5])
    if damage == "bad gzip CRC":  # the CRC of the 4th member: its bytes and every member after it are suspect
        fourth = bytearray(records[3])
        fourth[-8] ^= 0xFF
        whole, kept = b"".join(records[:3]) + bytes(fourth) + b"".join(records[4:]), 3
    elif damage == "gzip cut between records":
        whole, kept = whole + records[5][: len(records[5]) // 3], 5
    else:  # cut inside the 6th record's body
        whole, kept = whole + records[5][: len(records[5]) - 40], 5
    path = tmp_path / ("cut.warc.gz" if compressed else "cut.warc")
    path.write_bytes(whole)
    return path, kept


@pytest.mark.parametrize("damage", ["gzip cut between records", "plain file cut inside a record", "bad gzip CRC",
                                    "not WARC"])
def test_a_damaged_warc_keeps_its_whole_records_and_counts_the_rest(tmp_path: Path, good: Path, damage: str):
    bad, whole_records = _damaged_warc(tmp_path, damage)
    _one_error_line(_tag([bad], tmp_path / "fail", "fail"), f"{bad.name}: unreadable file",
                    *(["not a WARC file"] if damage == "not WARC" else []))
    result = _tag([good, bad], tmp_path / "skip", "skip")
    assert result.returncode == 0, result.stderr
    stats = _stats(tmp_path / "skip")
    assert stats["skipped_by_reason"] == {"unreadable_file": 1}
    out = docs_in(tmp_path / "skip")
    assert {d["id"] for d in GOOD} <= {d["id"] for d in out}
    assert sum(d["metadata"]["file_path"].endswith(bad.name) for d in out) == whole_records
    assert stats["documents_in"] == len(GOOD) + whole_records + 1


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_bytes(_jsonl(GOOD))
    return path


def test_an_output_folder_inside_the_input_folder_is_not_read(tmp_path: Path):
    big = tmp_path / "big"
    big.mkdir()
    (big / "a.jsonl").write_bytes(_jsonl(GOOD))
    first = _tag([big], big / "tagged", "fail")
    assert first.returncode == 0, first.stderr
    shard = (big / "tagged" / "00000.jsonl.gz").read_bytes()
    again = _tag([big], big / "tagged", "fail")  # the shard written the first time lies under `big` now
    assert again.returncode == 0, again.stderr
    assert "1 file(s) inside the output folder are not read" in _said(again)
    assert "cleared" not in again.stdout and (big / "tagged" / "00000.jsonl.gz").read_bytes() == shard
    assert _stats(big / "tagged")["documents_in"] == 3


def _recipe_reading(tmp_path: Path, paths: list[Path]) -> Path:
    """recipes/tiny.yaml with its source `web` read from `paths` instead of generated."""
    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml").read_text())
    recipe["corpus"]["sources"] = [{"name": "web", "paths": [str(p) for p in paths]}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_run_folder_inside_a_sources_input_folder_is_refused_before_any_work(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_bytes(_jsonl(GOOD))
    result = alignmix("run", str(_recipe_reading(tmp_path, [data])), "--out", str(data / "run"))
    _one_error_line(result, "key 'corpus.sources.0.paths.0'", "holds the run folder", "outside it")
    assert not (data / "run").exists()


LOCK_HOLDER = ("import sys, time; from pathlib import Path; from alignmix.run import run_folder_lock\n"
               "with run_folder_lock(Path(sys.argv[1]), file=sys.argv[2] or None):\n"
               "    print('held', flush=True); time.sleep(60)")


@pytest.mark.parametrize("command", ["tag", "stats", "eval"])
def test_a_second_command_into_a_held_output_is_refused_naming_the_first(tmp_path: Path, good: Path, command: str):
    folder, file, args, option = {
        "tag": (tmp_path / "out", "", ["tag", str(good), "--output", str(tmp_path / "out")], "--output"),
        "stats": (tmp_path, "page.html", ["stats", str(tmp_path), "--report", str(tmp_path / "page.html")],
                  "--report"),
        "eval": (tmp_path / "ev", "", ["eval", str(tmp_path), "--dataset", "builtin:tiny", "--out",
                                       str(tmp_path / "ev")], "--out"),
    }[command]
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder), file], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _one_error_line(alignmix(*args), f"{folder / file if file else folder}: another alignmix run is writing"
                        f" here (pid {holder.pid} on", f"give this one another {option}")
    finally:
        holder.kill()
        holder.wait()
    if command == "tag":  # freed by the holder's end, even by kill -9
        assert alignmix(*args).returncode == 0 and _stats(folder)["documents_in"] == 3


def test_a_newline_or_spaces_in_a_file_name_lose_nothing(tmp_path: Path):
    names = ["new\nline.jsonl", " spaced .jsonl"]
    for number, name in enumerate(names):
        (tmp_path / name).write_bytes(_jsonl([{"id": f"n{number}", "text": f"A robot wrote note {number}."}]))
    result = _tag([tmp_path / name for name in names], tmp_path / "out", "fail")
    assert result.returncode == 0, result.stderr
    assert _stats(tmp_path / "out")["documents_in"] == 2
    assert sorted(d["metadata"]["file_path"].rsplit("/", 1)[1] for d in docs_in(tmp_path / "out")) == sorted(names)


def test_a_file_named_twice_is_read_once_and_said_so(tmp_path: Path, good: Path):
    twice = [good, good, tmp_path, tmp_path / "." / "good.jsonl"]  # itself, a folder holding it, another spelling
    result = _tag(twice, tmp_path / "out", "fail")
    assert result.returncode == 0, result.stderr
    assert "3 file(s) named more than once" in _said(result) and "read once" in _said(result)
    assert _stats(tmp_path / "out")["documents_in"] == 3
    assert [d["id"] for d in docs_in(tmp_path / "out")] == ["d0", "d1", "d2"]


def test_a_recipe_naming_a_file_twice_tags_it_once(tmp_path: Path):
    from alignmix.corpus.stage import tag_stage
    from alignmix.recipe import load_recipe
    from alignmix.run import Runner

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_bytes(_jsonl(GOOD))
    recipe = load_recipe(_recipe_reading(tmp_path, [data, data / "a.jsonl"]))
    said: list[str] = []
    manifest = Runner(tmp_path / "run", [tag_stage(recipe, False)], {}, said.append).run()
    assert manifest["stages"][0]["counts"]["web"]["documents_in"] == 3
    assert any("web: 1 file(s) named more than once" in line for line in said), said


def test_ids_0_empty_and_null_survive_into_a_mixture(tmp_path: Path):
    from alignmix.corpus.mix import build_stage_mixture
    from alignmix.corpus.tokenizer import train_bpe
    from alignmix.jsonl import read_jsonl_gz
    from alignmix.recipe import TrainingStage

    rows = [{"id": i, "text": f"Document {i} tells of sheep, rain and a long walk to market number {i}."}
            for i in range(40)]
    rows += [{"id": "", "text": "An empty id on a row about boats."}, {"id": None, "text": "A null id about bread."},
             {"text": "No id at all, about lamps."}]
    path = tmp_path / "ids.jsonl"
    path.write_bytes(_jsonl(rows))
    result = _tag([path], tmp_path / "tagged", "fail")
    assert result.returncode == 0, result.stderr
    assert "3 missing, null or empty ids given the document's place (FILE/INDEX)" in _said(result)
    assert _stats(tmp_path / "tagged")["ids_assigned"] == 3
    ids = [d["id"] for d in docs_in(tmp_path / "tagged")]
    assert len(set(ids)) == len(rows) and "0" in ids and "ids.jsonl/40" in ids and "ids.jsonl/42" in ids
    shards = sorted((tmp_path / "tagged").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    stage = TrainingStage(name="pretrain", tokens=2_000, seq_len=64,
                          mixture=[{"source": "web", "share": "rest", "max_repetitions": 10}])
    manifest = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "mix", seed=1)
    assert manifest["sources"][0]["realised_tokens"] == 2_000


def test_a_rows_own_source_and_media_are_kept_aside_and_counted_in_both_modes(tmp_path: Path):
    rows = [{"id": "s", "text": "A Dolma row about rivers.", "source": "c4"},
            {"id": "m", "text": "A row with media about hills.", "media": [{"url": "http://x/1.png"}]},
            {"id": "k", "text": "A row whose metadata names a source.", "metadata": {"source": "wiki"}}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(_jsonl(rows))
    table = _parquet(tmp_path / "rows.parquet", {"id": ["p"], "text": ["A parquet row about clouds."],
                                                  "media": ["an image"], "source": ["pes2o"]})
    for mode in ("fail", "skip"):
        result = _tag([jsonl, table], tmp_path / mode, mode)
        assert result.returncode == 0, result.stderr
        assert _stats(tmp_path / mode)["documents_in"] == 4
        out = {d["id"]: d["metadata"] for d in docs_in(tmp_path / mode)}
        assert {m["source"] for m in out.values()} == {"corpus"}
        assert (out["s"]["row_source"], out["k"]["row_source"], out["p"]["row_source"]) == ("c4", "wiki", "pes2o")
        assert out["m"]["media"] == [{"url": "http://x/1.png"}] and out["p"]["media"] == "an image"
    stats = alignmix("stats", str(tmp_path / "skip"), "--report", str(tmp_path / "s.html"), "--json",
                     str(tmp_path / "s.json"))
    assert stats.returncode == 0, stats.stderr
    assert list(json.loads((tmp_path / "s.json").read_text())["sources"]) == ["corpus"]


def test_a_full_disk_while_tagging_is_one_error_line(tmp_path: Path):
    import random

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a 1 MB tmpfs cannot be mounted here: {mounted.stderr.decode().strip()}")
    try:
        rng = random.Random(0)
        words = (" ".join("".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(120))
                 for _ in range(3000))
        big = tmp_path / "big.jsonl.gz"  # about 2.6 MB of text that compresses to about 2 MB: more than the disk
        big.write_bytes(gzip.compress(_jsonl([{"id": str(i), "text": text} for i, text in enumerate(words)])))
        result = _tag([big], disk / "out", "fail")
        _one_error_line(result, f"{disk / 'out'}: No space left on device while tagging", "rerun")
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)
