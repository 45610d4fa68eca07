"""Prefect tasks: thin wrappers over `restrl.stages` with cache policies, retries and artifacts."""
