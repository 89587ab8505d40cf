"""Fine-grained feedback (Wu et al. 2023): segments, labels from error spans, the dense reward and
where it lands, checked by hand."""

import json
import re
from types import SimpleNamespace

import pytest
import torch

from rlxf.advantages import discounted_returns, kl_shaped_rewards
from rlxf.data.errors import DataError
from rlxf.data.fine_grained import (
    marked,
    read_segmented,
    segment_examples,
    segment_labels,
    sentence_spans,
    subsentence_spans,
)
from rlxf.eval import reward_accuracy
from rlxf.recipes.online_rollout import dense_token_rewards, prefix_lengths, token_ending_at
from rlxf.rewards.base import RewardBatch
from rlxf.rewards.combine import WeightedSum
from rlxf.rewards.fine_grained import FineGrainedReward


def pieces(text, spans):
    return [text[a:b] for a, b in spans]


def test_sentences_cover_the_text_and_end_at_sentence_marks():
    text = 'It rained. "Why?" she asked! Then 2.5 mm fell'
    assert pieces(text, sentence_spans(text)) == ["It rained.", ' "Why?"', " she asked!", " Then 2.5 mm fell"]
    assert sentence_spans("") == [(0, 0)]


def test_subsentences_follow_the_authors_rule():
    # a cut after a comma needs 5 words since the last cut and 6 words after it
    long = "one two three four five, six seven eight nine ten eleven."
    assert pieces(long, subsentence_spans(long)) == ["one two three four five, ", "six seven eight nine ten eleven."]
    few_after = "one two three four five, six seven eight nine ten."  # 5 words after: no cut
    assert len(subsentence_spans(few_after)) == 1
    few_before = "one two, three four five six seven eight nine ten."  # the first piece would be short
    assert len(subsentence_spans(few_before)) == 1
    # a short piece after the first joins the one before it: "f g h," is cut at "i" instead
    text = "a b c d e, f g h, i j k l m n o."
    assert pieces(text, subsentence_spans(text)) == ["a b c d e, f g h, ", "i j k l m n o."]


def test_a_segment_is_an_error_where_a_span_touches_one_of_its_words():
    text = "Alpha beta gamma delta epsilon. Zeta eta theta iota kappa."
    segments = sentence_spans(text)  # [0, 31), [31, 58)
    long_error = [(29, 40)]  # from "on." into "Zeta eta": touches both sentences, 3 words... too short for relevance
    assert segment_labels(text, segments, long_error, [], "factuality") == [0.0, 0.0]
    assert segment_labels(text, segments, long_error, [], "relevance") == [1.0, 1.0]
    five_words = [(32, 58)]  # "Zeta eta theta iota kappa." only
    assert segment_labels(text, segments, five_words, [], "relevance") == [1.0, 0.0]
    assert segment_labels(text, segments, [(31, 32)], [], "factuality") == [1.0, 1.0]  # only the space
    # factuality: a sentence with only a (long enough) error of another kind is left out; a short one is not
    assert segment_labels(text, segments, [], five_words, "factuality") == [1.0, None]
    assert segment_labels(text, segments, [], [(32, 40)], "factuality") == [1.0, 1.0]


def qa_row(**changes):
    row = {
        "question": "When?",
        "passages": [["Title", "First sentence.", "Second."]],
        "prediction 1": "It came out in 2018. It was sung by Troye Sivan, a singer from Australia.",
        "feedback": {
            "errors": [{"error type": "Irrelevant", "start": 21, "end": 50, "explanation": ""}],
            "missing-info": [{"error type": "Missing-Answer", "passage_id": 1, "sentence_id": 0}],
        },
    }
    return {**row, **changes}


def test_reading_the_qa_feedback_file_and_the_apps_spans(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([qa_row()]))
    (relevance,), _ = read_segmented(path, "relevance")
    assert relevance.labels == [1.0, 0.0] and "Question" not in relevance.prompt[0]["content"]
    assert relevance.prompt[0]["content"].endswith("from the passages: When?")
    assert "Title: First sentence. Second." in relevance.prompt[0]["content"]
    (factual,), _ = read_segmented(path, "factuality")
    assert factual.labels == [1.0, None]  # an irrelevant span only
    (complete,), _ = read_segmented(path, "completeness")
    assert complete.segments == [(0, len(complete.response))] and complete.labels == [0.0]
    spans = tmp_path / "spans.jsonl"
    row = {"prompt": "q", "completion": relevance.response, "spans": [{"start": 21, "end": 50, "tag": "off-topic"}]}
    spans.write_text(json.dumps({**row, "weight": 0.7}) + "\n")
    (from_app,), _ = read_segmented(spans, "relevance", ("off-topic",))
    assert from_app.labels == [1.0, 0.0]
    assert [e.weight for e in segment_examples([from_app])] == [0.7, 0.7]  # the labeler's reliability, per segment
    examples = segment_examples([relevance, factual])
    assert [e.label for e in examples] == [1.0, 0.0, 1.0]  # factuality's None is left out
    assert examples[1].completion == "It came out in 2018.[[ It was sung by Troye Sivan, a singer from Australia.]]"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"feedback": {"errors": [{"error type": "Irrelevant", "start": 5, "end": 500}]}}, "feedback.errors[0]"),
        ({"feedback": {"errors": [{"start": 0, "end": 3}]}}, "feedback.errors[0]"),
        ({"passages": "text"}, "passages"),
        ({"prediction 1": 3}, "prediction 1"),
    ],
)
def test_a_bad_row_is_named(tmp_path, changes, field):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([qa_row(), qa_row(**changes)]))
    with pytest.raises(DataError, match=re.escape(f"item 1, field '{field}'")):
        read_segmented(path, "relevance")
    records, bad = read_segmented(path, "relevance", on_bad_row="skip")
    assert len(records) == 1 and len(bad.errors) == 1


