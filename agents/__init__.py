"""Policies, the turn-level mixture, trajectories and the rollout engine."""
