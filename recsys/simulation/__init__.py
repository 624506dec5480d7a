"""Simulated users with known true tastes, driving the real cluster (`recsys simulate`): the end-to-end
proof of experiments (docs/experiments.md, "Simulation")."""
