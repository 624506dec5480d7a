"""A/B experiments between ranker versions: deterministic, sticky assignment of units to arms
(assignment.py; the specification is docs/experiments.md)."""
