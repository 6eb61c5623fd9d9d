#!/usr/bin/env python3
"""Run the seed's examples against the installed procshare and compare with the expected output.

Usage: python run.py [--start-method fork|spawn|forkserver|all] [NAME ...]
Each example runs as its own program (60 s limit); its stdout must equal NAME.out exactly.
Exit status 0 when every example matches.
"""

import argparse
import difflib
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
LAUNCH = (
    "import multiprocessing, runpy, sys; "
    "multiprocessing.set_start_method(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_one(script: pathlib.Path, method: str) -> tuple[bool, str]:
    expected = script.with_suffix(".out").read_text()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCH, method, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        return False, "no answer in 60 s"
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    if proc.stdout != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), proc.stdout.splitlines(), "expected", "got", lineterm=""
        )
        return False, "\n".join(diff)
    return True, ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start-method", default="all")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    methods = ["fork", "spawn", "forkserver"] if args.start_method == "all" else [args.start_method]
    scripts = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if args.names:
        scripts = [s for s in scripts if any(n in s.name for n in args.names)]
    passed = failed = 0
    for script in scripts:
        for method in methods:
            ok, why = run_one(script, method)
            print(f"{'ok  ' if ok else 'FAIL'} {script.name} [{method}]", flush=True)
            if ok:
                passed += 1
            else:
                failed += 1
                print("     " + why.replace("\n", "\n     "), flush=True)
    print(f"acceptance: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
