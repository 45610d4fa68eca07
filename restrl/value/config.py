"""`ValueModelConfig`: everything value-model training reads. Light: a flow parameter and a
`--set` target, so importing it loads neither torch nor transformers."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field

from restrl.configs import config
from restrl.training.settings import TrainerSettings, retuned

RMClass = Literal["transformers_scalar", "standard_scalar", "transformers_prob"]
RM_CLASSES: tuple[str, ...] = typing.get_args(RMClass)


@config
class ValueModelConfig(TrainerSettings):
    """Everything VM training reads. Defaults are the ReST-RL README's example run
    (`rms/train.sh`); the seed script's own argparse defaults differ and are noted per field."""

    # --- model ---
    rm_class: RMClass = Field(
        "transformers_scalar", description="\"transformers_scalar\" (sequence-classification "
        "head, 1 output, MSE; the README's choice), \"standard_scalar\" (linear head over a "
        "causal LM's last-token logits, summed MSE) or \"transformers_prob\" (2-class head, "
        "soft-label weighted cross-entropy, prediction = softmax[1]).")
    max_length: int = Field(
        2048, ge=1, description="Tokens of the VM text kept, from the END (left truncation "
        "keeps the latest code, which decides a state's value); the script's default is 1024.")
    min_rw: float = Field(0.0, description="Lower end of the verification reward; scalar "
                          "predictions are clipped to [min_rw, max_rw] (prob predictions are "
                          "probabilities, never clipped).")
    max_rw: float = Field(1.0, description="Upper end of the verification reward.")

    # --- data split and test metrics ---
    eval_fraction: float = Field(
        0.05, ge=0, lt=1, description="Share of rows held out at random (seeded) as the test "
        "split, the seed's 95/5 split; 0 disables the test split (then no \"before\"/\"after\" "
        "metrics and no best-checkpoint selection).")
    min_eval_rows: int = Field(
        100, ge=0, description="The test split has at least this many rows (the seed's "
        "minimum), but never more than (rows - 1) // 2, so the train split stays larger (the "
        "seed instead refuses data sets of 200 rows or fewer). 0 keeps the plain fraction.")
    test_tol: float = Field(0.05, description="A test prediction is \"accurate\" when "
                            "|pred - target| < test_tol (strict, as the seed's `--test_tol`).")
    eval_batch_size: int | None = Field(
        None, description="Test batch size; None uses batch_size_per_device, as the seed does. "
        "Scores do not depend on it (left padding + position_ids).")

    # --- loss ---
    positive_weight: float = Field(
        0.5, ge=0, le=1, description="transformers_prob only: w in the class weights [1 - w, w] "
        "of the cross-entropy (the seed's `--loss_weight_factor`); 0.5 weighs both classes "
        "alike.")
    ranking_weight: float = Field(
        0.0, ge=0, description="restrl option (0, the default, is the seed's loss alone): "
        "weight of a within-problem ranking term added to the loss. For every two rows of one "
        "problem in a micro-batch whose targets differ, -log sigmoid(s_high - s_low) on their "
        "raw scores (RankNet), averaged over those pairs. When it is on, micro-batches are "
        "drawn problem by problem so that they hold such pairs, and the test split's loss (which "
        "picks the best checkpoint) includes the term too. Best-of-N chooses among the samples "
        "of one problem, which the squared error alone does not teach.")

    # --- training (TrainerSettings, with the README example's values) ---
    learning_rate: float = retuned(
        "learning_rate", 1e-7, "VM: 1e-7, the seed's value for 7B models; tiny models need "
        "~1e-4 to 1e-3 (their heads start from scratch).")
    epochs: float = retuned("epochs", 2.0, "VM: 2, the README example (the script's default "
                            "is 1).")
    batch_size_per_device: int = retuned("batch_size_per_device", 1, "VM: 1, the README "
                                         "example (the script's default is 4).")
    save_steps: float = retuned(
        "save_steps", 0.5, "VM: each checkpoint also evaluates the test split (the seed's "
        "eval_steps = save_steps) and the best by test loss is kept; 0 keeps the last model "
        "(restrl option). The script's default is 0.25.")
    seed: int = retuned("seed", 0, "VM: 0, which also seeds the split and the head's "
                        "initialisation.")

    @classmethod
    def toy(cls) -> ValueModelConfig:
        """The CPU demo's value model: the tiny model's fresh head needs a large lr."""
        return cls(learning_rate=1e-3, epochs=3.0, batch_size_per_device=16, max_length=512,
                   save_steps=0)

    def __post_init__(self) -> None:
        if not self.min_rw < self.max_rw:
            raise ValueError(f"min_rw ({self.min_rw}) must be below max_rw ({self.max_rw})")
