"""Add up the crash-state totals that test_crash.py processes appended to a
JSON-lines file (DAXFS_CRASH_STATS), and print them: make crash-full."""

import json
import sys


def main(path: str) -> int:
    totals: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            for key, value in json.loads(line).items():
                totals[key] = totals.get(key, 0) + value
    print("crash states checked: " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
