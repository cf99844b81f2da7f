"""`alignmix train --stage S --from-step N|last`: keep what a streamed stage had trained on by a step checkpoint, so
that the stage continues from it with a changed mixture (`alignmix.outputs.Continuation`; the mixture side is
`alignmix.corpus.continued`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from alignmix.checkpoints.weights import load_torch_file
from alignmix.errors import AlignmixError
from alignmix.outputs import INDEX_DIR, MANIFEST_FILE, Continuation, MixtureIndex
from alignmix.train.step_checkpoints import hash_file, latest_whole_step, sha256_of


class ContinuationError(AlignmixError):
    """A mid-run change that cannot be made: the message names the stage, the step and what is missing."""


def step_checkpoint(stage_dir: Path, from_step: str, echo: Callable[[str], None]) -> Path:
    """The step folder `from_step` names (a number, or `last`: the latest whole one), checked against the sha256
    recorded when it was written."""
    steps = sorted(p.name for p in stage_dir.glob("step-*"))
    if from_step == "last":
        weights = latest_whole_step(stage_dir, "lit_model.pth", echo)
        if weights is None:
            raise ContinuationError(f"--from-step last: {stage_dir} has no whole step checkpoint to continue from")
        return weights.parent
    if not from_step.isdigit():
        raise ContinuationError(f"--from-step: '{from_step}' is neither a step number nor 'last'")
    folder = stage_dir / f"step-{int(from_step):08d}"
    weights = folder / "lit_model.pth"
    if not weights.is_file():
        raise ContinuationError(f"--from-step {from_step}: no {folder.name} in {stage_dir}; step checkpoints there:"
                                f" {', '.join(steps) or '(none)'}")
    if not hash_file(weights).is_file() or hash_file(weights).read_text().strip() != sha256_of(weights):
        raise ContinuationError(f"--from-step {from_step}: {weights} is not whole (unfinished, or changed since it was"
                                " written)")
    return folder


def keep_for_continuation(run_dir: Path, stage: str, from_step: str, echo: Callable[[str], None]) -> Continuation:
    """Keep the stage's mixture and step checkpoint in `RUN/continuations/<stage>/` (hard links), recording the
    samples training had consumed there; an identical continuation already kept is reused."""
    folder = step_checkpoint(run_dir / stage, from_step, echo)
    step = int(folder.name.removeprefix("step-"))
    mixture = run_dir / "mix" / stage
    manifest_file = mixture / MANIFEST_FILE
    if not manifest_file.is_file() or json.loads(manifest_file.read_text()).get("delivery") != "stream":
        raise ContinuationError(f"--from-step: stage '{stage}' was not trained on a streamed mixture ({mixture});"
                                " a mid-run change keeps the samples training read, known only with mixing.delivery:"
                                " stream")
    data = load_torch_file(folder / "lit_model.pth", mmap=True).get("train_dataloader", {})
    if data.get("passes") != 0 or "samples" not in data:
        raise ContinuationError(f"--from-step {step}: its data state {data} is not within the first pass over a"
                                " streamed mixture")
    continuation = Continuation.of(run_dir, stage)
    checkpoint_sha256 = hash_file(folder / "lit_model.pth").read_text().strip()
    if continuation.exists() and continuation.record["from_step"] == step and \
            continuation.digest()["checkpoint"] == checkpoint_sha256:
        return continuation
    partial = continuation.folder.with_name(continuation.folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copytree(MixtureIndex.of(mixture).folder, partial / "mixture" / INDEX_DIR, copy_function=_link)
    shutil.copyfile(manifest_file, partial / "mixture" / MANIFEST_FILE)
    shutil.copytree(folder, partial / "step", copy_function=_link)
    (partial / "continuation.json").write_text(json.dumps({"stage": stage, "from_step": step,
                                                           "samples": int(data["samples"])}, indent=2))
    shutil.rmtree(continuation.folder, ignore_errors=True)
    partial.rename(continuation.folder)
    echo(f"{stage}: keeping the first {step:,} steps ({data['samples']:,} samples) of the earlier mixture;"
         " the rest is re-planned")
    return continuation


def _link(source: str, target: str) -> None:
    Path(target).hardlink_to(source)
