"""Step checkpoints are hashed when litgpt writes them and checked before a resume; weights that are not finite are
refused; a resume after the run folder moved re-anchors LitData's path. (The whole path, killed and moved, runs
in tests/test_tiny_run.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignmix.checkpoints.weights import ModelFileError
from alignmix.train.pretrain import keep_model_weights_only, reanchor_data_state, usable_step_checkpoint
from alignmix.train.step_checkpoints import write_sha256


def write_step(out_dir: Path, step: int, data_dir: str = "/old/place/mix/pretrain", hashed: bool = True) -> Path:
    folder = out_dir / f"step-{step:08d}"
    folder.mkdir(parents=True)
    state = {"model": {"w": torch.full((64, 64), float(step))}, "iter_num": step,
             "train_dataloader": {"dataset": {"input_dir_path": data_dir, "shuffle": True}, "current_epoch": 1}}
    torch.save(state, folder / "lit_model.pth")
    if hashed:
        write_sha256(folder / "lit_model.pth")
    return folder


def test_the_latest_whole_step_checkpoint_is_chosen_and_damaged_or_unfinished_ones_removed(tmp_path: Path):
    said: list[str] = []
    write_step(tmp_path, 5)
    write_step(tmp_path, 10)
    damaged = write_step(tmp_path, 15)
    write_step(tmp_path, 20, hashed=False)  # killed before its hash was written
    weights = damaged / "lit_model.pth"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])  # size kept
    weights.write_bytes(bytes(data))
    assert usable_step_checkpoint(tmp_path, said.append) == tmp_path / "step-00000010"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000005", "step-00000010"]
    assert said == [f"warning: {tmp_path / 'step-00000020'}: not finished; removed, resuming from the checkpoint"
                    " before it",
                    f"warning: {damaged}: changed since it was written (its sha256 differs); removed, resuming from"
                    " the checkpoint before it"]
    assert usable_step_checkpoint(tmp_path / "none", said.append) is None


def test_non_finite_weights_are_refused_on_resume_and_at_the_end(tmp_path: Path):
    step = write_step(tmp_path, 5)
    state = torch.load(step / "lit_model.pth", weights_only=True)
    state["model"]["w"][3, :959 // 64] = float("nan")
    torch.save(state, step / "lit_model.pth")
    write_sha256(step / "lit_model.pth")  # hashed as written: the NaNs came from training
    with pytest.raises(ModelFileError, match=r"step-00000005/lit_model.pth: 14 weights are NaN or infinite"):
        usable_step_checkpoint(tmp_path, print)
    final = tmp_path / "final"
    final.mkdir()
    torch.save({"model": {"w": torch.tensor([1.0, float("inf")])}, "iter_num": 9}, final / "lit_model.pth")
    with pytest.raises(ModelFileError, match="final/lit_model.pth: 1 weights are NaN or infinite.*training diverged"):
        keep_model_weights_only(final / "lit_model.pth")


def test_a_moved_run_folder_re_anchors_the_data_state_and_its_hash(tmp_path: Path):
    said: list[str] = []
    step = write_step(tmp_path / "pretrain", 5)
    data_dir = tmp_path / "mix" / "pretrain"
    data_dir.mkdir(parents=True)
    reanchor_data_state(step, data_dir, said.append)
    state = torch.load(step / "lit_model.pth", weights_only=True)
    assert state["train_dataloader"]["dataset"] == {"input_dir_path": str(data_dir.resolve()), "shuffle": True}
    assert torch.equal(state["model"]["w"], torch.full((64, 64), 5.0)) and state["iter_num"] == 5
    assert said == [f"  step-00000005: the run folder has moved; its data state now reads {data_dir.resolve()}"]
    assert usable_step_checkpoint(tmp_path / "pretrain", said.append) == step  # the new hash was recorded
    reanchor_data_state(step, data_dir, said.append)
    assert len(said) == 1  # already where the data is: nothing rewritten
