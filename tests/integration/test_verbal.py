"""C3PO (Stephan et al. 2024) on a tiny model: the anchor term of DPO by hand, and the pipeline's
intended effect — the feedback is learned in scope, and near-scope prompts, whose original answers are
anchored, take much less of it than when nothing anchors them (the overgeneralization C3PO prevents)."""

import json
import math

import pytest

from rlxf.config import ConfigError, load_config
from rlxf.data.templating import ChatEncoder
from rlxf.models import load_causal_lm, load_tokenizer
from rlxf.models.packing import use_packed_attention
from rlxf.pipelines.verbal import C3POConfig, run_c3po
from rlxf.recipes.common import as_groups, group_logps
from rlxf.recipes.dpo import DPOConfig, train_dpo
from tests.integration.test_recipes_learn import TINY_DATA, train_rows


def test_anchor_rows_add_their_weighted_mean_token_nll_to_the_dpo_loss(tmp_path, small_hh):
    # 5 rows of distinct weights beside 4 pairs: row r goes with pair r mod 4, so in the one step that
    # holds all 4 pairs each row counts exactly once (row 4 with pair 0)
    anchors = [{"prompt": f"keep {r}", "completion": "as it was" + "!" * r, "weight": 0.1 * (r + 1)} for r in range(5)]
    path = tmp_path / "anchors.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in anchors))
    config = load_config(
        DPOConfig,
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            "policy.name=tiny-llama",
            f"data.path={small_hh}",
            *TINY_DATA,
            "data.limit=4",
            "train.batch_size=4",
            "train.max_steps=1",
            f"anchor={path}",
        ],
    )
    train_dpo(config)
    model = load_causal_lm("tiny-llama", seed=config.train.seed).eval()
    use_packed_attention(model)
    encoder = ChatEncoder(load_tokenizer("tiny-llama"), max_length=160, max_prompt_length=96)
    groups = []
    for anchor in anchors:
        encoded = encoder.encode([{"role": "user", "content": anchor["prompt"]}], [anchor["completion"]])
        groups.append((encoded.prompt, encoded.completions[0]))
    logps, counts = group_logps(model, as_groups(groups))
    nll = (-logps / counts).tolist()
    # step 1: the policy is its own reference, so DPO's loss is -log σ(0) = log 2; the anchors add
    # Σ_r w_r · nll_r over the 5 rows, divided by the 4 pairs of the step
    step = train_rows(tmp_path / "run")[0]
    expected = math.log(2) + sum(a["weight"] * n for a, n in zip(anchors, nll)) / 4
    assert step["loss"] == pytest.approx(expected, rel=1e-4)
    assert step["anchor_nll"] == pytest.approx(sum(nll) / 5, rel=1e-4)


def test_the_feedback_can_come_from_the_apps_verbal_export(tmp_path):
    from rlxf.pipelines.verbal_prompts import exported_feedback

    export = tmp_path / "verbal.jsonl"
    rows = [{"prompt": "q", "completions": ["a"], "feedback": "  Be brief.  "}, {"prompt": "q", "feedback": ""}]
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert exported_feedback(f"{export}:1") == "Be brief."
    with pytest.raises(ConfigError, match="line 2, field 'feedback'"):
        exported_feedback(f"{export}:2")
    with pytest.raises(ConfigError, match="has 2 lines"):
        exported_feedback(f"{export}:3")
    with pytest.raises(ConfigError, match="path:line"):
        exported_feedback(str(export))
    with pytest.raises(ConfigError, match="no such file"):
        exported_feedback(f"{tmp_path / 'missing.jsonl'}:1")


def chef(prompt, answer, feedback):
    return "Chef says: " + answer


def feedback_margin(model_name, prompts):
    """Mean log π("Chef says: y") − log π("y") over the prompts and a few fixed answers y."""
    model = load_causal_lm(model_name).eval()
    use_packed_attention(model)
    encoder = ChatEncoder(load_tokenizer(model_name), max_length=256, max_prompt_length=128)
    groups = []
    for prompt in prompts:
        for answer in ("fine", "ok then", "yes"):
            encoded = encoder.encode(prompt, ["Chef says: " + answer, answer])
            groups += [(encoded.prompt, encoded.completions[0]), (encoded.prompt, encoded.completions[1])]
    logps, _ = group_logps(model, as_groups(groups))
    return float((logps[0::2] - logps[1::2]).mean())


