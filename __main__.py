"""``python -m genret``: the ``genret`` command line (so ``accelerate launch -m genret train retriever …`` too)."""

from __future__ import annotations

import sys

from genret.serving import main

if __name__ == "__main__":
    sys.exit(main())
