"""Prefect flows: self_training (Stage 1), value_model and evaluate (Stage 2), pipeline."""

import os

# Prefect waits 20 s for its temporary server, which creates and migrates a fresh database on
# the first run: on 2 busy cores that can take longer, and the run would fail. Read once, when
# Prefect is first imported, which every flow module does after this package.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
