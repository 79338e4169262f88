"""The fast GRPO step a swarm node runs once per stage.

- ``grpo``         ``GRPOEngine``: the step (generate -> reward -> advantages -> one policy update),
                   ``group_advantages``; re-exports the names callers import from it.
- ``params``       ``GRPOParams`` (validated sizes and hyper-parameters from the device profile),
                   ``GRPOParamsError``, ``StepResult``, ``StepInterrupted`` (``engine.should_stop()``
                   turned true mid-step; nothing is applied), ``RewardError``.
- ``sampling``     ``Sampler``: prompts to token ids and batched decoding over a static KV cache;
                   the engine's generation, and evaluation's without an engine.
- ``logprobs``     completion log-probs with the prompt run once per group, the chunked LM-head
                   log-softmax autograd function, the two-pass backward.
- ``memory``       ``MemoryPlanner`` (micro-batches within ``activation_memory_mb``, how many
                   layers recompute), flat gradient buffers, handing freed memory back to the OS.
- ``checkpoint``   atomic save / restore / load of model, tokenizer, optimizer and sampler state.
- ``hf_internals`` every transformers internal the above rely on (checked by
                   ``tests/unit/test_hf_internals.py`` against the installed version).
- ``lean_decode``  ``LlamaDecodeStep``: one decode step of a Llama-architecture model without the
                   module stack (same arithmetic, ~10-15% less time per token on CPU); the sampler
                   falls back to the model's own forward for anything else.
- ``protocol``     ``TrainingEngine``: what the node and the SAPO player need from an engine
                   (typed without importing torch; ``GRPOEngine`` is the one).
- ``threads``      how many CPU threads torch should use: the CPUs this process may run on
                   (``available_cpus``, ``configure_torch_threads``), and ``ThreadTuner``, which
                   times 1 thread against all of them when other processes compete for the cores.
- ``model_source`` model settings to a local fine-tunable checkpoint (``embedded`` SmolLM2 GGUF ->
                   safetensors once, local dirs, hub ids).
- ``profiles``     device profiles (``hivemind_exp/configs/<device>/*.yaml``) and hardware detection.
- ``hub``          optional push of the trained model to the Hugging Face hub (token checked at start).

``bench/grpo_step.py`` measures the engine against stock ``trl.GRPOTrainer``.
Nothing here imports torch or transformers at import time.
"""
