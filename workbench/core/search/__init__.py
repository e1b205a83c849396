"""Hyper-parameter search with Optuna (imported only when a search runs): the ranges per task and
method (space.py) and the study whose trials are ordinary runs (study.py)."""
