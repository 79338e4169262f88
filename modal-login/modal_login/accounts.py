"""What the page and the JSON API both do: sign up, sign in, wallets, API keys, relaying.

`LoginService` owns the storage, the server secret and the relay; handlers stay thin.
Errors are `ServiceError(status, error, detail)`, turned into JSON or page messages.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivemind_exp.chain.login_client import write_private_json

from . import keystore, metrics, security
from .chainpool import ChainPool, ChainProbe
from .logs import event
from .settings import LoginSettings
from .storage import EmailTaken, Storage, User, Wallet


# Longest a sign-in waits for the new wallet's gas money (local chain) before answering unfunded.
FUND_WAIT_S = 3.0


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
        self.chain = ChainPool(settings.chain_workers)
        self._funding: set[str] = set()  # wallets with a funding transaction under way
        self._funding_lock = threading.Lock()
        self.probe = ChainProbe(self.relay.chain_id_or_none, self.storage.ping, settings.health_interval_s)

    # -- paths ---------------------------------------------------------------------
    @property
    def user_data_path(self) -> Path:
        assert self.settings.user_data_path is not None
        return self.settings.user_data_path

    def is_owner(self, user: User) -> bool:
        """Whether `user` is the machine owner, whose identity the trainer's userData.json holds.

        An explicit owner_email decides; otherwise the first account to sign in claims it for
        good, so a later sign-up (e.g. from a page that reached the service) cannot take it over.
        """
        if self.settings.owner_email:
            return user.email == self.settings.owner_email
        return self.storage.claim_owner(user.id) == user.id

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
        try:
            user = self.check_credentials(email, password)
        except ServiceError as err:
            metrics.sign_in("rejected" if err.status == 401 else "invalid")
            raise
        signed = self.start_session(user)
        metrics.sign_in("success")
        return signed

    def check_credentials(self, email: str, password: str) -> User:
        email = security.normalize_email(email)
        # No account can have such an email or password; refuse before SQLite/argon2 choke on it.
        if security.has_lone_surrogate(email) or security.has_lone_surrogate(password):
            raise ServiceError(400, "InvalidCredentials", "email or password contains invalid Unicode (a lone surrogate)")
        user = self.storage.user_by_email(email)
        if not security.verify_password(user.password_hash if user else None, password) or user is None:
            event("sign_in", logging.WARNING, outcome="rejected")
            raise ServiceError(401, "InvalidCredentials", "wrong email or password (new here? sign up first)")
        return user

    def start_session(self, user: User) -> SignedIn:
        """After the password checked out (or the account was just created): wallet, gas, userData.json, session."""
        wallet = self.ensure_wallet(user)
        funded = self.try_fund(user, wallet)
        if self.is_owner(user):
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
        """On the local chain send the new wallet gas money once; elsewhere the user funds it. Never raises.

        Waits at most FUND_WAIT_S: a slow chain finishes the funding in the background instead
        of holding the sign-in (and a request thread) for the whole chain timeout.
        """
        if wallet.funded:
            return True
        if self.probe.chain_down():
            return False  # the probe just failed to reach it: do not make the sign-in wait on it
        from .relay import ChainUnavailable

        with self._funding_lock:
            if wallet.address in self._funding:
                return False
            self._funding.add(wallet.address)
        try:
            future = self.chain.submit(self._fund_job, user.id, wallet.address)
        except ChainUnavailable as e:
            with self._funding_lock:
                self._funding.discard(wallet.address)
            event("fund_deferred", logging.WARNING, address=wallet.address, detail=str(e))
            return False
        try:
            return future.result(timeout=FUND_WAIT_S)
        except FutureTimeout:
            return False

    def _fund_job(self, user_id: str, address: str) -> bool:
        from .relay import ChainUnavailable

        try:
            if not self.relay.is_local_chain():
                return False
            tx = self.relay.fund(address, self.settings.fund_wei)
        except ChainUnavailable as e:
            event("fund_deferred", logging.WARNING, address=address, detail=str(e))
            return False
        finally:
            with self._funding_lock:
                self._funding.discard(address)
        self.storage.mark_funded(user_id)
        event("wallet_funded", address=address, tx_hash=tx, wei=self.settings.fund_wei)
        return True

    def user_data(self, user: User, wallet: Wallet) -> dict[str, str]:
        return {"orgId": user.org_id, "address": wallet.address, "userId": user.id, "email": user.email}

    def write_user_data(self, user: User, wallet: Wallet) -> None:
        write_private_json(self.user_data_path, self.user_data(user, wallet))

    # -- API keys ------------------------------------------------------------------
    def key_status(self, org_id: str) -> str:
        # An unknown org reads as "pending" like a known one without a key: anonymous callers
        # must not learn which org IDs exist.
        return self.storage.key_status(org_id)

    def activate_key(self, user: User) -> str:
        """New key for the user's org (any earlier one stops working), returned once and never stored.

        Only its hash is kept: the trainer gets the key from its settings (RLSWARM_API_KEY, or the
        file `rl-swarm login` writes on the user's side), not from a shared file of this service.
        """
        wallet = self.ensure_wallet(user)
        key = security.new_api_key()
        self.storage.activate_key(user.org_id, security.token_hash(key))
        if self.is_owner(user):
            self.write_user_data(user, wallet)
        event("api_key_activated", org_id=user.org_id)
        return key

    def revoke_key(self, user: User) -> None:
        n = self.storage.revoke_keys(user.org_id)
        event("api_key_revoked", org_id=user.org_id, keys=n)

    def org_for_key(self, api_key: str | None) -> str:
        """The org an API key belongs to; 401 for missing, unknown or revoked keys."""
        url = self.settings.url()
        if not api_key:
            raise ServiceError(401, "MissingApiKey", "send the trainer's API key as `Authorization: Bearer <key>` "
                               f"(activate it at {url}/ or with `rl-swarm login`)",
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
        """Peer ids of the user's wallet; None when the chain is down, slow or busy (the page still renders)."""
        from .relay import ChainUnavailable

        wallet = self.storage.wallet(user.id)
        if wallet is None:
            return []
        if self.probe.chain_down():
            return None
        try:
            return self.chain.call(self.relay.peer_ids, wallet.address)
        except ChainUnavailable:
            return None
