"""Request/response models. Field names follow the JSON RL Swarm trainers send (camelCase).

Integers are strict: `"5"` or `1.5` for a round number is a client bug worth a 422,
not something to coerce silently into a contract call.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# libp2p peer ids are base58 (Qm..., 12D3Koo...); the bound keeps calldata small.
PeerId = Annotated[str, StringConstraints(pattern=r"^[1-9A-HJ-NP-Za-km-z]{1,128}$")]
OrgId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
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
    email: Annotated[str, StringConstraints(min_length=3, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


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
    apiKey: Annotated[str, Field(description="shown once; also written to the service's apiKey file (mode 0600)")]
    status: KeyStatus


class RevokeKeyResponse(BaseModel):
    orgId: str
    status: KeyStatus


class HealthResponse(BaseModel):
    status: Literal["ok"]
    chain: Literal["ok", "down"]
    chainId: int | None = None
