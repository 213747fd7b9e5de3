"""``python -m bench.figures``: the name ``python -m bench.rebuild`` had first, kept so that scripts written
for it go on working. It rebuilds every derived file (tables, report, figures), not only the figures."""
import sys

from .rebuild import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
