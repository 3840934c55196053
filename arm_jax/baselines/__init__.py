"""Simple baselines the ranker is measured against (logistic regression)."""
