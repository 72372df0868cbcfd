"""Wire types of the Cashu protocol (NUT-00 .. NUT-23), as the mint speaks them.

Responses ignore fields they do not know, so a newer mint still parses.
Hex strings stay hex strings here; nuts.crypto turns them into curve points.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class DLEQ(WireModel):
    """NUT-12 proof on a blind signature: (e, s)."""

    e: str
    s: str


class ProofDLEQ(WireModel):
    """NUT-12 proof carried inside a token's proof: (e, s) and the blinding factor r."""

    e: str
    s: str
    r: str


class Proof(WireModel):
    id: str
    amount: int
    secret: str
    C: str
    dleq: ProofDLEQ | None = None
    witness: str | None = None

    def to_wire(self) -> dict:
        """The proof as an input of a swap or melt request (no DLEQ: the mint does not want r)."""
        data = {"id": self.id, "amount": self.amount, "secret": self.secret, "C": self.C}
        if self.witness is not None:
            data["witness"] = self.witness
        return data


class BlindedMessage(WireModel):
    amount: int
    id: str
    B_: str

    def to_wire(self) -> dict:
        return {"amount": self.amount, "id": self.id, "B_": self.B_}


class BlindSignature(WireModel):
    amount: int
    id: str
    C_: str
    dleq: DLEQ | None = None


class KeysetInfo(WireModel):
    """An entry of GET /v1/keysets."""

    id: str
    unit: str
    active: bool = True
    input_fee_ppk: int = 0
    final_expiry: int | None = None


class KeysetKeys(WireModel):
    """An entry of GET /v1/keys[/{id}]: the public key per amount."""

    id: str
    unit: str
    keys: dict[int, str]
    final_expiry: int | None = None


class MintQuoteState(StrEnum):
    UNPAID = "UNPAID"
    PAID = "PAID"
    ISSUED = "ISSUED"


class MeltQuoteState(StrEnum):
    UNPAID = "UNPAID"
    PENDING = "PENDING"
    PAID = "PAID"


class ProofSpentState(StrEnum):
    UNSPENT = "UNSPENT"
    PENDING = "PENDING"
    SPENT = "SPENT"


class MintQuote(WireModel):
    quote: str
    request: str
    state: MintQuoteState
    expiry: int | None = None
    amount: int | None = None
    unit: str | None = None
    pubkey: str | None = None


class MeltQuote(WireModel):
    quote: str
    amount: int
    fee_reserve: int
    state: MeltQuoteState
    expiry: int | None = None
    unit: str | None = None
    request: str | None = None
    payment_preimage: str | None = None
    change: list[BlindSignature] | None = None


class ProofStateReport(WireModel):
    Y: str
    state: ProofSpentState
    witness: str | None = None


class MintInfo(WireModel):
    """GET /v1/info (NUT-06). `nuts` is kept as the mint sent it."""

    name: str | None = None
    pubkey: str | None = None
    version: str | None = None
    description: str | None = None
    nuts: dict[str, dict | list] = {}

    def supports(self, nut: int) -> bool:
        entry = self.nuts.get(str(nut))
        if isinstance(entry, dict):
            return bool(entry.get("supported", True)) and not entry.get("disabled", False)
        return entry is not None


class RestoreResult(WireModel):
    """POST /v1/restore: the outputs the mint has signed, each with its signature."""

    outputs: list[BlindedMessage]
    signatures: list[BlindSignature]
