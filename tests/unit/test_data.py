"""Readers, formats, splits, templating and truncation."""

import json

import pytest

from rlxf.data import (
    ChatEncoder,
    DataError,
    parse_dialogue,
    read_demonstrations,
    read_feedback,
    read_labeled,
    read_preferences,
    read_prompts,
    split_by_group,
)
from rlxf.models.tiny import tiny_tokenizer

from ..conftest import SHARED_DATA


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_hh_dialogues_become_prompt_and_last_replies(tmp_path):
    row = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: A pun.",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: No.",
    }
    (pair,), bad = read_preferences(write_jsonl(tmp_path / "hh.jsonl", [row]))
    assert pair.prompt == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "joke?"},
    ]
    assert (pair.chosen, pair.rejected, pair.tie, len(bad)) == ("A pun.", "No.", False, 0)
    assert pair.source.endswith("hh.jsonl, line 1")


def test_hh_pair_that_differs_before_last_turn_names_file_line_and_field(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: DIFFERENT\n\nAssistant: c"},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError) as error:
        read_preferences(path)
    assert error.value.location == "line 2" and error.value.field == "rejected"
    assert "hh.jsonl, line 2, field 'rejected'" in str(error.value)
    records, bad = read_preferences(path, on_bad_row="skip")
    assert len(records) == 1 and len(bad) == 1 and "skipped 1 bad rows" in bad.summary()


def test_trl_standard_conversational_and_implicit_prompt(tmp_path):
    rows = [
        {
            "prompt": "2+2?",
            "chosen": "4",
            "rejected": "5",
            "margin": 2,
            "annotator": "ann-7",
            "aspects": {"correctness": 1},
        },
        {
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hey"}],
            "rejected": [{"role": "assistant", "content": "..."}],
            "tie": True,
        },
    ]
    a, b = read_preferences(write_jsonl(tmp_path / "trl.jsonl", rows))[0]
    assert a.prompt == [{"role": "user", "content": "2+2?"}] and a.margin == 2.0 and a.annotator == "ann-7"
    assert a.aspects == {"correctness": 1.0}
    assert b.prompt[0]["role"] == "system" and b.chosen == "hey" and b.tie
    implicit = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
    }
    (c,), _ = read_preferences(write_jsonl(tmp_path / "implicit.jsonl", [implicit]))
    assert c.prompt == [{"role": "user", "content": "q"}] and (c.chosen, c.rejected) == ("good", "bad")


def test_wrong_types_and_invalid_json_name_the_place(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": 3, "rejected": "r"}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 1, field 'chosen': expected a string"):
        read_preferences(path, format="trl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=r"broken.jsonl, line 2: invalid JSON"):
        read_preferences(broken)
    with pytest.raises(DataError, match="field 'margin': expected a number"):
        read_preferences(
            write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": "lots"}])
        )
    with pytest.raises(DataError, match="cannot tell the preference format"):
        read_preferences(write_jsonl(tmp_path / "x.jsonl", [{"question": "q"}]))


def test_csv_and_parquet_rows(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('prompt,chosen,rejected\n"multi\nline prompt",yes,no\nq2,a,b\n', encoding="utf-8")
    records, _ = read_preferences(csv_path)
    assert [r.prompt[0]["content"] for r in records] == ["multi\nline prompt", "q2"]
    assert records[1].source.endswith("line 4")
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet_path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "c", "rejected": None}]), parquet_path)
    with pytest.raises(DataError, match=r"pairs.parquet, row 0, field 'rejected': missing"):
        read_preferences(parquet_path)


def test_shared_public_formats():
    autoj, bad = read_preferences(SHARED_DATA / "autoj_pairwise_dev.jsonl", on_bad_row="skip")
    assert len(autoj) + len(bad) == 938 and sum(r.tie for r in autoj) == 241
    # a row whose two responses are the same text yet labeled as a preference is refused
    assert bad.errors and all("identical to 'chosen'" in str(e) for e in bad.errors)
    webgpt, _ = read_preferences(SHARED_DATA / "webgpt_comparisons_dsp_test.json")
    assert len(webgpt) == 901 and sum(r.tie for r in webgpt) == 245
    assert {r.margin for r in webgpt} == {0.0, 1.0, 2.0}
    assert webgpt[0].source.endswith("item 0") and webgpt[0].prompt[0]["role"] == "user"
    helpful, bad = read_preferences(SHARED_DATA / "hh_rlhf_helpful_base_test_dev.jsonl", on_bad_row="skip")
    assert len(helpful) + len(bad) == 1895 and len(bad) == 9


