"""CPython's own manager tests, from the installed interpreter's ``test`` package, on procshare.

Run as ``PROCSHARE_CPYTHON_TESTS=spawn python -m tests.conformance.cpython_managers [-v]``
(``fork`` by default; ``test_cpython.py`` runs both, in subprocesses). It does what a drop-in
user does, ``multiprocessing.managers`` replaced by ``procshare.managers`` before the tests
are imported, so that ``multiprocessing.Manager()``, ``BaseManager``, ``BaseProxy``,
``RemoteError`` and ``SyncManager`` in them are procshare's; then it runs every test of the
manager type, and the manager tests that are not of a type. (They take as long on the stdlib:
mostly spawning.)

Tests that do not apply are listed in ``NOT_APPLICABLE`` with the reason; everything else must
pass. Exits 0 when all passed, 1 otherwise, 2 when the test package is not installed.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers as _stdlib_managers
import os
import sys
import unittest

import procshare
import procshare.managers

# (Before the tests import it: the name they know is procshare's module.)
procshare.managers._stdlib = _stdlib_managers
sys.modules["multiprocessing.managers"] = procshare.managers
multiprocessing.managers = procshare.managers  # type: ignore[misc]

try:
    from test import _test_multiprocessing as cpython
except ImportError:  # pragma: no cover - an interpreter without its test package
    cpython = None

#: test id (``Class.method``) -> why it does not apply to procshare
NOT_APPLICABLE: dict[str, str] = {}

#: test classes that are about managers but of no mixin type
PLAIN_MANAGER_TESTS = ("TestSyncManagerTypes",)


#: the start method the tests run with (a spawned child imports this module again: it finds
#: the same test classes, which are pickled by name)
START_METHOD = os.environ.get("PROCSHARE_CPYTHON_TESTS", "fork")
if cpython is not None:
    # Into this module's namespace, as CPython's test_multiprocessing_* modules do.
    cpython.install_tests_in_module_dict(globals(), START_METHOD, only_type="manager")


def suite() -> unittest.TestSuite:
    loader = unittest.TestLoader()
    tests = unittest.TestSuite()
    classes = [c for n, c in sorted(globals().items()) if n.startswith("WithManager")]
    classes += [getattr(cpython, n) for n in PLAIN_MANAGER_TESTS if hasattr(cpython, n)]
    for cls in classes:
        for test in loader.loadTestsFromTestCase(cls):  # type: ignore[arg-type]
            name = f"{type(test).__name__}.{test._testMethodName}"  # type: ignore[attr-defined]
            if name not in NOT_APPLICABLE:
                tests.addTest(test)
    return tests


def main(argv: list[str]) -> int:
    if cpython is None:
        print("the interpreter's test package is not installed", file=sys.stderr)
        return 2
    multiprocessing.set_start_method(START_METHOD, force=True)
    runner = unittest.TextTestRunner(verbosity=2 if "-v" in argv else 1, stream=sys.stdout)
    result = runner.run(suite())
    print(f"ran {result.testsRun}, failures {len(result.failures)}, errors {len(result.errors)}")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