@pytest.fixture
def scoped(tmp_path):
    files = {}
    for scope, template in (
        ("in_scope", "How do I cook dish number {}?"),
        ("near_scope", "How do I clean kitchen number {}?"),
        ("out_of_scope", "What is {} plus 3?"),
    ):
        files[scope] = tmp_path / f"{scope}.jsonl"
        files[scope].write_text("".join(json.dumps({"prompt": template.format(i)}) + "\n" for i in range(40)))
    return files


def c3po(tmp_path, scoped, name, *overrides):
    settings = [
        f"output_dir={tmp_path / name}",
        'feedback="Start answers about cooking with Chef says."',
        *(f"{scope}={path}" for scope, path in scoped.items()),
        f"revise={__file__}:chef",
        "adherence={kind: format, pattern: '^Chef says'}",
        "policy.name=tiny-llama",
        "max_new_tokens=16",
        "prompts_per_scope=40",
        "dpo.train.lr=1e-3",
        "dpo.train.epochs=10",
        "dpo.data.max_length=160",
        *overrides,
    ]
    return run_c3po(load_config(C3POConfig, None, settings))


def test_c3po_learns_the_feedback_in_scope_without_spreading_it_near_scope(tmp_path, scoped):
    anchored = c3po(tmp_path, scoped, "anchored")
    loose = c3po(tmp_path, scoped, "loose", "sigma_near=0", "sigma_out=0")
    assert anchored["data"] == {
        "pairs": 30,
        "unchanged_rewrites": 0,
        "anchors": 60,
        "empty_answers_left_out": 0,
        "rewrites_adherent": 1.0,
    }
    weights = [
        json.loads(line)["weight"] for line in (tmp_path / "anchored/answers/anchors.jsonl").read_text().splitlines()
    ]
    assert weights == [0.1 * 30 / 30] * 30 + [0.2 * 30 / 30] * 30  # σ · pairs / rows of the scope
    assert loose["data"]["anchors"] == 0
    held = json.loads((tmp_path / "anchored/prompts/prompts.json").read_text())["scopes"]
    margin = {}
    for run in ("anchored", "loose"):
        for scope in ("in_scope", "near_scope"):
            prompts = held[scope]["eval"]
            margin[run, scope] = feedback_margin(str(tmp_path / run / "dpo/model"), prompts) - feedback_margin(
                "tiny-llama", prompts
            )
    assert margin["anchored", "in_scope"] > 10  # "Chef says:" learned where it belongs
    assert margin["anchored", "near_scope"] < margin["anchored", "in_scope"] - 4
    assert margin["anchored", "near_scope"] < margin["loose", "near_scope"] - 3  # the anchors hold it back
    report = (tmp_path / "anchored/report.md").read_text()
    assert "| near-scope | 10 |" in report and set(anchored["scopes"]) == {"in_scope", "near_scope", "out_of_scope"}


def test_c3po_refuses_what_it_cannot_use(tmp_path, scoped):
    with pytest.raises(ValueError, match="verbal feedback"):
        load_config(C3POConfig, None, ["scope=cooking"])
    with pytest.raises(ValueError, match="scope="):
        load_config(C3POConfig, None, ["feedback=Be brief."])
    with pytest.raises(ValueError, match="format reward"):
        c3po(tmp_path, scoped, "bad", "adherence={kind: format, pattern: '('}")
    with pytest.raises(ValueError, match="cannot fill one DPO batch of 8"):
        load_config(C3POConfig, None, ["feedback=Be brief.", "scope=x", "prompts_per_scope=8"])
    with pytest.raises(ValueError, match="anchors' weights hold"):
        load_config(C3POConfig, None, ["feedback=Be brief.", "scope=x", "dpo.data.eval_fraction=0.1"])
    with pytest.raises(ValueError, match="one of them"):
        load_config(C3POConfig, None, ["feedback=Be brief.", "feedback_from=verbal.jsonl:1", "scope=x"])
    (tmp_path / "few.jsonl").write_text(json.dumps({"prompt": "one"}) + "\n")
    with pytest.raises(ConfigError, match="at least 4"):
        c3po(tmp_path, scoped, "few", f"near_scope={tmp_path / 'few.jsonl'}")