def test_autoj_label_order_and_bad_label(tmp_path):
    rows = [
        {"prompt": "p", "response 1": "one", "response 2": "two", "label": 1, "scenario": "x"},
        {"prompt": "p", "response 1": "one", "response 2": "two", "label": 7, "scenario": "x"},
    ]
    path = write_jsonl(tmp_path / "autoj.jsonl", rows)
    records, bad = read_preferences(path, on_bad_row="skip")
    assert (records[0].chosen, records[0].rejected) == ("two", "one")
    assert bad.errors[0].field == "label" and bad.errors[0].location == "line 2"


def test_labeled_demonstrations_and_feedback(tmp_path):
    rows = [{"prompt": "p", "completion": "good", "label": True}, {"prompt": "p", "completion": "bad", "label": 0}]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    labeled, _ = read_labeled(path)
    assert [r.desirable for r in labeled] == [True, False]
    demos, _ = read_demonstrations(path)
    assert [d.completion for d in demos] == ["good"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    feedback, _ = read_feedback(pairs)
    assert [(f.completion, f.label) for f in feedback] == [("c", 1.0), ("r", 0.0)]
    prompts, _ = read_prompts(SHARED_DATA / "gsm8k_train.jsonl")
    assert len(prompts) == 7473 and prompts[0].messages[0]["content"].startswith("Natalia")
    # a prompt file's answer/reference columns, and a preference row's chosen reply, become context
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "2+2?", "answer": 4, "reference": "It is 4."}])
    assert read_prompts(path)[0][0].context == {"answer": "4", "reference": "It is 4."}
    assert read_prompts(pairs)[0][0].context == {"reference": "c"}


def test_parse_dialogue_rejects_text_without_turns():
    with pytest.raises(ValueError):
        parse_dialogue("just text")


def test_grouped_split_keeps_groups_together_and_is_deterministic():
    records, _ = read_preferences(SHARED_DATA / "hh_rlhf_harmless_base_test_dev.jsonl", on_bad_row="skip")
    train, held = split_by_group(records, 0.2)
    assert not {r.group_key for r in train} & {r.group_key for r in held}
    assert 0.15 < len(held) / len(records) < 0.25
    again_train, _ = split_by_group(list(reversed(records)), 0.2)
    assert {r.source for r in again_train} == {r.source for r in train}


def test_completion_mask_boundary_and_end_of_turn():
    tokenizer = tiny_tokenizer()
    encoder = ChatEncoder(tokenizer, max_length=200, max_prompt_length=100)
    prompt = [{"role": "user", "content": "Say hi"}]
    encoded = encoder.encode(prompt, ["hi there", "no"])
    assert tokenizer.decode(encoded.prompt) == "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(encoded.completions[0]) == "hi there<|im_end|>"
    assert tokenizer.decode(encoded.completions[1]) == "no<|im_end|>"


def test_truncation_cuts_prompt_start_then_completion_end_and_reports():
    tokenizer = tiny_tokenizer()
    encoder = ChatEncoder(tokenizer, max_length=60, max_prompt_length=30)
    encoded = encoder.encode([{"role": "user", "content": "x" * 100}], ["y" * 50])
    assert len(encoded.prompt) == 30 and tokenizer.decode(encoded.prompt).endswith("<|im_start|>assistant\n")
    assert len(encoded.prompt) + len(encoded.completions[0]) == 60
    assert (encoder.stats.prompts_cut, encoder.stats.completions_cut) == (1, 1)
    strict = ChatEncoder(tokenizer, max_length=60, max_prompt_length=30, truncation="error")
    with pytest.raises(DataError, match=r"data.jsonl, line 9, field 'prompt': \d+ tokens do not fit"):
        strict.encode([{"role": "user", "content": "x" * 100}], ["y"], source="data.jsonl, line 9")


def test_encoder_without_chat_template_wraps_special_tokens():
    from transformers import AutoTokenizer

    from rlxf.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6-v2"))
    encoder = ChatEncoder(tokenizer, max_length=64, max_prompt_length=32)
    encoded = encoder.encode([{"role": "user", "content": "hello"}], ["world"])
    assert tokenizer.decode(encoded.prompt + encoded.completions[0]) == "[CLS] hello world [SEP]"
