"""Test configuration: 8 fake CPU devices (set before JAX initializes) and the
location of the shared data fixtures."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402


def pytest_configure(config):
    """JAX's persistent compilation cache, shared by the test processes of
    one checkout: many tests build identical collections, and XLA:CPU would
    compile each identical program again (HYPERECA_JAX_CACHE overrides the
    folder; empty disables it)."""
    folder = os.environ.get("HYPERECA_JAX_CACHE",
                            str(pathlib.Path(__file__).resolve().parents[1] / "build" /
                                "jax-cache"))
    if not folder:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The longest tests of the default suite (tens of seconds each, none sharing a
# module fixture with others), started first: pytest-xdist hands each worker a
# contiguous half of the collection and balances by stealing queued tests, so
# a long test started near the end would run alone while the other worker idles.
LONG_FIRST = ("test_reproduce.py::test_reproduce_smoke",
              "test_multihost.py::test_two_processes_equal_the_reference",
              "test_train.py::test_resume_after_sigkill",
              "test_tiers_machine.py::",
              "test_train.py::test_a_table_past_its_device_budget",
              "test_golden.py::")


def pytest_collection_modifyitems(config, items):
    """LONG_FIRST at the front, in that order; the rest as collected."""
    def rank(item) -> int:
        return next((i for i, k in enumerate(LONG_FIRST) if k in item.nodeid), len(LONG_FIRST))
    items.sort(key=rank)


def shared_data_dir() -> pathlib.Path:
    """../shared/data beside the repository (override: HYPERECA_SHARED_DATA)."""
    env = os.environ.get("HYPERECA_SHARED_DATA")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data fixtures not found at {path}")
    return path


# Cases that repeat a path another case already covers, kept for thoroughness
# behind the flag so the default suite stays inside CI's 10 minutes.
slow_case = pytest.mark.skipif(os.environ.get("HYPERECA_SLOW_TESTS") != "1",
                               reason="a further case of a covered path; set HYPERECA_SLOW_TESTS=1")
