"""SAPO: swarm sampling policy optimisation over procedurally generated ReasoningGym tasks.

Files of the package (one line each; add yours):

- tasks.py   the problem source: `TaskMix` (tasks, weights, configs, curriculum levels),
             `ReasoningGymSource` (draw / regenerate / score / held_out), `TaskSpec` (what
             travels instead of question + answer), `TaskProblem`.
- rubric.py  the SAPO chat prompt (`sapo_prompt`) and reward (`sapo_rubric`): the task's own
             score_answer on <answer>, an untagged fallback, a small format reward.

The shipped default mix is hivemind_exp/configs/sapo/default_mix.yaml (chosen by measuring
the embedded model's starting accuracy, bench/rg_start_accuracy.py).
"""
