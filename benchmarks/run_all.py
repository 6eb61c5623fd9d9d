"""The full ``procshare bench`` table: procshare next to multiprocessing.Manager, same run.

python benchmarks/run_all.py [--quick] [--json] [--plot throughput.png] [--only CASE ...]
"""

from __future__ import annotations

import sys

from procshare._cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