def test_marked_keeps_the_segment_and_at_most_the_context_before_it():
    assert marked("abcdef", (2, 4)) == "ab[[cd]]"
    assert marked("abcdef", (4, 6), context_chars=2) == "…cd[[ef]]"


def test_error_detection_reports_each_class_and_the_baselines(monkeypatch):
    # logits > 0 say "no error"; labels 1 no error, 0 error
    monkeypatch.setattr(reward_accuracy, "score_sequences", lambda *a: [2.0, -1.0, -3.0, 1.0, 0.5])
    result = reward_accuracy.error_detection(None, [[1]] * 5, [1, 0, 1, 0, 1], 0)
    # said error: rows 1, 2; truly error: rows 1, 3 -> error precision 1/2, recall 1/2
    assert result["error_precision"] == 0.5 and result["error_recall"] == 0.5 and result["error_f1"] == 0.5
    # said no error: rows 0, 3, 4; truly: 0, 2, 4 -> precision 2/3, recall 2/3
    assert result["no_error_precision"] == pytest.approx(2 / 3) and result["no_error_f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(3 / 5) and result["all_error_accuracy"] == pytest.approx(2 / 5)
    assert result["all_no_error_accuracy"] == pytest.approx(3 / 5)


def fine_grained_source(logits, level="sentence"):
    source = FineGrainedReward.__new__(FineGrainedReward)
    source.level, source.name, source.context_chars, seen = level, "relevance", 600, []

    def score(prompts, texts):
        seen.append((prompts, texts))
        return SimpleNamespace(rewards=torch.tensor(logits[: len(texts)]))

    source.classifier = SimpleNamespace(score=score)
    return source, seen


def test_each_segment_gets_plus_or_minus_one_at_its_end():
    source, seen = fine_grained_source([0.7, -0.2, 3.0])
    batch = source.score([["p1"], ["p2"]], ["Good one. Bad one.", "Only."])
    assert batch.span_rewards == [[(9, 1.0), (18, -1.0)], [(5, 1.0)]]
    assert batch.rewards.tolist() == [0.0, 1.0] and batch.details[0] == {"segments": 2, "errors": 1}
    assert seen[0] == ([["p1"], ["p1"], ["p2"]], ["[[Good one.]]", "Good one.[[ Bad one.]]", "[[Only.]]"])
    combined = WeightedSum([source], [0.3]).score([["p1"], ["p2"]], ["Good one. Bad one.", "Only."])
    assert combined.span_rewards == [[(9, 0.3), (18, -0.3)], [(5, 0.3)]]
    assert combined.rewards.tolist() == pytest.approx([0.0, 0.3])


class CharTokenizer:
    """Each id is one character of ``alphabet``; 0 is a special token (dropped when decoding)."""

    alphabet = "\0abcdefghij. "

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.alphabet[i] for i in ids if i or not skip_special_tokens)


def test_a_segment_reward_lands_on_the_token_that_ends_the_segment():
    tokenizer, ids = CharTokenizer(), [1, 2, 11, 12, 3, 4, 11, 0]  # "ab. cd." and an end token
    assert [token_ending_at(prefix_lengths(ids, tokenizer), end) for end in (1, 3, 4, 7, 99)] == [0, 2, 3, 6, 7]
    rollout = SimpleNamespace(completion_ids=[ids, [1, 0]], mask=torch.tensor([[1.0] * 8, [1, 1] + [0.0] * 6]))
    rewards = RewardBatch(torch.tensor([0.0, 1.0]), span_rewards=[[(3, -1.0), (7, 1.0)], []])
    dense = dense_token_rewards(rewards, rollout, tokenizer)
    assert dense[0].tolist() == [0, 0, -1, 0, 0, 0, 1, 0] and dense[1].abs().sum() == 0


