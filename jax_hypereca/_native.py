"""Loads the compiled extension, checks it matches the running jaxlib and
registers its FFI targets with JAX (once per process).

The extension records the jaxlib it was compiled against. FFI handlers built
with newer XLA FFI headers than the running jaxlib's fail to register and take
the whole CPU backend down, so an extension newer than the runtime is refused
here with the command that rebuilds it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from types import ModuleType
from typing import Any

import jax
import jaxlib

log = logging.getLogger("jax_hypereca")

REBUILD_HINT = (
    "Rebuild the extension against the running jaxlib: from the repository root run "
    "`make test` (which reinstalls into .venv), or "
    "`pip install --no-build-isolation --no-deps --force-reinstall -e .` in the "
    "environment that runs JAX."
)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def check_build(build_info: dict[str, Any], running: str = jaxlib.__version__) -> None:
    """Raises ImportError when the extension was built for a newer jaxlib."""
    built = str(build_info["jaxlib_version"])
    if _version_tuple(built) > _version_tuple(running):
        raise ImportError(
            f"jax_hypereca's {build_info['platform']} extension was built against jaxlib "
            f"{built} (XLA FFI API {build_info['ffi_api_major']}.{build_info['ffi_api_minor']}) "
            f"but jaxlib {running} is running. Handlers built with newer FFI headers than "
            f"the runtime would take the whole CPU backend down. {REBUILD_HINT}"
        )
    if _version_tuple(built)[:2] != _version_tuple(running)[:2]:
        log.info(
            "jax_hypereca: extension built against jaxlib %s, running %s (older headers "
            "on a newer runtime are supported)", built, running)


def _ensure_x64_ids() -> None:
    """Ids are int64 end to end without jax_enable_x64 (which would change the
    user's float defaults): explicit int64 dtypes must be allowed."""
    if jax.config.jax_enable_x64:
        return
    current = jax.config.jax_explicit_x64_dtypes
    if str(getattr(current, "name", current)).lower() not in ("allow", "3"):
        jax.config.update("jax_explicit_x64_dtypes", "allow")
        log.info("jax_hypereca: set jax_explicit_x64_dtypes='allow' so ids stay int64 "
                 "(float defaults are unchanged)")


# A CPU module built elsewhere (tools/sanitize.sh: AddressSanitizer and
# UndefinedBehaviorSanitizer) replaces the installed one when this names its file.
NATIVE_CPU_ENV = "HYPERECA_NATIVE_CPU"


def _load_file(qualified: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or not os.path.isfile(path):
        raise ImportError(f"{NATIVE_CPU_ENV}={path!r} is not an extension module file; "
                          f"unset it to use the installed module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    log.warning("jax_hypereca: CPU extension loaded from %s (%s)", path, NATIVE_CPU_ENV)
    return module


def _load(name: str) -> ModuleType | None:
    try:
        if name == "_hypereca_cpu" and os.environ.get(NATIVE_CPU_ENV):
            return _load_file(f"jax_hypereca.{name}", os.environ[NATIVE_CPU_ENV])
        return importlib.import_module(f"jax_hypereca.{name}")
    except ImportError as e:
        if name == "_hypereca_cpu":
            raise ImportError(
                f"jax_hypereca's compiled extension is missing or broken ({e}). "
                f"{REBUILD_HINT}") from e
        return None


cpu: ModuleType = _load("_hypereca_cpu")  # type: ignore[assignment]
check_build(cpu.build_info())
CONSTANTS: dict[str, Any] = cpu.constants()
_ensure_x64_ids()

_registered: set[str] = set()


def _register(module: ModuleType, platform: str) -> None:
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)
    _registered.add(platform)


_register(cpu, "cpu")

cuda: ModuleType | None = _load("_hypereca_cuda")
if cuda is not None:
    check_build(cuda.build_info())
    _register(cuda, "CUDA")


def has_platform(platform: str) -> bool:
    """Whether the custom calls are registered for `platform` ('cpu', 'CUDA')."""
    return platform in _registered
