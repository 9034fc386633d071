"""SPL token helpers: instructions to create mints and accounts and to pay (as a wallet following
Solana Pay does), and conveniences that run them on a `LocalChain`.

Instructions come from solana-py's `spl.token.instructions` where it has them; the Token-2022
transfer fee configuration is packed here (solana-py has no builder for it), and so is the memo
(solana-py's makes the signer writable, which wallets do not).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from spl.token import instructions as spl
from spl.token.models import InitializeMint2Params, MintToCheckedParams, TransferCheckedParams

from localnet.chain import LocalChain
from localnet.layouts import (
    KEEP,
    MINT_LEN,
    TOKEN_ACCOUNT_LEN,
    KeyPatch,
    is_token_program,
    parse_mint,
    parse_token_account,
    patch_token_account,
)
from localnet.programs import MEMO_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

_TRANSFER_FEE_EXTENSION = 26  # Token-2022 TokenInstruction::TransferFeeExtension
_INITIALIZE_TRANSFER_FEE_CONFIG = 0
_TRANSFER_FEE_CONFIG_LEN = 108


@dataclass(frozen=True, slots=True)
class TransferFee:
    """A Token-2022 transfer fee: `basis_points` of each transfer, at most `maximum_fee`."""

    basis_points: int
    maximum_fee: int

    def fee_for(self, amount: int) -> int:
        fee = -(-amount * self.basis_points // 10_000)  # the program rounds up
        return min(fee, self.maximum_fee)


def associated_token_address(
    owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID
) -> Pubkey:
    return spl.get_associated_token_address(owner, mint, token_program)


def mint_space(transfer_fee: TransferFee | None = None) -> int:
    """Bytes a mint needs: 82, or with the transfer fee extension the base padded to 165,
    the account type byte and one TLV entry."""
    if transfer_fee is None:
        return MINT_LEN
    return TOKEN_ACCOUNT_LEN + 1 + 4 + _TRANSFER_FEE_CONFIG_LEN


def initialize_transfer_fee_config(
    mint: Pubkey, authority: Pubkey | None, fee: TransferFee
) -> Instruction:
    def option(key: Pubkey | None) -> bytes:
        return b"\x01" + bytes(key) if key is not None else b"\x00"

    data = (
        bytes([_TRANSFER_FEE_EXTENSION, _INITIALIZE_TRANSFER_FEE_CONFIG])
        + option(authority)
        + option(authority)
        + struct.pack("<HQ", fee.basis_points, fee.maximum_fee)
    )
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def create_mint_instructions(
    payer: Pubkey,
    mint: Pubkey,
    *,
    decimals: int,
    mint_authority: Pubkey,
    lamports: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    transfer_fee: TransferFee | None = None,
    freeze_authority: Pubkey | None = None,
) -> list[Instruction]:
    """Create and initialize a mint account (`lamports` must cover its rent)."""
    if transfer_fee is not None and token_program != TOKEN_2022_PROGRAM_ID:
        raise ValueError("a transfer fee needs the Token-2022 program")
    space = mint_space(transfer_fee)
    create = create_account(
        CreateAccountParams(
            from_pubkey=payer, to_pubkey=mint, lamports=lamports, space=space, owner=token_program
        )
    )
    extensions = (
        [initialize_transfer_fee_config(mint, mint_authority, transfer_fee)]
        if transfer_fee is not None
        else []
    )
    init = spl.initialize_mint2(
        InitializeMint2Params(
            decimals=decimals,
            program_id=token_program,
            mint=mint,
            mint_authority=mint_authority,
            freeze_authority=freeze_authority,
        )
    )
    return [create, *extensions, init]


def create_associated_token_account_instruction(
    payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID
) -> Instruction:
    """Create `owner`'s associated token account for `mint` unless it exists (idempotent)."""
    return spl.create_idempotent_associated_token_account(payer, owner, mint, token_program)


def mint_to_instruction(
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
) -> Instruction:
    return spl.mint_to_checked(
        MintToCheckedParams(
            program_id=token_program,
            mint=mint,
            dest=destination,
            mint_authority=authority,
            amount=amount,
            decimals=decimals,
        )
    )


def transfer_checked_instruction(
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    owner: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    references: Sequence[Pubkey] = (),
) -> Instruction:
    """`transferChecked`; each reference is appended as a read-only, non-signer key, the way
    Solana Pay marks a payment so that `getSignaturesForAddress(reference)` finds it."""
    ix = spl.transfer_checked(
        TransferCheckedParams(
            program_id=token_program,
            source=source,
            mint=mint,
            dest=destination,
            owner=owner,
            amount=amount,
            decimals=decimals,
        )
    )
    extra = [AccountMeta(reference, False, False) for reference in references]
    return Instruction(ix.program_id, ix.data, [*ix.accounts, *extra])


def memo_instruction(text: str, signers: Sequence[Pubkey] = ()) -> Instruction:
    """An SPL Memo (v2) instruction; `signers` must sign the transaction."""
    accounts = [AccountMeta(signer, True, False) for signer in signers]
    return Instruction(MEMO_PROGRAM_ID, text.encode(), accounts)


