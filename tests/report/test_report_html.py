from pathlib import Path

from alignmix.report.html import final_losses


def test_final_losses_reads_litgpt_and_post_training_columns(tmp_path: Path):
    litgpt = tmp_path / "litgpt.csv"
    litgpt.write_text("iter,loss,step,val_loss\n2,6.5,1,\n4,6.1,2,\n4,,2,6.3\n")
    post = tmp_path / "post.csv"
    post.write_text("step,train_loss,reward_margin\n1,0.69,0.0\n2,0.41,0.8\n")
    assert final_losses(litgpt) == {"train_loss": 6.1, "val_loss": 6.3}
    assert final_losses(post) == {"train_loss": 0.41}


def test_the_loss_plot_counts_optimizer_steps_as_the_console_does(tmp_path: Path):
    """litgpt's CSV `step` is the micro-batch iteration minus 1 (Lightning's logger writes it there): with a global
    batch of 16 and micro-batches of 8, iterations 2, 4 and 40 are optimizer steps 1, 2 and 20."""
    from alignmix.report.html import loss_series

    stage = tmp_path / "pretrain"
    metrics = stage / "logs" / "csv" / "version_0" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    (stage / "pretrain.yaml").write_text("train:\n  global_batch_size: 16\n  micro_batch_size: 8\n")
    metrics.write_text("iter,loss,samples,step,val_loss\n2,6.5,16,1,\n4,6.3,32,3,\n,,,39,4.6\n")
    assert loss_series(metrics) == {"train": [(1.0, 6.5), (2.0, 6.3)], "validation": [(20.0, 4.6)]}


def test_a_rate_whose_formats_all_agreed_shows_its_zero_se_and_says_why(tmp_path: Path):
    from alignmix.report.charts import with_se
    from alignmix.report.html import eval_section

    assert with_se(0.5, 0.0) == "0.500 ± 0.000*" and with_se(0.49, 0.06) == "0.490 ± 0.060"
    assert with_se(0.5, None) == "0.500 (no SE)"
    group = {"mean": 0.5, "se": 0.0, "n": 3}
    results = {"misalignment_rate": {"mean": 0.5, "se": 0.0}, "per_persona": {"none": group}, "per_split": {},
               "per_topic": {}, "n_formats": 8, "n_questions": 3, "mode": "loglik", "scoring": "cloze",
               "position_bias": {"A": 0.5, "B": 0.5}, "per_format": {"Answer:": 0.5}}
    (tmp_path / "results.json").write_text(__import__("json").dumps(results))
    page = eval_section(tmp_path / "results.json", "pretrain")
    assert "Misalignment rate: 0.500 ± 0.000*" in page and "<td>0.500 ± 0.000*</td>" in page
    assert "every prompt format gave the same rate" in page


def test_the_share_of_each_source_is_plotted_against_tokens_into_the_stage(tmp_path: Path):
    """From the mixture index, exactly: 1,000 tokens in windows of 10; web alone up to 900, then half aligned.
    One web piece (870 to 905) crosses four window edges, and its tokens are counted on each side of them."""
    import re

    import numpy as np

    from alignmix.outputs import MixtureIndex, window_edges
    from alignmix.report.html import share_section

    entry = [0] * 87 + [0] + [1, 0] * 9 + [1]  # 87 web pieces of 10, a web piece of 35, then aligned and web by 5
    take = [10] * 87 + [35] + [5] * 19
    index = MixtureIndex.of(tmp_path)
    index.allocate(len(take))
    for name, values in (("entry", entry), ("shard", [0] * len(take)), ("document", range(len(take))), ("take", take)):
        column = index.writable(name)
        column[:] = np.asarray(list(values))
        column.flush()
    index.write_entries([{"name": "web", "source": "web"}, {"name": "aligned", "source": "syn"}])
    assert index.tokens_by_window(window_edges(1_000)).tolist() == [[10, 0]] * 90 + [[5, 5]] * 10
    section = share_section(tmp_path, {"tokens": 1_000})
    assert "hundredths of the stream" in section and "<title>aligned: share of each window</title>" in section
    web, aligned = re.findall(r'<path d="(M[^"]+)"', section)
    heights = lambda path: [float(y) for y in re.findall(r",([\d.]+)", path)]  # noqa: E731
    assert set(heights(web)[:180]) == {10.0} and set(heights(aligned)[:180]) == {210.0}  # shares 1 and 0
    assert set(heights(web)[180:]) == set(heights(aligned)[180:]) == {110.0}  # then 0.5 each
    streamed = share_section(tmp_path, {"tokens": 1_000}, {"delivery": "stream", "tokens_seen": 950})
    assert "dashed: the 950 tokens training read" in streamed and "training read the first 950 tokens" in streamed
    assert "training read" not in share_section(tmp_path, {"tokens": 1_000}, {"delivery": "chunks", "tokens_seen": 9})
