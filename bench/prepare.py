"""``python -m bench.prepare real-offline``: feature banks of real data, made offline.

The recipe lives in ``bench.features.real_offline`` (with ``debian``, ``decode`` and ``towers`` beside it);
this module is its command-line entry point.
"""
import sys

from .features.real_offline import main

if __name__ == "__main__":
    sys.exit(main())
