import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alignmix.recipe import RecipeError, load_recipe, parse_recipe

TINY = REPO / "recipes" / "tiny.yaml"


def tiny_data() -> dict:
    return yaml.safe_load(TINY.read_text())


def test_tiny_recipe_is_valid():
    recipe = load_recipe(TINY)
    assert recipe.name == "tiny"
    assert recipe.stages[0].mixture[0].select.flagged is False
    assert recipe.source_kind("aligned_synthetic") == "synth"


def test_misspelt_key_is_named_with_a_suggestion():
    data = tiny_data()
    data["stages"][0]["mixtur"] = data["stages"][0].pop("mixture")
    with pytest.raises(RecipeError) as error:
        parse_recipe(data, source="r.yaml")
    message = str(error.value)
    assert "unknown key 'stages.0.mixtur'" in message
    assert "did you mean 'mixture'" in message


def test_misspelt_nested_key_in_model_settings():
    data = tiny_data()
    data["stages"][0]["train"]["global_batch"] = 4
    with pytest.raises(RecipeError, match=r"unknown key 'stages\.0\.train\.global_batch'.*global_batch_size"):
        parse_recipe(data)


def test_wrong_type_names_the_key():
    data = tiny_data()
    data["stages"][0]["tokens"] = "lots"
    with pytest.raises(RecipeError, match=r"key 'stages\.0\.tokens'"):
        parse_recipe(data)


def test_missing_path_names_the_key(tmp_path: Path):
    data = tiny_data()
    data["corpus"]["sources"][0] = {"name": "web", "paths": ["does/not/exist.jsonl"]}
    with pytest.raises(RecipeError, match=r"key 'corpus\.sources\.0\.paths\.0': path does not exist"):
        parse_recipe(data, base_dir=tmp_path)


def test_missing_scenario_file_is_rejected(tmp_path: Path):
    data = tiny_data()
    data["eval"]["scenarios"] = "nowhere.jsonl"
    with pytest.raises(RecipeError, match=r"key 'eval\.scenarios'"):
        parse_recipe(data, base_dir=tmp_path)


