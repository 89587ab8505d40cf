"""A user's reward function called as TRL calls reward_funcs: shapes, columns, None, async,
weighting, and errors that name the function and the row."""

import asyncio
import math
import sys
import textwrap

import pytest
import torch

from rlxf.data import read_prompts
from rlxf.recipes.online_config import RewardSection
from rlxf.rewards.combine import WeightedSum
from rlxf.rewards.python_function import PythonReward, RewardFunctionError, load_function

PROMPTS = [[{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "3+3?"}]]


def test_plain_text_prompts_give_strings_and_conversational_ones_give_messages():
    seen = {}

    def spy(prompts, completions, **columns):
        seen.update(prompts=prompts, completions=completions, columns=columns)
        return [0.0] * len(completions)

    PythonReward(spy).score(PROMPTS, ["4", "6"], answer=["4", "7"], conversational=[False, False])
    assert seen == {"prompts": ["2+2?", "3+3?"], "completions": ["4", "6"], "columns": {"answer": ["4", "7"]}}
    PythonReward(spy).score(PROMPTS, ["4", "6"], conversational=[True, True])
    assert seen["prompts"] == PROMPTS
    assert seen["completions"] == [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "6"}]]


def test_columns_decide_the_reward_and_none_is_no_opinion():
    def correct(completions, answer, **kwargs):
        return [None if a is None else float(c.strip() == a) for c, a in zip(completions, answer)]

    batch = PythonReward(correct).score(PROMPTS * 2, ["4", "5", "6", "6"], answer=["4", "4", None, "6"])
    assert batch.rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert batch.opinions.tolist() == [True, True, False, True]
    assert batch.metrics()["reward/correct"] == pytest.approx(2 / 3)  # the mean over opinions
    assert batch.flags == {"reward/correct/no_opinion": 0.25}


def test_weighted_sources_standardize_over_their_opinions_only():
    opinionated = PythonReward(lambda completions, **k: [1.0, None, 3.0, 5.0], name="a")
    constant = PythonReward(lambda completions, **k: [2.0] * 4, name="b")
    total = WeightedSum([opinionated, constant], [2.0, 0.5], [True, False]).score(PROMPTS * 2, ["w", "x", "y", "z"])
    # a over its opinions [1, 3, 5]: mean 3, sample std 2 -> [-1, 0, 1]; None -> 0; then 2·a + 0.5·2
    expected = [2 * -1 + 1, 0 + 1, 2 * 0 + 1, 2 * 1 + 1]
    assert total.rewards.tolist() == pytest.approx(expected, abs=1e-5)


def test_an_async_function_is_awaited_also_inside_a_running_event_loop():
    async def slow(completions, **kwargs):
        await asyncio.sleep(0)
        return [float(len(c)) for c in completions]

    assert PythonReward(slow).score(PROMPTS, ["ab", "abc"]).rewards.tolist() == [2.0, 3.0]

    async def notebook():
        return PythonReward(slow).score(PROMPTS, ["a", "abcd"]).rewards.tolist()

    assert asyncio.run(notebook()) == [1.0, 4.0]


def test_an_exception_names_the_function_and_the_row():
    def fragile(completions, **kwargs):
        return [1.0 / len(c) for c in completions]

    with pytest.raises(RewardFunctionError, match=r"fragile raised ZeroDivisionError at row 1 \(completion ''\)"):
        PythonReward(fragile).score(PROMPTS, ["ok", ""])


