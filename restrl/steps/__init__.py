"""The pipeline's steps, one module each, in pipeline order.

Each step is a typed function (store, input artifact refs, its config, run ids) -> artifact ref,
cached and resumed by `restrl.artifacts.step`; nothing here imports Prefect (`tasks/` wraps
these functions, `flows/` chains them).

    problems     ProblemSource -> problems                 (load_problems, merge_problems)
    sample       SamplingConfig -> completions             (sharded)
    verify       VerifyConfig -> verdicts                  (sharded)
    rest_data    RestDataConfig -> grpo_data|dpo_data|sft_data
    grpo         GRPOTrainConfig -> policy                 (resumes from checkpoints)
    dpo_sft      DPOTrainConfig | SFTTrainConfig -> policy (resumes from checkpoints)
    mcts         MCTSConfig -> mcts_nodes, mcts_completions (sharded)
    value_data   -> value_data
    value_model  ValueModelConfig -> value_model           (resumes from checkpoints)
    evaluate     EvalConfig -> eval_results
"""
