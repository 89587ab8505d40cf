"""Data as users keep it: folders saved by HF datasets, .arrow files, TRL's column names."""

import warnings

import pytest

datasets = pytest.importorskip("datasets")

from rlxf.data import DataError, read_demonstrations, read_labeled, read_preferences, read_prompts  # noqa: E402
from rlxf.recipes.common import warn_if_lopsided  # noqa: E402

PAIRS = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]


def test_a_saved_dataset_a_saved_dataset_dict_and_an_arrow_file_read_as_rows(tmp_path):
    datasets.Dataset.from_list(PAIRS).save_to_disk(tmp_path / "pairs")
    pairs, _ = read_preferences(tmp_path / "pairs")
    assert [p.chosen for p in pairs] == ["good 0", "good 1", "good 2"] and pairs[2].source.endswith("pairs, row 2")
    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(PAIRS), "test": datasets.Dataset.from_list(PAIRS[:1])}
    )
    splits.save_to_disk(tmp_path / "dict")
    assert len(read_preferences(tmp_path / "dict")[0]) == 3  # the train split
    assert len(read_preferences(tmp_path / "dict" / "test")[0]) == 1
    arrow = next((tmp_path / "pairs").glob("*.arrow"))
    assert len(read_preferences(arrow)[0]) == 3


def test_every_trl_layout_reads_from_a_saved_dataset(tmp_path):
    def saved(name, rows):
        datasets.Dataset.from_list(rows).save_to_disk(tmp_path / name)
        return tmp_path / name

    labeled, _ = read_labeled(saved("kto", [{"prompt": "p", "completion": "c", "label": True}]))
    assert labeled[0].label == 1.0
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    demos, _ = read_demonstrations(saved("sft", [{"messages": messages}]))
    assert demos[0].completion == "hello"
    prompts, _ = read_prompts(saved("online", [{"prompt": "2+2?", "answer": "4", "topic": "sums"}]))
    assert prompts[0].context == {"answer": "4", "topic": "sums"}


def test_a_folder_or_file_that_is_no_dataset_says_so(tmp_path):
    datasets.DatasetDict({"test": datasets.Dataset.from_list(PAIRS)}).save_to_disk(tmp_path / "no-train")
    with pytest.raises(DataError, match="a DatasetDict without a train split; give one of"):
        read_preferences(tmp_path / "no-train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="is a folder but not one saved by datasets' save_to_disk"):
        read_preferences(tmp_path / "plain")
    (tmp_path / "broken.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(DataError, match="broken.arrow, file: not a readable Arrow file"):
        read_preferences(tmp_path / "broken.arrow")


def test_plain_text_pairs_without_a_prompt_say_the_prompt_is_missing(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"line 1, field 'prompt': missing \(row has \['chosen', 'rejected'\]\)"):
        read_preferences(path)


def test_a_held_out_split_far_past_eval_fraction_warns_with_the_numbers(tmp_path):
    with pytest.warns(UserWarning, match=r"holds 6 of 9 records \(67%\), not about 10%"):
        warn_if_lopsided(6, 9, 0.1, tmp_path / "small.jsonl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_lopsided(1, 9, 0.1, tmp_path / "small.jsonl")  # 11%: close enough
    assert caught == []
