"""The login service (port 3000): wallets, the trainer's API key, and the contract relay.

Map of the package:

- ``settings``   ``LoginSettings``: every knob, env prefix ``RLSWARM_LOGIN_``.
- ``app``        ``create_app(settings) -> FastAPI``: the page, the JSON API, middleware.
- ``schemas``    pydantic request/response models (they make the OpenAPI schema).
- ``storage``    SQLite: users, sessions, wallets (encrypted keystores), API keys.
- ``security``   password hashing (argon2), session/CSRF tokens, API key hashing.
- ``keystore``   the server secret (0600 file or env) and V3 keystore encrypt/decrypt.
- ``accounts``   sign-up / sign-in / wallet creation / key activation, shared by page and API.
- ``ratelimit``  in-process token buckets (per IP for sign-in, per org for writes).
- ``relay``      signs the trainer's contract calls from the user's wallet via ``hivemind_exp.chain``.
- ``logs``       structured (JSON) event logging that never carries secrets.
- ``templates/`` and ``static/``: the server-rendered page and its stylesheet.
"""
