from pathlib import Path

from alignmix.report.html import final_losses


def test_final_losses_reads_litgpt_and_post_training_columns(tmp_path: Path):
    litgpt = tmp_path / "litgpt.csv"
    litgpt.write_text("iter,loss,step,val_loss\n2,6.5,1,\n4,6.1,2,\n4,,2,6.3\n")
    post = tmp_path / "post.csv"
    post.write_text("step,train_loss,reward_margin\n1,0.69,0.0\n2,0.41,0.8\n")
    assert final_losses(litgpt) == {"train_loss": 6.1, "val_loss": 6.3}
    assert final_losses(post) == {"train_loss": 0.41}
