"""What the page and the JSON API both do: sign up, sign in, wallets, API keys, relaying.

`LoginService` owns the storage, the server secret and the relay; handlers stay thin.
Errors are `ServiceError(status, error, detail)`, turned into JSON or page messages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivemind_exp.login_client import write_private_json

from . import keystore, security
from .logs import event
from .settings import LoginSettings
from .storage import EmailTaken, Storage, User, Wallet


class ServiceError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class SignedIn:
    user: User
    wallet: Wallet
    session_token: str
    funded: bool


class LoginService:
    def __init__(self, settings: LoginSettings):
        from .relay import Relay

        self.settings = settings
        data_dir = settings.data_dir
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
        secret_value = settings.server_secret.get_secret_value() if settings.server_secret else None
        self.secret = keystore.load_or_create_secret(settings.secret_path, secret_value)
        self.csrf_key = keystore.derive(self.secret, "csrf")
        self.storage = Storage(settings.db_path)
        self.relay = Relay(settings)

    # -- paths ---------------------------------------------------------------------
    @property
    def user_data_path(self) -> Path:
        assert self.settings.user_data_path is not None
        return self.settings.user_data_path

    @property
    def api_key_path(self) -> Path:
        assert self.settings.api_key_path is not None
        return self.settings.api_key_path

    # -- accounts ------------------------------------------------------------------
    def sign_up(self, email: str, password: str) -> User:
        email = security.normalize_email(email)
        problem = security.email_problem(email) or security.password_problem(password, self.settings.min_password_length)
        if problem:
            raise ServiceError(400, "InvalidCredentials", problem)
        try:
            user = self.storage.create_user(email, security.hash_password(password))
        except EmailTaken:
            raise ServiceError(409, "EmailTaken", "an account with this email exists: sign in instead") from None
        event("sign_up", user_id=user.id, org_id=user.org_id)
        return user

    def sign_in(self, email: str, password: str) -> SignedIn:
        user = self.storage.user_by_email(security.normalize_email(email))
        if not security.verify_password(user.password_hash if user else None, password) or user is None:
            event("sign_in", logging.WARNING, outcome="rejected")
            raise ServiceError(401, "InvalidCredentials", "wrong email or password (new here? sign up first)")
        return self.start_session(user)

    def start_session(self, user: User) -> SignedIn:
        """After the password checked out (or the account was just created): wallet, gas, userData.json, session."""
        wallet = self.ensure_wallet(user)
        funded = self.try_fund(user, wallet)
        self.write_user_data(user, wallet)
        token = security.new_token()
        self.storage.add_session(security.token_hash(token), user.id, self.settings.session_ttl_s)
        event("sign_in", user_id=user.id, org_id=user.org_id, address=wallet.address, funded=funded)
        return SignedIn(user=user, wallet=wallet, session_token=token, funded=funded)

    def sign_out(self, session_token: str) -> None:
        self.storage.drop_session(security.token_hash(session_token))

    def session_user(self, session_token: str | None) -> User | None:
        if not session_token or len(session_token) > 200:
            return None
        return self.storage.session_user(security.token_hash(session_token))

    def csrf_token(self, binding: str) -> str:
        return security.csrf_for(self.csrf_key, binding)

    def session_csrf(self, session_token: str) -> str:
        return self.csrf_token("session:" + security.token_hash(session_token))

    def ensure_wallet(self, user: User) -> Wallet:
        wallet = self.storage.wallet(user.id)
        if wallet is None:
            address, ks = keystore.new_wallet(self.secret, user.id)
            wallet = self.storage.add_wallet(user.id, address, ks)
            event("wallet_created", user_id=user.id, address=wallet.address)
        return wallet

    def try_fund(self, user: User, wallet: Wallet) -> bool:
        """On the local chain send the new wallet gas money once; elsewhere the user funds it. Never raises."""
        if wallet.funded:
            return True
        from .relay import ChainUnavailable

        try:
            if not self.relay.is_local_chain():
                return False
            tx = self.relay.fund(wallet.address, self.settings.fund_wei)
        except ChainUnavailable as e:
            event("fund_deferred", logging.WARNING, address=wallet.address, detail=str(e))
            return False
        self.storage.mark_funded(user.id)
        event("wallet_funded", address=wallet.address, tx_hash=tx, wei=self.settings.fund_wei)
        return True

    def user_data(self, user: User, wallet: Wallet) -> dict[str, str]:
        return {"orgId": user.org_id, "address": wallet.address, "userId": user.id, "email": user.email}

    def write_user_data(self, user: User, wallet: Wallet) -> None:
        write_private_json(self.user_data_path, self.user_data(user, wallet))

    # -- API keys ------------------------------------------------------------------
    def key_status(self, org_id: str) -> str:
        if self.storage.user_by_org(org_id) is None:
            raise ServiceError(404, "UnknownOrg", f"no account has orgId {org_id!r}: sign in on the login page to get one (see userData.json)")
        return self.storage.key_status(org_id)

    def activate_key(self, user: User) -> str:
        """New key for the user's org (any earlier one stops working); written to the apiKey file for the trainer."""
        wallet = self.ensure_wallet(user)
        key = security.new_api_key()
        self.storage.activate_key(user.org_id, security.token_hash(key))
        write_private_json(self.api_key_path, {"orgId": user.org_id, "apiKey": key})
        # The trainer reads the org from userData.json: keep it pointing at the user who holds the key.
        self.write_user_data(user, wallet)
        event("api_key_activated", org_id=user.org_id, key_file=str(self.api_key_path))
        return key

    def revoke_key(self, user: User) -> None:
        n = self.storage.revoke_keys(user.org_id)
        try:
            from hivemind_exp.login_client import read_api_key

            if read_api_key(self.api_key_path).org_id == user.org_id:
                os.unlink(self.api_key_path)
        except (FileNotFoundError, ValueError):
            pass
        event("api_key_revoked", org_id=user.org_id, keys=n)

    def org_for_key(self, api_key: str | None) -> str:
        """The org an API key belongs to; 401 for missing, unknown or revoked keys."""
        url = self.settings.url()
        if not api_key:
            raise ServiceError(401, "MissingApiKey", "send the trainer's API key as `Authorization: Bearer <key>` "
                               f"(activate it at {url}/ or with `rl-swarm login`; the service writes it to its apiKey file)",
                               {"WWW-Authenticate": "Bearer"})
        found = self.storage.key_lookup(security.token_hash(api_key)) if len(api_key) <= 200 else None
        if found is None:
            raise ServiceError(401, "InvalidApiKey", f"this API key is not one the service issued; activate a key at {url}/",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        org_id, status = found
        if status != "activated":
            raise ServiceError(401, "RevokedApiKey", f"this API key was revoked (or replaced by a newer one); activate a new key at {url}/",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return org_id

    def user_for_write(self, key_org: str, body_org: str) -> User:
        user = self.storage.user_by_org(body_org)
        if user is None:
            raise ServiceError(404, "UnknownOrg", f"no account has orgId {body_org!r}; use the orgId from userData.json")
        if user.org_id != key_org:
            raise ServiceError(403, "WrongOrg", "this API key belongs to another org; use the key activated by the same user as orgId")
        return user

    # -- relay ---------------------------------------------------------------------
    def unlock(self, user: User) -> Any:
        wallet = self.storage.wallet(user.id)
        if wallet is None:
            raise ServiceError(409, "NoWallet", "this account has no wallet yet: sign in once on the login page")
        if not wallet.funded:
            self.try_fund(user, wallet)
        return keystore.unlock(self.secret, user.id, wallet.keystore)

    def peer_ids(self, user: User) -> list[str] | None:
        from .relay import ChainUnavailable

        wallet = self.storage.wallet(user.id)
        if wallet is None:
            return []
        try:
            return self.relay.peer_ids(wallet.address)
        except ChainUnavailable:
            return None
