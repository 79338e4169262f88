"""Optional push of the trained model to the Hugging Face hub.

The token is checked at start (who it belongs to, whether it can write), so a bad token
is reported before hours of training rather than at the first push.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class HubError(RuntimeError):
    pass


def check_write_token(token: str, repo_id: str, endpoint: str | None = None) -> str:
    """Return the account name; raise HubError saying what is wrong with the token.

    `endpoint` defaults to HF_ENDPOINT (https://huggingface.co); tests point it at a local fake.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not token:
        raise HubError("--push-to-hub needs HF_TOKEN (env or .env): create a token with write access at "
                       "https://huggingface.co/settings/tokens")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.whoami()
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HubError(f"HF_TOKEN was rejected by the hub (HTTP {status}): create a token with write access at "
                       "https://huggingface.co/settings/tokens") from None
    except Exception as err:  # noqa: BLE001 - network failures of any kind
        raise HubError(f"cannot reach the Hugging Face hub to check HF_TOKEN ({type(err).__name__}: {err}); "
                       "unset --push-to-hub to train without pushing") from None
    name = info.get("name", "?")
    access = (info.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "read":
        raise HubError(f"HF_TOKEN of {name} is read-only: --push-to-hub needs a token with write access")
    if role == "fineGrained":
        # A fine-grained token writes where one of its scopes grants repo.write on the target
        # repo or on its owner (the user or organisation).
        owner = repo_id.split("/")[0]
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        if not any("repo.write" in (s.get("permissions") or []) and (s.get("entity") or {}).get("name") in (owner, repo_id)
                   for s in scoped):
            raise HubError(f"HF_TOKEN of {name} is fine-grained without repo.write on {repo_id} or {owner}: "
                           "add that permission to the token or use a write token")
    return name


def push_checkpoint(directory: Path, repo_id: str, token: str, message: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=True)
    api.upload_folder(folder_path=str(directory), repo_id=repo_id, commit_message=message,
                      allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*"])
    log.info("pushed %s to https://huggingface.co/%s", directory, repo_id)
