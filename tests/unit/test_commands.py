"""The command line: a command for every algorithm, per-action help, and a description for
every field."""

import dataclasses
import importlib
import typing

import pytest

from rlxf.cli import ALGORITHM_ALIASES, COMMANDS, PRESETS, main
from rlxf.config import field_docs, load_config
from rlxf.recipes.online import OnlineConfig
from rlxf.recipes.online_algorithms import ALGORITHMS


def test_every_algorithm_of_the_registry_and_every_preset_is_a_command():
    assert set(ALGORITHMS) <= set(COMMANDS) and set(ALGORITHM_ALIASES) == set(ALGORITHMS)
    for name in ALGORITHMS:
        assert load_config(OnlineConfig, None, ALGORITHM_ALIASES[name][0]).algo == name
    dapo = load_config(OnlineConfig, None, [*PRESETS["dapo"][0], "clip_high=0.3"])  # the user's setting wins
    assert (dapo.algo, dapo.dynamic_sampling, dapo.aggregation, dapo.clip_high) == ("grpo", True, "token_mean", 0.3)


def test_feedback_help_for_one_action_lists_that_actions_fields_only(capsys):
    assert main(["feedback", "export", "--help"]) == 0
    shown = {line.split("=")[0].strip() for line in capsys.readouterr().out.splitlines() if " = " in line}
    assert shown == {"action", "db", "out", "min_gold_accuracy", "weight_by_reliability", "projects"}
    assert main(["feedback", "judge", "--help"]) == 0
    assert "judge_model = " in capsys.readouterr().out


def undocumented(cls, prefix=""):
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not docs.get(f.name):
            yield prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from undocumented(hints[f.name], f"{prefix}{f.name}.")


def test_every_field_of_every_command_has_a_description():
    for command, (module, config_class, *_) in COMMANDS.items():
        assert list(undocumented(getattr(importlib.import_module(module), config_class))) == [], command


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_shows_its_help_even_with_required_fields_empty(command, capsys):
    from rlxf.cli import main

    assert main([command, "--help"]) == 0
    assert "fields:" in capsys.readouterr().out
