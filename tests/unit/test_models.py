"""Models built from code: the random SmolLM2-shaped model has SmolLM2-135M's exact size."""

import os

import torch

from rlxf.models.loading import load_causal_lm, load_tokenizer
from rlxf.parallel.distributed import default_device


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


def test_a_model_folder_built_empty_has_the_loaded_models_shapes_and_settings_and_no_weights(tmp_path):
    """What a sharded rank other than 0 builds: from the folder's config alone, on the meta device."""
    from rlxf.models import is_empty, load_reward_model

    saved = load_causal_lm("tiny-llama", seed=1)
    saved.generation_config.max_new_tokens = 7  # only generation_config.json says so
    saved.save_pretrained(tmp_path)
    loaded, empty = load_causal_lm(str(tmp_path)), load_causal_lm(str(tmp_path), device="meta")
    assert is_empty(empty) and not is_empty(loaded)
    assert all(t.is_meta for t in empty.state_dict().values())
    shapes = {name: (t.shape, t.dtype) for name, t in loaded.state_dict().items()}
    assert {name: (t.shape, t.dtype) for name, t in empty.state_dict().items()} == shapes
    assert empty.lm_head.weight is empty.model.embed_tokens.weight  # still tied
    assert empty.generation_config.max_new_tokens == 7
    scorer = load_reward_model(str(tmp_path), device="meta")
    assert is_empty(scorer) and scorer.score.out_features == 1


def test_with_lora_only_the_adapters_are_pushed_to_rollout_workers():
    from rlxf.config import LoraSection, ModelSection
    from rlxf.models.state import trainable_state
    from rlxf.recipes.common import build_policy

    policy, _ = build_policy(ModelSection(name="tiny-llama", lora=LoraSection(rank=4)), seed=0)
    pushed = trainable_state(policy)  # what RayRolloutPool sends before each generation
    assert pushed and all("lora_" in name for name in pushed)
    adapters = sum(t.numel() for t in pushed.values())
    assert adapters < sum(p.numel() for p in policy.parameters()) / 5


def test_merged_lora_weights_are_w_plus_scaled_ba_and_give_the_adapted_models_outputs():
    from rlxf.config import LoraSection, ModelSection
    from rlxf.models.lora import merged_lora_weights
    from rlxf.recipes.common import build_policy

    section = ModelSection(name="tiny-llama", lora=LoraSection(rank=4, alpha=8))
    policy, _ = build_policy(section, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():  # trained adapters: B is zero at the start
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    merged = merged_lora_weights(policy)
    q = policy.get_base_model().model.layers[0].self_attn.q_proj
    by_hand = q.base_layer.weight + (8 / 4) * q.lora_B["default"].weight @ q.lora_A["default"].weight
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], by_hand, atol=1e-6)
    assert all(".base_layer" not in name and "lora_" not in name for name in merged)

    plain = load_causal_lm("tiny-llama", seed=0)  # the same base weights
    plain.load_state_dict(merged, strict=False)
    tokens = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        assert torch.allclose(plain(tokens).logits, policy(tokens).logits, atol=1e-5)
    assert not torch.equal(policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, by_hand)


def test_adapter_weights_are_what_a_peft_adapter_folder_holds(tmp_path):
    """What a vLLM engine serving the adapter is sent: the file peft writes, names and values."""
    from safetensors.torch import load_file

    from rlxf.models.lora import adapter_weights, apply_lora

    policy = apply_lora(load_causal_lm("tiny-llama"), rank=4, alpha=8)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    policy.save_pretrained(tmp_path)
    saved, sent = load_file(tmp_path / "adapter_model.safetensors"), adapter_weights(policy)
    assert sorted(sent) == sorted(saved) and len(sent) == 2 * 7 * 2  # A and B of 7 layers x 2 blocks
    assert all(torch.equal(sent[name], saved[name]) for name in saved)
