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
