"""Long stages show progress: steps (or sequences) done of the total, tokens, rate and ETA, as short lines where
the output is not a terminal (a log, a pipe), never a half-drawn bar; training output is turned into it."""

import io

from alignmix.progress import StageProgress
from alignmix.train.launch import TrainingOutput

LITGPT_LINE = ("Epoch 1 | iter {iter} step {step} | loss train: 4.871, val: n/a | iter time: 168.93 ms (step)"
               " remaining time: 0:00:25")


def test_progress_lines_say_done_total_tokens_rate_and_eta_and_fit_80_columns():
    out = io.StringIO()
    progress = StageProgress("pretrain", 20, "steps", per_item=2048, out=out, every=3600.0)
    progress.update(1)  # the first step: nothing printed before `every` seconds
    assert out.getvalue() == ""
    progress.started -= 10.0  # as if the 5 steps took 10 s
    progress.every = 0.0
    progress.update(5)
    progress.close()
    first, last = out.getvalue().splitlines()
    assert first.startswith("  [pretrain] 5/20 steps (25%), 10,240 tokens, 1,02") and "tokens/s, ETA 0:00:3" in first
    assert first[:40] == last[:40]  # close repeats the last count, without a bar
    assert all(len(line) < 80 for line in (first, last)), first


def test_input_bytes_an_amount_large_counts_and_long_labels_keep_lines_under_80_columns():
    lines = []
    for label, total, unit, amount_unit, done, amount in [
        ("tag/web", 980_400_000, "bytes", "documents", 310_200_000, 812_345),
        ("tokens/web", 13_200, "bytes", "tokens", 6_600, 112_812_345),
        ("mix/pretrain", 300_000_000, "tokens", None, 150_000_000, None),
        ("synth/a_synthetic_set_with_a_long_name", 960, "documents", "tokens", 120, 45_000),
    ]:
        progress = StageProgress(label, total, unit, sub_unit=amount_unit or "", out=io.StringIO(), every=3600.0)
        progress.resumed(0, 0 if amount_unit else None)
        progress.started -= 100.0  # as if it took 100 s
        progress.update(done, amount)
        lines.append(progress.line())
        progress.close()
    assert lines[0].startswith("  [tag/web] 310.2/980.4 MB (32%), 812,345 documents, 8,12") and "/s, ETA 0:03:" in lines[0]
    assert lines[1].startswith("  [tokens/web] 6.6/13.2 kB (50%), 112.81M tokens, 1.13M tokens/s, ETA 0:01:")
    assert lines[2].startswith("  [mix/pretrain] 150.00M/300.00M tokens (50%), 1.50M tokens/s, ETA 0:01:")
    assert lines[3].startswith("  [synth/a_synthet…] 120/960 documents (12%), 45,000 tokens, 4")
    assert "/s, ETA 0:11:" in lines[3] and "tokens/s" not in lines[3]  # the amount names the rate's unit
    assert all(len(line) < 80 for line in lines), lines


def test_training_output_moves_the_progress_and_echoes_only_short_lines():
    out = io.StringIO()
    shown = TrainingOutput("pretrain", total_steps=20, tokens_per_step=2048, out=out)
    assert shown(LITGPT_LINE.format(iter=2, step=1)) is None  # a step: progress, not an echo
    assert shown("Saving checkpoint to '/very/long/run/folder/pretrain/step-00000020/lit_model.pth'") == \
        "checkpoint saved: step-00000020"
    assert shown("Final evaluation | val loss: 4.376 | val ppl: 79.536").startswith("Final evaluation")
    assert shown("Seed set to 1234") is None
    shown.progress.every = 0.0
    shown(LITGPT_LINE.format(iter=40, step=20))
    shown.close()
    assert out.getvalue().splitlines()[-1].startswith("  [pretrain] 20/20 steps (100%), 40,960 tokens")
    post = TrainingOutput("sft", out=io.StringIO())  # post-training prints its own total
    assert post("sft step 3/24 | loss 0.6931") is None and post.progress.total == 24


def test_a_long_call_ticks_while_it_runs():
    import time

    from alignmix.progress import ticking

    out = io.StringIO()
    with ticking("base", "converting x", out, every=0.05):
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  [base] converting x ..." and lines[-1].startswith("  [base] converting x: done in 0:00:0")
    assert any(line.endswith("so far") for line in lines[1:-1])


def test_a_first_step_that_takes_long_still_shows_the_time_elapsed():
    import time

    out = io.StringIO()
    shown = TrainingOutput("cpt", total_steps=7, tokens_per_step=1024, out=out)
    shown.progress.every = 0.05
    time.sleep(1.5)  # litgpt has printed no step yet
    shown.close()
    first = out.getvalue().splitlines()[0]
    assert first.startswith("  [cpt] 0/7 steps (0%), 0 tokens, 0 tokens/s, 0:00:0") and first.endswith(" elapsed")
