"""Pipelines: several recipes run in order, each stage's output the next one's input (the Pareto
sweep over reward weightings, MPO's DPO-then-RL)."""
