"""The 3-stage game of a round: prompts, parsing, rewards and winners.

- ``prompts``  chat prompts of stage 1 (answer), 2 (critique), 3 (decide); ``swarm_view``
               selects, names and parses the peers' answers/critiques a prompt shows;
               ``stage_prompt(stage, problem, answers, critiques)``.
- ``parser``   ``TagParser`` / ``stage_parser(stage)``: parse a completion's tags once into
               ``Parsed`` (values + format compliance); never raises on bad input.
- ``answers``  ``extract_number``, ``answers_match``, ``reference_from_gsm8k``: the one
               definition of "the final numeric answer", shared with the evaluator.
- ``rewards``  reward functions ``f(parsed, ctx) -> float``, ``Rubric``, ``stage_rubric(stage)``,
               ``RewardContext`` / ``reward_context(stage, problem, answers, critiques)``.
- ``winners``  ``pick_winners``: per-peer round scores and the deterministic top-k.
- ``stage``    stage numbers and names (swarm counts from 1, the contract from 0); ``from_chain`` /
               ``to_chain`` are the only conversions.
- ``data``     dataset sources of a round's problems: GSM8K hub, local JSONL, built-in generator.
- ``evaluation`` greedy accuracy / format / length of a model on held-out problems.

Peer pseudonyms come from ``hivemind_exp.swarm.names``. Nothing here imports torch or hivemind.
"""