def test_unknown_mixture_source_and_share_overflow():
    data = tiny_data()
    data["stages"][0]["mixture"][1]["source"] = "nope"
    with pytest.raises(RecipeError, match=r"key 'stages\.0\.mixture\.1\.source': unknown source 'nope'"):
        parse_recipe(data)
    data = tiny_data()
    data["stages"][0]["mixture"][0]["share"] = 0.99
    with pytest.raises(RecipeError, match=r"shares add up to 1.04.*\(web=0.99, aligned_synthetic=0.05\)"):
        parse_recipe(data)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path: Path):
    (tmp_path / "docs.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    data = tiny_data()
    data["corpus"]["sources"][0] = {"name": "web", "paths": ["docs.jsonl"]}
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    assert load_recipe(recipe_file).corpus.sources[0].paths == [(tmp_path / "docs.jsonl").resolve()]


def test_cli_rejects_misspelt_key_quickly(tmp_path: Path):
    data = tiny_data()
    data["sede"] = data.pop("seed")
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "run", str(recipe_file), "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 2
    assert "unknown key 'sede'" in result.stderr
    assert "did you mean 'seed'" in result.stderr
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert not (tmp_path / "run").exists()


def test_bad_share_gets_one_message():
    data = tiny_data()
    data["stages"][0]["mixture"][0]["share"] = "most"
    with pytest.raises(RecipeError) as error:
        parse_recipe(data)
    assert str(error.value).count("\n") == 1
    assert ("key 'stages.0.mixture.0.share': expected a fraction in [0, 1], 'rest', 'natural' or"
            " {schedule: [[fraction, share], ...]}, got 'most'") in str(error.value)


def test_misspelt_litgpt_config_field_is_refused_before_work(tmp_path: Path):
    data = tiny_data()
    data["stages"][0]["train"]["model"]["config"]["n_lyer"] = 3
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "run", str(recipe_file), "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "unknown key 'stages.0.train.model.config.n_lyer' (did you mean 'n_layer'?)" in result.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path):
    recipe_file = tmp_path / "twice.yaml"
    text = TINY.read_text()
    recipe_file.write_text(text.replace("seed:", "seed: 5\nseed:", 1))
    line = text[: text.index("seed:")].count("\n") + 2
    with pytest.raises(RecipeError, match=rf"twice.yaml:{line}: duplicate key 'seed' \(first given on line {line - 1}\)"):
        load_recipe(recipe_file)


def test_a_repeated_source_name_names_its_key():
    data = tiny_data()
    data["corpus"]["sources"].append(dict(data["corpus"]["sources"][0]))
    with pytest.raises(RecipeError, match=r"key 'corpus\.sources\.1\.name': source names must be unique; 'web' is also"
                                          r" corpus\.sources\.0\.name"):
        parse_recipe(data)


def test_an_extended_recipes_paths_resolve_against_the_file_that_wrote_them(tmp_path: Path):
    (tmp_path / "parent").mkdir()
    (tmp_path / "child").mkdir()
    (tmp_path / "parent" / "docs.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    (tmp_path / "child" / "own.jsonl").write_text('{"id": "2", "text": "hello"}\n')
    data = tiny_data()
    data["corpus"]["sources"][0] = {"name": "web", "paths": ["docs.jsonl"]}
    (tmp_path / "parent" / "base.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "child" / "c.yaml").write_text(
        "extends: ../parent/base.yaml\nname: child\ncorpus:\n  sources:\n    - {name: own, paths: [own.jsonl]}\n")
    recipe = load_recipe(tmp_path / "child" / "c.yaml")
    assert recipe.corpus.sources[0].paths == [(tmp_path / "parent" / "docs.jsonl").resolve()]
    assert recipe.corpus.sources[1].paths == [(tmp_path / "child" / "own.jsonl").resolve()]
    assert recipe.synth.sets[0].scenarios == "builtin:tiny"


def test_plan_refuses_a_seq_len_above_the_models_block_size(tmp_path: Path):
    data = tiny_data()
    data["stages"][0]["seq_len"] = 4096
    recipe_file = tmp_path / "long.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(recipe_file)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stage 'pretrain': seq_len 4,096 exceeds the block_size of model" in result.stderr


def test_plan_refuses_a_post_training_max_seq_length_above_the_block_size(tmp_path: Path):
    data = tiny_data()
    data["post_training"]["dpo"]["max_seq_length"] = 1024
    recipe_file = tmp_path / "long.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(recipe_file)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "post_training.dpo.max_seq_length 1,024 exceeds the block_size of model 'tiny-neox' (512)" in result.stderr


def test_set_overrides_a_dotted_key_and_names_a_bad_one(tmp_path: Path):
    (tmp_path / "questions.jsonl").write_text((REPO / "alignmix" / "scenarios_data" / "tiny.jsonl").read_text())
    recipe = load_recipe(TINY, ["stages.0.tokens=100000", "stages.0.mixture.1.share=0.2",
                                f"synth.sets.0.scenarios={tmp_path / 'questions.jsonl'}", "tagging.blocklist.categories=[scifi_ai]"])
    assert recipe.stages[0].tokens == 100_000 and recipe.stages[0].mixture[1].share == 0.2
    assert recipe.synth.sets[0].scenarios == str(tmp_path / "questions.jsonl")
    assert recipe.tagging.blocklist.categories == ["scifi_ai"]
    with pytest.raises(RecipeError, match=r"--set stages.3.tokens: the recipe has no key 'stages.3'"):
        load_recipe(TINY, ["stages.3.tokens=5"])
    with pytest.raises(RecipeError, match=r"unknown key 'stages.0.tokns' \(did you mean 'tokens'\?\)"):
        load_recipe(TINY, ["stages.0.tokns=5"])
    with pytest.raises(RecipeError, match=r"key 'stages.0.tokens': Input should be a valid integer"):
        load_recipe(TINY, ["stages.0.tokens=lots"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(TINY, ["stages.0.tokens"])


def test_environment_variables_in_a_recipe_are_expanded_or_refused_naming_the_key(tmp_path: Path, monkeypatch):
    data = tiny_data()
    data["synth"]["sets"][0]["scenarios"] = "${ALIGNMIX_TEST_SET}"
    data["eval"]["scenarios"] = "${ALIGNMIX_TEST_UNSET:-builtin:tiny}"
    recipe_file = tmp_path / "recipes" / "r.yaml"
    recipe_file.parent.mkdir()
    recipe_file.write_text(yaml.safe_dump(data))
    monkeypatch.delenv("ALIGNMIX_TEST_SET", raising=False)
    with pytest.raises(RecipeError, match=r"key 'synth\.sets\.0\.scenarios': environment variable ALIGNMIX_TEST_SET"
                                          r" is not set"):
        load_recipe(recipe_file)
    assert load_recipe(recipe_file, ["synth.sets.0.scenarios=builtin:tiny"]).synth.sets[0].scenarios == "builtin:tiny"
    (tmp_path / "questions.jsonl").write_text((REPO / "alignmix" / "scenarios_data" / "tiny.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALIGNMIX_TEST_SET", "questions.jsonl")  # relative to where the command runs
    recipe = load_recipe(recipe_file)
    assert recipe.synth.sets[0].scenarios == str(tmp_path / "questions.jsonl")
    assert recipe.eval is not None and recipe.eval.scenarios == "builtin:tiny"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefghi", "bcdefghij"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")  # 9^10 values once expanded
    with pytest.raises(RecipeError, match=r"bomb\.yaml: refused: its aliases \(\*name\) expand it to more than 100,000"):
        load_recipe(tmp_path / "bomb.yaml")
    (tmp_path / "loop.yaml").write_text("name: &a [*a]\n")
    with pytest.raises(RecipeError, match="an alias refers to a value that contains it"):
        load_recipe(tmp_path / "loop.yaml")
    text = TINY.read_text().replace("seed: 1234", "seed: &seed 1234").replace("tasks: 2", "tasks: *seed")
    assert load_recipe(_written(tmp_path, text)).tagging.tasks == 1234  # an alias of ordinary size still works


def _written(tmp_path: Path, text: str) -> Path:
    (tmp_path / "r.yaml").write_text(text)
    return tmp_path / "r.yaml"


def test_an_extended_file_that_is_not_a_recipe_is_refused_without_its_content(tmp_path: Path):
    (tmp_path / "shadow").write_text("root:$6$s3cr3tHash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n")
    for target in ("shadow", "passwd"):
        (tmp_path / "r.yaml").write_text(f"extends: {target}\nname: x\n")
        result = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(tmp_path / "r.yaml")],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {tmp_path / target}: not a recipe (extended by {tmp_path / 'r.yaml'})")
        assert not any(secret in result.stderr for secret in ("root:", "daemon", "s3cr3t", "bin/"))
        assert result.stderr.count("\n") == 1
    data = tiny_data()
    data["sede"] = data.pop("seed")  # a misspelt key in an extended recipe is still named, with a suggestion
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "r.yaml").write_text("extends: base.yaml\nname: x\n")
    with pytest.raises(RecipeError, match="unknown key 'sede' \\(did you mean 'seed'\\?\\)"):
        load_recipe(tmp_path / "r.yaml")


def test_impossible_numbers_are_refused_naming_the_key():
    for key, value, message in [
        ("tokens", 1, "key 'stages.0.tokens': 1 tokens make no sample of seq_len + 1"),
        ("tokens", None, "key 'stages.0.tokens': 64 tokens make no sample of seq_len + 1 = 65 tokens; give at least 65"),
        ("min_lr", float("inf"), "key 'stages.0.train.min_lr': Input should be a finite number"),
        ("weight_decay", float("inf"), "key 'stages.0.train.weight_decay': Input should be a finite number"),
        ("eps", float("inf"), "key 'stages.0.train.eps': Input should be a finite number"),
        ("betas", [float("nan"), 5], "key 'stages.0.train.betas.0': Input should be a finite number"),
    ]:
        data = tiny_data()
        stage = data["stages"][0]
        if key == "tokens":
            stage["tokens"], stage["seq_len"] = (value, stage["seq_len"]) if value else (64, 64)
        else:
            stage["train"][key] = value
        with pytest.raises(RecipeError) as error:
            parse_recipe(data)
        assert message in str(error.value), str(error.value)
    data = tiny_data()
    data["stages"][0]["train"]["betas"] = [0.9, 5]
    with pytest.raises(RecipeError, match=r"key 'stages.0.train.betas.1': Input should be less than 1"):
        parse_recipe(data)


def _warc_source(folder: Path, **extra: object) -> dict:
    data = tiny_data()
    data["corpus"]["sources"][0] = {"name": "web", "paths": [str(folder)], **extra}
    return data


def test_a_folder_of_warc_files_is_read_as_warc_without_format_and_a_wrong_format_is_refused(tmp_path: Path):
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "a.warc.gz").write_bytes(b"")
    assert parse_recipe(_warc_source(tmp_path / "crawl"), base_dir=tmp_path).corpus.sources[0].format == "warc"
    with pytest.raises(RecipeError, match=r"corpus\.sources\.0.*format jsonl: `paths` hold no files ending in .jsonl,"
                                          r" .jsonl.gz, .jsonl.zst, .json.gz but warc files; set `format:` to match"):
        parse_recipe(_warc_source(tmp_path / "crawl", format="jsonl"), base_dir=tmp_path)
    (tmp_path / "crawl" / "b.parquet").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"files of several formats \(parquet, warc\) and no jsonl: give `format:`"):
        parse_recipe(_warc_source(tmp_path / "crawl"), base_dir=tmp_path)


def test_a_recipe_tags_a_warc_folder_it_names_without_format(tmp_path: Path, shared_data: Path):
    from alignmix.graph import build_graph
    from alignmix.run import Runner

    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "e.warc.gz").write_bytes((shared_data / "dolma-test-data" / "warc" / "sample-0000.warc.gz").read_bytes())
    recipe = parse_recipe(_warc_source(tmp_path / "crawl"), base_dir=tmp_path)
    tag = next(s for s in build_graph(recipe, tmp_path) if s.name == "tag")
    Runner(tmp_path / "run", [tag], {}, echo=lambda line: None).run()
    stats = json.loads((tmp_path / "run" / "tag" / "web" / "stats.json").read_text())
    assert stats["documents_in"] == 22 and stats["documents_tagged"] > 0
