"""Address lookup tables, created and extended by the real lookup table program, for testing
version 0 transactions that load keys (`meta.loadedAddresses`)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from localnet.chain import LocalChain
from localnet.programs import ADDRESS_LOOKUP_TABLE_PROGRAM_ID, SYSTEM_PROGRAM_ID
from localnet.snapshots import lookup_table_addresses

_CREATE = 0
_EXTEND = 2


def _accounts(table: Pubkey, authority: Pubkey, payer: Pubkey) -> list[AccountMeta]:
    return [
        AccountMeta(table, False, True),
        AccountMeta(authority, True, False),
        AccountMeta(payer, True, True),
        AccountMeta(SYSTEM_PROGRAM_ID, False, False),
    ]


def create_lookup_table(
    chain: LocalChain, authority: Keypair, addresses: Sequence[Pubkey]
) -> AddressLookupTableAccount:
    """Create a table holding `addresses` (authority pays), and move to the next slot so that
    it is usable: a table's new entries are active from the slot after they were added."""
    if chain.slot <= chain.clock.first_slot:  # the table's slot must be an earlier block
        chain.clock.next_slot()
    recent_slot = chain.slot - 1
    seeds = [bytes(authority.pubkey()), struct.pack("<Q", recent_slot)]
    table, bump = Pubkey.find_program_address(seeds, ADDRESS_LOOKUP_TABLE_PROGRAM_ID)
    accounts = _accounts(table, authority.pubkey(), authority.pubkey())
    create = Instruction(
        ADDRESS_LOOKUP_TABLE_PROGRAM_ID,
        struct.pack("<IQB", _CREATE, recent_slot, bump),
        accounts,
    )
    extend = Instruction(
        ADDRESS_LOOKUP_TABLE_PROGRAM_ID,
        struct.pack("<IQ", _EXTEND, len(addresses)) + b"".join(bytes(a) for a in addresses),
        accounts,
    )
    chain.execute([create, extend], authority)
    chain.clock.next_slot()
    stored = lookup_table_addresses(chain.get_account(table))
    assert stored == list(addresses), "the lookup table program stored other addresses"
    return AddressLookupTableAccount(table, list(addresses))
