"""Evaluation: RM accuracy, preference accuracy, win rate, KL, lengths, and the report."""
