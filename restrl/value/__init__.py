"""The value model (VM): training and inference (DESIGN.md step 7; REFERENCE.md section 6).

A VM reads a question and a program state and predicts the value target of that state, a
reward in [min_rw, max_rw]. The question is the RAW problem text (`Problem.prompt`, no chat
template, no instructions) and the answer is the FULL state, the problem's init_code included
(a partial program for MCTS nodes, a whole one for best-of-N), as in the ReST-RL seed
(`rms/input.py`).

    config   ValueModelConfig (light: no torch, it is a flow parameter)
    data     the VM text, (text, reward) examples from value_data rows, the train/test split
    metrics  raw outputs -> scores, and the test metrics (mse, accuracy, Spearman)
    model    the three model classes, tokenisation, batched forward, save/load
    scorer   ValueModelScorer (a trained VM) and HFRewardModelScorer (any single-logit ORM)
    train    the losses, the Trainer subclass and `train_value_model`

This package imports nothing heavy itself: `restrl.value.config` stays cheap to import.
"""
