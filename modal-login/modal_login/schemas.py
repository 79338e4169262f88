"""Request/response models. Field names follow the JSON RL Swarm trainers send (camelCase).

Integers are strict: `"5"` or `1.5` for a round number is a client bug worth a 422,
not something to coerce silently into a contract call.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from . import security

# libp2p peer ids are base58 (Qm..., 12D3Koo...); the bound keeps calldata small.
PeerId = Annotated[str, StringConstraints(pattern=r"^[1-9A-HJ-NP-Za-km-z]{1,128}$")]


def _valid_unicode(v: str) -> str:
    # SQLite cannot encode a lone surrogate: refuse it here (422 naming the field), not with a 500.
    if security.has_lone_surrogate(v) or "\x00" in v:
        raise ValueError("contains invalid characters (a lone surrogate or NUL)")
    return v


OrgId = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_valid_unicode)]
Uint = Annotated[int, Field(strict=True, ge=0, le=2**256 - 1)]
Int256 = Annotated[int, Field(strict=True, ge=-(2**255), le=2**255 - 1)]
KeyStatus = Literal["activated", "pending", "revoked"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Hex with 0x. A 4096-bit key's protobuf PublicKey is ~550 bytes, its signature 512 bytes.
HexBytes = Annotated[str, StringConstraints(pattern=r"^0x([0-9a-fA-F]{2}){1,1024}$")]


class RegisterPeerRequest(_Strict):
    """The trainer proves its peer key: it signs the contract's registration message for the user's wallet."""

    orgId: OrgId
    peerId: PeerId
    publicKey: Annotated[HexBytes, Field(description="protobuf libp2p PublicKey (RSA) whose multihash is peerId")]
    signature: Annotated[HexBytes, Field(description="RSA PKCS#1 v1.5 SHA-256 signature over the contract's "
                                                     "registrationMessage(wallet, peerId)")]


class SubmitRewardRequest(_Strict):
    orgId: OrgId
    roundNumber: Uint
    stageNumber: Uint
    reward: Int256
    peerId: PeerId


class SubmitWinnerRequest(_Strict):
    orgId: OrgId
    roundNumber: Uint
    winners: Annotated[list[PeerId], Field(min_length=1, max_length=32)]
    peerId: PeerId


class TxResponse(BaseModel):
    txHash: Annotated[str, Field(description="hash of the mined transaction, 0x + 64 hex")]
    blockNumber: int | None = None


class ErrorResponse(BaseModel):
    error: Annotated[str, Field(description="machine-readable name, e.g. RewardAlreadySubmitted, InvalidApiKey, ChainUnavailable")]
    detail: Annotated[str, Field(description="what went wrong and what to do")]


class WalletAddressResponse(BaseModel):
    orgId: str
    address: Annotated[str, Field(description="the user's wallet, which sends this org's contract calls")]


class KeyStatusResponse(BaseModel):
    orgId: str
    status: KeyStatus


class AuthRequest(_Strict):
    email: Annotated[str, StringConstraints(min_length=3, max_length=254), Field(json_schema_extra={"format": "email"})]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]

    # Messages name the problem, never the value (422 bodies and logs must not carry it).
    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        problem = security.email_problem(security.normalize_email(v))
        if problem:
            raise ValueError(problem.removeprefix("email: "))
        return v

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        if security.has_lone_surrogate(v) or "\x00" in v:
            raise ValueError("contains invalid characters (a lone surrogate or NUL)")
        return v


class SignUpRequest(AuthRequest):
    """Sign-up also refuses passwords that are only spaces (sign-in just checks the hash)."""

    @field_validator("password")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must contain something other than spaces")
        return v


class UserDataModel(BaseModel):
    orgId: str
    address: str
    userId: str
    email: str


class SessionResponse(BaseModel):
    user: UserDataModel
    csrfToken: Annotated[str, Field(description="send back as X-CSRF-Token on /api/auth/* writes")]
    funded: bool


class MeResponse(BaseModel):
    user: UserDataModel
    keyStatus: KeyStatus
    peerIds: list[str] | None = Field(None, description="peer ids registered to the wallet; null when the chain is unreachable")


class ActivateKeyResponse(BaseModel):
    orgId: str
    apiKey: Annotated[str, Field(description="shown once and never stored in clear: give it to the trainer as RLSWARM_API_KEY")]
    status: KeyStatus


class RevokeKeyResponse(BaseModel):
    orgId: str
    status: KeyStatus


class HealthResponse(BaseModel):
    status: Literal["ok"]
    chain: Literal["ok", "down"]
    chainId: int | None = None
