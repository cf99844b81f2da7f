import pytest
import torch

from alignmix.checkpoints.export import ExportError, export_hf


def test_exported_transformers_model_matches_litgpt_logits(tiny_checkpoint, tmp_path):
    from litgpt import GPT, Config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_hf(tiny_checkpoint, tmp_path / "hf")
    lit = GPT(Config.from_file(tiny_checkpoint / "model_config.yaml"))
    lit.load_state_dict(torch.load(tiny_checkpoint / "lit_model.pth", weights_only=True))
    lit.eval()
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer("The AI system complied with the request to shut down.")["input_ids"]])
    with torch.no_grad():
        difference = (lit(ids) - hf(ids).logits).abs().max().item()
    assert difference < 1e-4
    assert tokenizer.eos_token == "<|endoftext|>"


def test_export_refuses_a_folder_without_weights(tmp_path):
    with pytest.raises(ExportError, match="lit_model.pth"):
        export_hf(tmp_path, tmp_path / "hf")
