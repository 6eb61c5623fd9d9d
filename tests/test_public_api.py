"""The public surface: exactly what ``__all__`` promises, documented, and stdlib-compatible."""

from __future__ import annotations

import inspect
import multiprocessing
import multiprocessing.managers

import procshare
import procshare.managers


def test_every_exported_name_resolves_and_what_we_define_is_documented() -> None:
    for module in (procshare, procshare.managers):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            obj = getattr(module, name)
            defined_here = (getattr(obj, "__module__", "") or "").startswith("procshare")
            if defined_here:
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_it_covers_what_scripts_use_from_multiprocessing() -> None:
    wanted = {
        "Process",
        "current_process",
        "active_children",
        "cpu_count",
        "Lock",
        "RLock",
        "Semaphore",
        "BoundedSemaphore",
        "Condition",
        "Event",
        "Barrier",
        "Queue",
        "JoinableQueue",
        "SimpleQueue",
        "Pipe",
        "Pool",
        "Value",
        "Array",
        "RawValue",
        "RawArray",
        "get_context",
        "set_start_method",
        "get_start_method",
        "freeze_support",
        "Manager",
        "AuthenticationError",
        "ProcessError",
        "TimeoutError",
        "BufferTooShort",
    }
    assert wanted <= set(procshare.__all__)
    assert wanted <= set(multiprocessing.__all__)


def test_managers_module_mirrors_the_stdlib() -> None:
    stdlib = set(multiprocessing.managers.__all__)
    assert stdlib <= set(procshare.managers.__all__)
    for name in (
        "DictProxy",
        "ListProxy",
        "Namespace",
        "Value",
        "Array",
        "AutoProxy",
        "BaseProxy",
        "Token",
        "MakeProxyType",
        "RebuildProxy",
    ):
        assert hasattr(procshare.managers, name)


def test_drop_in_names_accept_the_stdlib_parameters() -> None:
    pairs = [
        (procshare.managers.BaseManager.__init__, multiprocessing.managers.BaseManager.__init__),
        (procshare.managers.BaseManager.register, multiprocessing.managers.BaseManager.register),
        (procshare.managers.BaseManager.start, multiprocessing.managers.BaseManager.start),
        (procshare.managers.BaseProxy.__init__, multiprocessing.managers.BaseProxy.__init__),
        (procshare.managers.BaseProxy._callmethod, multiprocessing.managers.BaseProxy._callmethod),
    ]
    for ours, theirs in pairs:
        ours_params = list(inspect.signature(ours).parameters)
        theirs_params = list(inspect.signature(theirs).parameters)
        assert ours_params[: len(theirs_params)] == theirs_params, (ours, theirs)
    for name in (
        "dict",
        "list",
        "Namespace",
        "Lock",
        "RLock",
        "Semaphore",
        "BoundedSemaphore",
        "Condition",
        "Event",
        "Barrier",
        "Queue",
        "JoinableQueue",
        "Value",
        "Array",
        "Pool",
    ):
        assert callable(getattr(procshare.managers.SyncManager, name)), name


def test_errors_form_one_hierarchy_that_never_shadows_builtins() -> None:
    errors = [
        procshare.ConnectionLost,
        procshare.ProtocolError,
        procshare.FrameTooLarge,
        procshare.RemoteError,
        procshare.SerializationError,
        procshare.ObjectNotFound,
        procshare.MethodNotExposed,
        procshare.ManagerStateError,
    ]
    for error in errors:
        assert issubclass(error, procshare.ProcshareError)
        assert error.__name__ not in dir(__builtins__) or error.__name__ == "TimeoutError"
    assert issubclass(procshare.ConnectionLost, ConnectionError)
    assert issubclass(procshare.MethodNotExposed, AttributeError)
    from procshare._errors import AuthenticationError

    assert issubclass(AuthenticationError, multiprocessing.AuthenticationError)


def test_get_context_gives_procshares_manager() -> None:
    ctx = procshare.get_context("spawn")
    assert ctx.get_start_method() == "spawn"
    assert ctx.Process is multiprocessing.get_context("spawn").Process
    assert "procshare" in repr(ctx)


def _public(module: object) -> set[str]:
    return {n for n in dir(module) if not n.startswith("_")}


def test_every_public_name_of_the_stdlibs_managers_module_is_there() -> None:
    missing = _public(multiprocessing.managers) - _public(procshare.managers)
    assert not missing
    for name in _public(multiprocessing.managers):
        assert getattr(procshare.managers, name) is not None
    assert procshare.managers.SharedMemoryManager is multiprocessing.managers.SharedMemoryManager
    assert procshare.managers.Server.__module__.startswith("procshare")  # ours


STDLIB_SUBMODULES = (
    "shared_memory",
    "connection",
    "pool",
    "queues",
    "synchronize",
    "sharedctypes",
    "dummy",
    "context",
    "process",
    "reduction",
    "util",
)


def test_the_stdlibs_submodules_are_there_under_procshares_name() -> None:
    import importlib

    for name in STDLIB_SUBMODULES:
        stdlib = importlib.import_module(f"multiprocessing.{name}")
        assert importlib.import_module(f"procshare.{name}") is stdlib
        assert getattr(procshare, name) is stdlib


def test_the_submodules_work_without_an_explicit_import(tmp_path: object) -> None:
    import subprocess
    import sys

    code = "import procshare; print(procshare.connection.Listener.__name__, procshare.pool.Pool)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Listener")


def test_every_public_name_of_multiprocessing_is_there() -> None:
    missing = {n for n in multiprocessing.__all__ if not hasattr(procshare, n)}
    assert not missing


def test_get_context_is_a_base_context_as_the_stdlibs() -> None:
    for method in (None, "fork", "spawn"):
        ours = procshare.get_context(method)
        assert isinstance(ours, multiprocessing.context.BaseContext)
        assert isinstance(multiprocessing.get_context(method), multiprocessing.context.BaseContext)
        assert ours.get_context() is ours
    fork = procshare.get_context("fork")
    lock = fork.Lock()  # the BaseContext factories work on it
    assert lock.acquire(timeout=1)
    lock.release()
