"""`rlxf <command> [config.yaml] [section.key=value ...]`: parse a config, run one recipe."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rlxf.config import ConfigError, describe, load_config
from rlxf.config.checked import defaults_of
from rlxf.recipes.nash_learners import LEARNERS
from rlxf.recipes.online_algorithms import ALGORITHMS, PRESETS

# command -> (module, config class, entry function, one-line summary)
COMMANDS = {
    "rm": (
        "rlxf.recipes.reward_model",
        "RewardModelConfig",
        "train_reward_model",
        "train a reward model on pairwise preferences (Bradley-Terry)",
    ),
    "cm": (
        "rlxf.recipes.reward_model",
        "CostModelConfig",
        "train_cost_model",
        "train a cost model on harmlessness pairs and harmful/harmless labels (Safe RLHF), for safety.costs",
    ),
    "reactions": (
        "rlxf.recipes.reaction_model",
        "ReactionModelConfig",
        "train_reaction_model",
        "train P[positive reaction] on users' binary feedback (RLUF), for {kind: reaction_model} rewards",
    ),
    "fgrm": (
        "rlxf.recipes.fine_grained_rm",
        "FineGrainedRMConfig",
        "train_fine_grained_rm",
        "a fine-grained reward model: errors of one kind per segment of a response (Wu et al. 2023)",
    ),
    "principles": (
        "rlxf.recipes.principle_rm",
        "PrincipleRMConfig",
        "train_principle_rm",
        "a principle-conditioned binary reward model: does the response satisfy a principle in words (RLBFF)",
    ),
    "vpl": (
        "rlxf.recipes.personal_rm",
        "PersonalRMConfig",
        "train_personal_rm",
        "a personalized reward model: a user latent from a few of the user's labels (VPL, Poddar et al. 2024)",
    ),
    "pm": (
        "rlxf.recipes.preference_model",
        "PreferenceModelConfig",
        "train_preference_model",
        "train a general preference model P(a ≻ b | x) on pairwise preferences (antisymmetric; accuracy, calibration)",
    ),
    "sft": ("rlxf.recipes.sft", "SFTConfig", "train_sft", "supervised fine-tuning on prompt/completion pairs"),
    "dpo": (
        "rlxf.recipes.dpo",
        "DPOConfig",
        "train_dpo",
        "offline preference optimization (dpo, ipo, cdpo, robust, hinge, simpo, cpl)",
    ),
    "kto": ("rlxf.recipes.kto", "KTOConfig", "train_kto", "KTO on unpaired binary feedback"),
    "online": (
        "rlxf.recipes.online",
        "OnlineConfig",
        "train_online",
        "online RL from rewards: algo=grpo|dr_grpo|rloo|remax|reinforce_pp|ppo|rft|nft",
    ),
    "eval": ("rlxf.recipes.evaluate", "EvalConfig", "evaluate", "RM accuracy, win rate vs reference, KL, lengths"),
    "serve": ("rlxf.feedback.server", "ServeConfig", "serve", "the labeling app for human feedback (web pages + API)"),
    "feedback": (
        "rlxf.feedback.cli",
        "FeedbackConfig",
        "run_feedback",
        "labeling setup and export: add-user, create-project, import, add-member, export",
    ),
    "games": (
        "rlxf.games.testbed",
        "GamesConfig",
        "run_games",
        "tabular preference games: every Nash and BT learner against the exact regularized equilibrium",
    ),
    "segments": (
        "rlxf.segments.command",
        "SegmentsConfig",
        "run_segments",
        "preference models over trajectory segments (partial return, regret, CPL) on human labels",
    ),
    "nash": (
        "rlxf.recipes.nash",
        "NashConfig",
        "train_nash",
        "Nash learners against a preference oracle: online_dpo|online_ipo|egpo|inpo|nash_md|nash_mp",
    ),
    "mpo": (
        "rlxf.pipelines.mpo",
        "MPOConfig",
        "run_mpo",
        "Mixed Preference Optimization: pairs split by reward margin, DPO on the easy ones, then online RL on the hard",
    ),
    "refine": (
        "rlxf.recipes.language_feedback",
        "RefineConfig",
        "run_refine",
        "critique-then-refine: the policy rewrites its answers after a critique; rewrite-over-original pairs",
    ),
    "correction-data": (
        "rlxf.recipes.language_feedback",
        "CorrectionDataConfig",
        "write_correction_data",
        "pairs as correction and identity rows for a seq2seq reward model (token-level rewards), trained by rlxf sft",
    ),
    "c3po": (
        "rlxf.pipelines.verbal",
        "C3POConfig",
        "run_c3po",
        "verbal feedback without overgeneralization: DPO in scope, the original answers kept elsewhere (C3PO)",
    ),
    "pareto": (
        "rlxf.pipelines.pareto",
        "ParetoConfig",
        "run_pareto",
        "one online run per weighting of the reward sources, and the Pareto front of their held-out scores",
    ),
    "overoptimization": (
        "rlxf.recipes.overoptimization",
        "OveroptimizationConfig",
        "run_overoptimization",
        "best-of-n over-optimization curve: a gold reward model's score of a proxy's pick against KL (Gao et al.)",
    ),
    "annotate": (
        "rlxf.recipes.ai_feedback",
        "AnnotateConfig",
        "annotate",
        "AI feedback: several judges rate candidates per rubric aspect, aggregated into pairs (UltraFeedback)",
    ),
    "judge-data": (
        "rlxf.recipes.ai_feedback",
        "JudgeDataConfig",
        "write_judge_data",
        "people's pairwise labels as training rows (both orders) for a judge of your own, trained by rlxf sft",
    ),
    "report": (
        "rlxf.eval.run_report",
        "ReportConfig",
        "report",
        "report.md with plots for a run folder: rlxf report RUN_DIR",
    ),
    "demo": (
        "rlxf.demo",
        "DemoConfig",
        "run_demo",
        "reward model -> DPO -> evaluation -> report, on shipped data",
    ),
}


ALGORITHM_ALIASES = {name: ([f"algo={name}"], f"{name}: {row.source}") for name, row in ALGORITHMS.items()}
NASH_ALIASES = {name: ([f"learner={name}"], f"{name}: {paper}") for name, paper in LEARNERS.items()}  # `rlxf nash_md`
for _name, (_overrides, _summary) in NASH_ALIASES.items():
    COMMANDS[_name] = ("rlxf.recipes.nash", "NashConfig", "train_nash", _summary[:140])
for _name, (_overrides, _summary) in {**ALGORITHM_ALIASES, **PRESETS}.items():  # `rlxf grpo` = `rlxf online algo=grpo`
    COMMANDS[_name] = ("rlxf.recipes.online", "OnlineConfig", "train_online", _summary[:140])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlxf",
        description="Train language models from feedback.",
        epilog="Run `rlxf <command> --help` to list a command's config fields.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (*_, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, add_help=False)
        command.add_argument("-h", "--help", action="store_true", help="list config fields and defaults")
        command.add_argument(
            "args",
            nargs="*",
            metavar="[config.yaml] [key=value]",
            help="an optional YAML config, then dotted overrides such as train.lr=1e-5",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module_name, class_name, function_name, summary = COMMANDS[args.command]
    if args.command == "feedback" and args.args and "=" not in args.args[0]:
        args.args = [f"action={args.args[0]}", *args.args[1:]]  # `rlxf feedback export ...`
    if args.command == "report" and args.args and "=" not in args.args[0]:
        args.args = [f"run_dir={args.args[0]}", *args.args[1:]]  # `rlxf report runs/dpo`
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if module_name.startswith("rlxf.feedback"):
            print(
                f"rlxf {args.command} needs the feedback extra: pip install 'rlxf[feedback]' ({error})", file=sys.stderr
            )
            return 2
        raise
    config_class = getattr(module, class_name)
    if args.help:
        print(f"rlxf {args.command}: {summary}\n\nusage: rlxf {args.command} [config.yaml] [key=value ...]\n\nfields:")
        action = next((a.split("=", 1)[1] for a in args.args if a.startswith("action=")), None)
        only = module.action_fields(action) if args.command == "feedback" and action else None
        print("\n".join(describe(defaults_of(config_class), only=only)))
        if registries := getattr(module, "REGISTRIES", {}):
            print("\nchoices:")
            print("\n".join(f"  {field}: {', '.join(registry)}" for field, registry in registries.items()))
        return 0
    path = args.args[0] if args.args and "=" not in args.args[0] else None
    overrides = args.args[1:] if path else args.args
    if preset := {**ALGORITHM_ALIASES, **PRESETS, **NASH_ALIASES}.get(
        args.command
    ):  # `rlxf grpo ...` = `rlxf online algo=grpo ...`
        overrides = [*preset[0], *overrides]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(config_class, path, overrides)
    except (ConfigError, FileNotFoundError) as error:
        print(f"rlxf {args.command}: {error}", file=sys.stderr)
        return 2
    from rlxf.data import DataError
    from rlxf.models.loading import ModelNotFound
    from rlxf.parallel import distributed

    section = getattr(config, "distributed", None)
    if section is not None and section.backend == "ray" and not distributed.init_from_environment():
        from rlxf.parallel.ray_ranks import run_on_ray

        run_on_ray(module_name, function_name, config, section)
        return 0
    distributed.init_from_environment()  # under torchrun: one rank of a data-parallel run
    try:
        getattr(module, function_name)(config)
    except DataError as error:
        print(f"rlxf {args.command}: bad input: {error}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"rlxf {args.command}: {error}", file=sys.stderr)
        return 2
    except (ConfigError, ModelNotFound) as error:  # found before any heavy work: one line, no trace
        print(f"rlxf {args.command}: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        if not module_name.startswith("rlxf.feedback"):
            raise
        print(f"rlxf {args.command}: {error}", file=sys.stderr)  # a setup mistake, not a crash
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
