"""Command-line pieces shared by the multi-device benchmarks. Imports no JAX:
the fake-device count must be set before JAX starts."""

from __future__ import annotations

import argparse
import os
import sys


def mesh_bench_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """--devices, --quick and --out, with the module docstring's first line."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices (XLA flag)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", help="also write the JSON lines to this file")
    return p


def use_fake_devices(n: int) -> None:
    """Asks XLA:CPU for `n` devices (no effect once JAX has started)."""
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={n}")
