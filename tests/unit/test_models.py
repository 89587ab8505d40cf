"""Models built from code: the random SmolLM2-shaped model has SmolLM2-135M's exact size."""

import os

import torch

from rlxf.models.loading import default_device, load_causal_lm, load_tokenizer


def test_random_smollm2_has_smollm2_135m_parameter_count():
    model = load_causal_lm("random-smollm2-135m")
    # embeddings 49152 x 576 (tied with the head) = 28,311,552
    # per layer: q 576x576 + k, v 576x192 each + o 576x576 = 884,736; MLP 3 x 576 x 1536 = 2,654,208;
    #   two norms 1,152 -> 3,540,096; x 30 layers = 106,202,880; final norm 576
    assert sum(p.numel() for p in model.parameters()) == 28_311_552 + 106_202_880 + 576
    assert load_tokenizer("random-smollm2-135m").eos_token_id == model.generation_config.eos_token_id


def test_rlxf_device_chooses_where_models_run(monkeypatch):
    monkeypatch.setenv("RLXF_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    assert next(load_causal_lm("tiny-llama").parameters()).device == torch.device("cpu")
    monkeypatch.delenv("RLXF_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected and os.environ.get("RLXF_DEVICE") is None


def test_with_lora_only_the_adapters_are_pushed_to_rollout_workers():
    from rlxf.config import LoraSection, ModelSection
    from rlxf.recipes.common import build_policy
    from rlxf.train.checkpoint import trainable_state

    policy, _ = build_policy(ModelSection(name="tiny-llama", lora=LoraSection(rank=4)), seed=0)
    pushed = trainable_state(policy)  # what RayRolloutPool sends before each generation
    assert pushed and all("lora_" in name for name in pushed)
    adapters = sum(t.numel() for t in pushed.values())
    assert adapters < sum(p.numel() for p in policy.parameters()) / 5
