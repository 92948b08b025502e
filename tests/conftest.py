"""Shared test setup. Its presence puts tests/ on sys.path, so test modules in subfolders can
import the helpers that live here (e2e_support)."""


def pytest_collection_modifyitems(items):  # type: ignore[no-untyped-def]
    """Files that hold a test marked ``slow`` run first (each file stays together, in its order).

    The suite runs on parallel workers, one file at a time each (pyproject's addopts): a file
    of long scenarios handed out last would keep one worker busy while the others sit idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
