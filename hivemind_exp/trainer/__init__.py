"""The fast GRPO step a swarm node runs once per stage.

- ``grpo``     ``GRPOEngine`` (batched sampling with a KV cache, one policy update per step,
               save/load), ``GRPOParams`` (validated sizes and hyper-parameters from the device
               profile), ``StepResult``, ``group_advantages``, ``StepInterrupted`` (raised when
               ``engine.should_stop()`` turns true mid-step; nothing is applied).
- ``lean_decode`` ``LlamaDecodeStep``: one decode step of a Llama-architecture model without the
               module stack (same arithmetic, ~10-15% less time per token on CPU); the engine
               falls back to the model's own forward for anything else.
- ``threads``  how many CPU threads torch should use: the CPUs this process may run on
               (``available_cpus``, ``configure_torch_threads``), and ``ThreadTuner``, which
               times 1 thread against all of them when other processes compete for the cores.

``bench/grpo_step.py`` measures the engine against stock ``trl.GRPOTrainer``.
Nothing here imports torch at import time.
"""
