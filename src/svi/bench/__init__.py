"""Measurement: weight-free metrics against world ground truth, rollouts, reports."""
