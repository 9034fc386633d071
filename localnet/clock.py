"""The local chain's clock: slots follow wall time (one every `slot_ms`), time travel jumps
forward, and every slot has its own blockhash, valid for 150 blocks as on a real cluster.

Slots and time are tied together: slot = start_slot + elapsed_ms // slot_ms, with elapsed time
the wall clock's plus whatever time travel added. So `getSlot` moves on its own, block heights
grow while a client waits for confirmation, and a blockhash expires about a minute after it
was handed out. Every slot is a block (no skipped slots), so the block height is the slot.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from solders.hash import Hash

MAX_PROCESSING_AGE: Final = 150  # blocks a blockhash stays valid for
_REMEMBERED_BLOCKHASHES: Final = 4096


class TimeTravelError(ValueError):
    """A time travel target in the past (Surfpool, too, only travels forward)."""


class ChainClock:
    def __init__(
        self,
        *,
        start_slot: int,
        slot_ms: int = 400,
        slots_per_epoch: int = 432_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if slot_ms <= 0 or slots_per_epoch <= 0:
            raise ValueError("slot_ms and slots_per_epoch must be positive")
        self._wall = wall
        self._start_slot = start_slot
        self._start_ms = round(wall() * 1000)
        self._offset_ms = 0
        self.slot_ms = slot_ms
        self.slots_per_epoch = slots_per_epoch
        self._seed = os.urandom(16)
        self._blockhashes: OrderedDict[Hash, int] = OrderedDict()

    # --- time and slots ----------------------------------------------------------------------

    def now_ms(self) -> int:
        return round(self._wall() * 1000) + self._offset_ms

    @property
    def slot(self) -> int:
        return self._start_slot + max(0, self.now_ms() - self._start_ms) // self.slot_ms

    def slot_start_ms(self, slot: int) -> int:
        return self._start_ms + (slot - self._start_slot) * self.slot_ms

    def block_time(self, slot: int) -> int:
        """Unix time (seconds) of the block at `slot`."""
        return self.slot_start_ms(slot) // 1000

    def block_height(self, slot: int | None = None) -> int:
        return self.slot if slot is None else slot

    @property
    def first_slot(self) -> int:
        return self._start_slot

    def epoch(self, slot: int | None = None) -> int:
        return (self.slot if slot is None else slot) // self.slots_per_epoch

    def epoch_info(self, transaction_count: int, slot: int | None = None) -> dict[str, Any]:
        """`getEpochInfo`'s answer (also what `surfnet_timeTravel` returns)."""
        at = self.slot if slot is None else slot
        return {
            "absoluteSlot": at,
            "blockHeight": self.block_height(at),
            "epoch": self.epoch(at),
            "slotIndex": at % self.slots_per_epoch,
            "slotsInEpoch": self.slots_per_epoch,
            "transactionCount": transaction_count,
        }

    # --- time travel -------------------------------------------------------------------------

    def travel_to_ms(self, target_ms: int) -> None:
        """Jump to the unix time `target_ms` (milliseconds, as Surfpool takes it)."""
        now = self.now_ms()
        if target_ms < now:
            raise TimeTravelError(f"cannot travel to {target_ms} ms: the clock is at {now} ms")
        self._offset_ms += target_ms - now

    def travel_to_slot(self, slot: int) -> None:
        current = self.slot
        if slot < current:
            raise TimeTravelError(f"cannot travel to slot {slot}: the chain is at slot {current}")
        if slot > current:
            self.travel_to_ms(self.slot_start_ms(slot))

    def travel_to_epoch(self, epoch: int) -> None:
        current = self.epoch()
        if epoch < current:
            raise TimeTravelError(f"cannot travel to epoch {epoch}: the chain is in {current}")
        self.travel_to_slot(max(self.slot, epoch * self.slots_per_epoch))

    def next_slot(self) -> int:
        """Move to the start of the next slot; returns it."""
        target = self.slot + 1
        self.travel_to_ms(self.slot_start_ms(target))
        return target

    # --- blockhashes -------------------------------------------------------------------------

    def slot_hash(self, slot: int) -> Hash:
        """The hash of the block at `slot` (what the SlotHashes sysvar lists)."""
        return Hash(hashlib.sha256(self._seed + slot.to_bytes(8, "little")).digest())

    def recent_slot_hashes(self, count: int = MAX_PROCESSING_AGE) -> list[tuple[int, Hash]]:
        """(slot, hash) of the blocks before the current one, newest first."""
        slot = self.slot
        first = max(self._start_slot, slot - count)
        return [(s, self.slot_hash(s)) for s in range(slot - 1, first - 1, -1)]

    def blockhash(self, slot: int | None = None) -> Hash:
        """The blockhash of `slot` (the current one by default), remembered for validation."""
        at = self.slot if slot is None else slot
        blockhash = self.slot_hash(at)
        self._blockhashes[blockhash] = at
        self._blockhashes.move_to_end(blockhash)
        while len(self._blockhashes) > _REMEMBERED_BLOCKHASHES:
            self._blockhashes.popitem(last=False)
        return blockhash

    def last_valid_block_height(self, slot: int | None = None) -> int:
        return self.block_height(self.slot if slot is None else slot) + MAX_PROCESSING_AGE

    def blockhash_slot(self, blockhash: Hash) -> int | None:
        return self._blockhashes.get(blockhash)

    def is_blockhash_valid(self, blockhash: Hash) -> bool:
        slot = self.blockhash_slot(blockhash)
        return slot is not None and self.block_height() <= self.last_valid_block_height(slot)