def payment_instructions(
    payer: Pubkey,
    *,
    mint: Pubkey,
    recipient_owner: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    references: Sequence[Pubkey] = (),
    memo: str | None = None,
    create_recipient_account: bool = False,
) -> list[Instruction]:
    """What a wallet sends to pay `amount` base units to `recipient_owner`'s associated token
    account: optionally create that account, `transferChecked` from the payer's, then a memo."""
    source = associated_token_address(payer, mint, token_program)
    destination = associated_token_address(recipient_owner, mint, token_program)
    ixs: list[Instruction] = []
    if create_recipient_account:
        ixs.append(
            create_associated_token_account_instruction(payer, recipient_owner, mint, token_program)
        )
    ixs.append(
        transfer_checked_instruction(
            source, mint, destination, payer, amount, decimals, token_program, references
        )
    )
    if memo is not None:
        ixs.append(memo_instruction(memo))
    return ixs


def build_payment(
    payer: Keypair,
    blockhash: Hash,
    *,
    mint: Pubkey,
    recipient_owner: Pubkey,
    amount: int,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    references: Sequence[Pubkey] = (),
    memo: str | None = None,
    create_recipient_account: bool = False,
) -> VersionedTransaction:
    """A signed version 0 payment transaction (see `payment_instructions`)."""
    ixs = payment_instructions(
        payer.pubkey(),
        mint=mint,
        recipient_owner=recipient_owner,
        amount=amount,
        decimals=decimals,
        token_program=token_program,
        references=references,
        memo=memo,
        create_recipient_account=create_recipient_account,
    )
    return VersionedTransaction(MessageV0.try_compile(payer.pubkey(), ixs, [], blockhash), [payer])


# --- on a LocalChain -------------------------------------------------------------------------


def mint_info(chain: LocalChain, mint: Pubkey) -> tuple[Pubkey, int]:
    """The token program owning `mint`, and its decimals; ValueError if it is not a mint."""
    account = chain.get_account(mint)
    state = None if account is None else parse_mint(account.owner, bytes(account.data))
    if account is None or state is None:
        raise ValueError(f"{mint} is not a mint")
    return account.owner, state.decimals


def create_mint(
    chain: LocalChain,
    authority: Keypair,
    *,
    decimals: int,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
    transfer_fee: TransferFee | None = None,
    mint: Keypair | None = None,
) -> Pubkey:
    """Create a mint whose mint authority (and fee payer) is `authority`."""
    mint_keypair = mint or Keypair()
    ixs = create_mint_instructions(
        authority.pubkey(),
        mint_keypair.pubkey(),
        decimals=decimals,
        mint_authority=authority.pubkey(),
        lamports=chain.rent_exempt_minimum(mint_space(transfer_fee)),
        token_program=token_program,
        transfer_fee=transfer_fee,
    )
    chain.execute(ixs, authority, [mint_keypair])
    return mint_keypair.pubkey()


def create_token_account(chain: LocalChain, payer: Keypair, owner: Pubkey, mint: Pubkey) -> Pubkey:
    """`owner`'s associated token account for `mint`, created (paid by `payer`) if missing."""
    program, _ = mint_info(chain, mint)
    chain.execute(
        [create_associated_token_account_instruction(payer.pubkey(), owner, mint, program)], payer
    )
    return associated_token_address(owner, mint, program)


def mint_to(
    chain: LocalChain, authority: Keypair, mint: Pubkey, owner: Pubkey, amount: int
) -> Pubkey:
    """Mint `amount` base units into `owner`'s associated token account (created if missing)."""
    program, decimals = mint_info(chain, mint)
    account = associated_token_address(owner, mint, program)
    ixs = [
        create_associated_token_account_instruction(authority.pubkey(), owner, mint, program),
        mint_to_instruction(mint, account, authority.pubkey(), amount, decimals, program),
    ]
    chain.execute(ixs, authority)
    return account


def set_token_account(
    chain: LocalChain,
    owner: Pubkey,
    mint: Pubkey,
    token_program: Pubkey | None = None,
    *,
    amount: int | None = None,
    delegate: KeyPatch = KEEP,
    state: str | None = None,
    delegated_amount: int | None = None,
    close_authority: KeyPatch = KEEP,
) -> Pubkey:
    """Overwrite fields of `owner`'s associated token account, as `surfnet_setTokenAccount`
    does. A missing account is first created by the real ATA program (paid by the chain's
    faucet, not recorded), so Token-2022 accounts get the extensions their mint requires.
    `KEEP` leaves a key field alone; None clears it."""
    program, _ = mint_info(chain, mint)
    if token_program is not None and token_program != program:
        raise ValueError(f"mint {mint} belongs to {program}, not {token_program}")
    if not is_token_program(program):
        raise ValueError(f"{program} is not a token program")
    address = associated_token_address(owner, mint, program)
    if chain.get_account(address) is None:
        faucet = chain.faucet
        ix = create_associated_token_account_instruction(faucet.pubkey(), owner, mint, program)
        chain.execute([ix], faucet, record=False)
    account = chain.get_account(address)
    if account is None or parse_token_account(account.owner, bytes(account.data)) is None:
        raise ValueError(f"{address} is not a token account")
    data = patch_token_account(
        bytes(account.data),
        amount=amount,
        delegate=delegate,
        state=state,
        delegated_amount=delegated_amount,
        close_authority=close_authority,
    )
    chain.set_account(
        address,
        Account(account.lamports, data, account.owner, account.executable, account.rent_epoch),
    )
    return address
