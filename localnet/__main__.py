"""`python -m localnet`: serve a local Solana chain (see `localnet.server`)."""

from __future__ import annotations

import sys

from localnet.server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
