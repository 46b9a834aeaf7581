"""Evaluation tools: what tools/eval_*.py run (file reading, scoring, writing results)."""