def test_dense_rewards_stay_on_their_tokens_and_only_the_rest_goes_on_the_last():
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    dense = torch.tensor([[-0.3, 0, 0.3, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4, 9.0]])
    shaped = kl_shaped_rewards(torch.tensor([0.5]), mask, kl, kl_coef=0.5, dense=dense)
    # the reward 0.5 = -0.3 + 0.3 (segments) + 0.5 (the rest, on the last token); -0.5·KL on each token
    assert shaped.tolist()[0] == pytest.approx([-0.35, -0.1, 0.15, 0.3, 0.0])
    # reward-to-go (γ = 1): the tokens before the bad segment's end carry its -0.3, the later ones do not
    returns = discounted_returns(kl_shaped_rewards(torch.tensor([0.5]), mask, dense=dense), mask)
    assert returns.tolist()[0] == pytest.approx([0.5, 0.8, 0.8, 0.5, 0.0])
    sequence_level = discounted_returns(kl_shaped_rewards(torch.tensor([0.5]), mask), mask)
    assert sequence_level.tolist()[0] == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.0])


def test_the_remainder_goes_on_the_last_token_when_segments_do_not_cancel():
    mask = torch.tensor([[1.0, 1, 1]])
    dense = torch.tensor([[0.3, 0, 0]])
    # reward 1.0 = 0.3 on its segment + 0.7 at the end
    assert kl_shaped_rewards(torch.tensor([1.0]), mask, dense=dense).tolist()[0] == pytest.approx([0.3, 0.0, 0.7])


def test_a_logit_of_zero_is_an_error():
    source, _ = fine_grained_source([0.0])
    assert source.score([["p"]], ["One."]).span_rewards == [[(4, -1.0)]]


def test_an_empty_answer_has_no_segments_and_no_reward():
    source, seen = fine_grained_source([])
    batch = source.score([["p"]], ["   "])
    assert batch.span_rewards == [[]] and batch.rewards.tolist() == [0.0] and not seen


def test_a_cut_inside_a_sentence_rewards_its_last_word_not_the_next_tokens_space():
    from rlxf.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    text = "The song came out in 2018, and it was sung by Troye Sivan, a famous young singer from Australia."
    source, _ = fine_grained_source([1.0, 1.0, 1.0], level="subsentence")
    (spans,) = source.score([["p"]], [text]).span_rewards
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    lengths = prefix_lengths(ids, tokenizer)
    last_tokens = [tokenizer.decode([ids[token_ending_at(lengths, end)]]) for end, _ in spans]
    assert last_tokens == [",", ",", "."]


def test_span_rows_need_the_projects_tags_and_bad_marks_are_named(tmp_path):
    spans = tmp_path / "spans.jsonl"
    spans.write_text(
        json.dumps(
            {"prompt": "q", "completion": "Some text here.", "spans": [{"start": 0, "end": 4, "tag": "irrelevant"}]}
        )
        + "\n"
    )
    with pytest.raises(DataError, match="error_tags"):
        read_segmented(spans, "relevance")
    (complete,), _ = read_segmented(spans, "completeness", ("missing",))
    assert complete.labels == [1.0]  # an irrelevant span is no missing information
    (incomplete,), _ = read_segmented(spans, "completeness", ("irrelevant",))
    assert incomplete.labels == [0.0]
    path = tmp_path / "qa.json"
    for feedback, field in (
        ({"errors": None}, "feedback.errors"),
        ({"errors": [], "missing-info": ["Missing-Answer"]}, "feedback.missing-info[0]"),
        ({"errors": [[0, 3]]}, "feedback.errors[0]"),
    ):
        path.write_text(json.dumps([qa_row(feedback=feedback)]))
        with pytest.raises(DataError, match=re.escape(f"field '{field}'")):
            read_segmented(path, "relevance")


def test_missing_major_information_makes_a_response_incomplete(tmp_path):
    path = tmp_path / "qa.json"
    for kind, label in (("Missing-Major-Auxiliary", 0.0), ("Missing-Answer", 0.0), ("Missing-Minor-Auxiliary", 1.0)):
        missing = [{"error type": kind, "passage_id": 1, "sentence_id": 0}]
        path.write_text(json.dumps([qa_row(feedback={"errors": [], "missing-info": missing})]))
        (row,), _ = read_segmented(path, "completeness")
        assert row.labels == [label], kind


def test_reward_workers_shares_keep_their_segments():
    from rlxf.rewards.ray_workers import concat_reward_batches

    parts = [RewardBatch(torch.tensor([1.0]), span_rewards=[[(3, 1.0)]]), RewardBatch(torch.tensor([0.0, 2.0]))]
    assert concat_reward_batches(parts).span_rewards == [[(3, 1.0)], [], []]
    assert concat_reward_batches(parts[1:]).span_rewards is None