@pytest.mark.parametrize(
    "returned, message",
    [
        ([1.0], "returned 1 values for 2 completions"),
        ("1.0", "returned a str, not a list"),
        ([1.0, math.nan], r"returned nan at row 1"),
        ([1.0, "good"], r"returned 'good' at row 1"),
    ],
)
def test_an_unusable_return_value_is_an_error_saying_what(returned, message):
    with pytest.raises(RewardFunctionError, match=message):
        PythonReward(lambda completions, **k: returned, name="f").score(PROMPTS, ["a", "b"])


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            def has_digit(completions, **kwargs):
                return [float(any(ch.isdigit() for ch in c)) for c in completions]
            not_callable = 3
            """
        )
    )
    return path


def test_a_function_by_file_path_or_by_module_name(reward_file, monkeypatch):
    assert load_function(f"{reward_file}:has_digit")(completions=["a1", "b"]) == [1.0, 0.0]
    monkeypatch.chdir(reward_file.parent)  # a module beside the run, as TRL users keep theirs
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    assert load_function("my_rewards:has_digit")(completions=["7"]) == [1.0]
    section = RewardSection(kind="python", function="my_rewards:has_digit", weight=0.5)
    assert section.build().score(PROMPTS, ["x", "9"]).by_source["has_digit"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    "reference, message",
    [
        ("no_colon", "expected 'module:function'"),
        ("missing_file.py:f", "missing_file.py does not exist"),
        ("no_such_module_here:f", "No module named 'no_such_module_here'"),
        ("{file}:absent", "has no 'absent'"),
        ("{file}:not_callable", "'not_callable' is a int"),
    ],
)
def test_a_function_that_cannot_be_found_says_why(reference, message, reward_file):
    with pytest.raises(RewardFunctionError, match=message):
        load_function(reference.format(file=reward_file))


def test_a_prompt_file_hands_its_other_columns_and_its_shape_to_the_reward(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "Name a colour.", "topic": "colour", "answer": 3}\n'
        '{"prompt": [{"role": "user", "content": "Hi"}], "topic": "greeting", "answer": null}\n'
    )
    prompts, _ = read_prompts(path)
    assert [p.context for p in prompts] == [{"topic": "colour", "answer": "3"}, {"topic": "greeting", "answer": None}]
    assert [p.conversational for p in prompts] == [False, True]


def test_rewards_tensor_is_float32_for_the_trainer():
    batch = PythonReward(lambda completions, **k: [1, True], name="ints").score(PROMPTS, ["a", "b"])
    assert batch.rewards.dtype == torch.float32 and batch.rewards.tolist() == [1.0, 1.0]


def test_a_config_names_a_callable_by_its_code_without_copying_it():
    import threading

    from rlxf.config import to_yaml
    from rlxf.recipes.online_config import RewardSection

    class Judge:  # a callable object holding a lock, as API clients do
        def __init__(self):
            self.lock = threading.Lock()

        def __call__(self, completions, **kwargs):
            return [0.0] * len(completions)

    def first(completions, **kwargs):
        return [1.0] * len(completions)

    def second(completions, **kwargs):
        return [2.0] * len(completions)

    judged = to_yaml(RewardSection(kind="python", function=Judge()))
    assert "Judge@" in judged and judged == to_yaml(RewardSection(kind="python", function=Judge()))  # no address
    made = {}
    exec(compile("def made(completions, **kwargs):\n    return [0.5] * len(completions)", "README.md", "exec"), made)
    assert "made@" in to_yaml(RewardSection(kind="python", function=made["made"]))  # code without a source file
    a, b = (to_yaml(RewardSection(kind="python", function=f)) for f in (first, second))
    assert a != b and a.split("@")[1] != b.split("@")[1]  # other code, another config


def test_every_batch_logs_the_no_opinion_share_so_ranks_agree_on_the_keys():
    batch = PythonReward(lambda completions, **k: [1.0, 1.0], name="all").score(PROMPTS, ["a", "b"])
    assert batch.flags == {"reward/all/no_opinion": 0.0}
    silent = PythonReward(lambda completions, **k: [None, None], name="none").score(PROMPTS, ["a", "b"])
    assert silent.metrics()["reward/none"] == 0.0  # not NaN, which would spoil the mean over ranks


def test_a_callables_digest_follows_its_behaviour_not_its_place_or_address():
    import functools

    from rlxf.config.loading import _code_digest

    source = "def score(completions, scale=1.0, **kwargs):\n    return [scale * len(c) for c in completions]\n"

    def made(text, filename):
        namespace = {}
        exec(compile(text, filename, "exec"), namespace)
        return namespace["score"]

    here, moved = made(source, "/tmp/kernel_1/a.py"), made("\n\n" + source, "/tmp/kernel_2/b.py")
    assert _code_digest(here) == _code_digest(moved)  # another file, other line numbers: the same code
    assert _code_digest(here) != _code_digest(made(source.replace("scale=1.0", "scale=2.0"), "a.py"))

    class Judge:
        def __init__(self, threshold):
            self.threshold = threshold

        def __call__(self, completions, **kwargs):
            return [float(len(c) > self.threshold) for c in completions]

    class Client:  # an argument whose repr carries its address
        pass

    assert _code_digest(Judge(5)) == _code_digest(Judge(5)) != _code_digest(Judge(9))
    assert _code_digest(functools.partial(here, client=Client())) == _code_digest(
        functools.partial(here, client=Client())
    )

    def closure(word):
        return lambda completions, **kwargs: [float(word in c) for c in completions]

    assert _code_digest(closure("a")) != _code_digest(closure("b"))
