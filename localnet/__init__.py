"""A Solana JSON-RPC server backed by `solders.litesvm`, for development, demos and tests.

chain.py      LocalChain: LiteSVM, clock, transaction store, finality
landing.py    the checks before a transaction runs, which outcomes land, TransactionFailed
tokens.py     mints, token accounts, payments (instructions, and helpers on a LocalChain)
rpc.py        create_app(chain): the aiohttp JSON-RPC application
server.py     start_localnet(...) -> (runner, LocalnetInfo), and `python -m localnet`
"""

from localnet.chain import LocalChain
from localnet.landing import TransactionFailed
from localnet.rpc import CHAIN_KEY, create_app
from localnet.server import LocalnetInfo, start_localnet

__all__ = [
    "CHAIN_KEY",
    "LocalChain",
    "LocalnetInfo",
    "TransactionFailed",
    "create_app",
    "start_localnet",
]
