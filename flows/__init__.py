"""Prefect flows: self_training (Stage 1), value_model and evaluate (Stage 2), pipeline."""
