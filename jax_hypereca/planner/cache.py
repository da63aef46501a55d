"""JSON cache of fitted cost profiles, keyed by (mesh shape, dim, dtype).

Pure file I/O: one file per key in a caller-chosen directory, written
atomically (temporary file + rename).  A missing, unreadable or
other-schema file is a cache miss (``None``), never an error.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .constants import PROFILE_CACHE_SCHEMA
from .errors import PlannerError
from .types import CostProfile

MeshShape = Sequence[int] | Mapping[str, int]
"""Device mesh shape: sizes per axis, optionally named (``{'data': 8}``)."""


def dtype_name(dtype: Any) -> str:
    """Canonical dtype name ('float32', 'bfloat16', ...) without importing jax."""
    if isinstance(dtype, str):
        try:
            return np.dtype(dtype).name
        except TypeError:
            return dtype.lower()
    try:
        return np.dtype(dtype).name
    except TypeError:
        name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None)
        return str(name if name is not None else dtype).lower()


def _mesh_key(mesh_shape: MeshShape) -> str:
    if isinstance(mesh_shape, Mapping):
        parts = [f"{k}{int(v)}" for k, v in mesh_shape.items()]
    else:
        parts = [str(int(v)) for v in mesh_shape]
    if not parts:
        raise PlannerError("mesh_shape must have at least one axis")
    return "x".join(parts)


def profile_cache_key(mesh_shape: MeshShape, dim: int, dtype: Any) -> str:
    """File-name-safe key, e.g. ``mesh8_dim128_float32``."""
    key = f"mesh{_mesh_key(mesh_shape)}_dim{int(dim)}_{dtype_name(dtype)}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def profile_cache_path(directory: str | os.PathLike, mesh_shape: MeshShape, dim: int, dtype: Any) -> Path:
    """Where the profile for this key lives."""
    return Path(directory) / f"profile_{profile_cache_key(mesh_shape, dim, dtype)}.json"


def store_profile(
    directory: str | os.PathLike,
    profile: CostProfile,
    *,
    mesh_shape: MeshShape,
    dim: int,
    dtype: Any,
) -> Path:
    """Write ``profile`` for this key (creating ``directory``); returns the path."""
    path = profile_cache_path(directory, mesh_shape, dim, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": PROFILE_CACHE_SCHEMA,
        "key": profile_cache_key(mesh_shape, dim, dtype),
        "profile": profile.to_dict(),
    }
    fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_profile(
    directory: str | os.PathLike,
    *,
    mesh_shape: MeshShape,
    dim: int,
    dtype: Any,
) -> CostProfile | None:
    """The cached profile for this key, or ``None`` on a miss."""
    path = profile_cache_path(directory, mesh_shape, dim, dtype)
    try:
        doc = json.loads(path.read_text())
        if doc.get("schema") != PROFILE_CACHE_SCHEMA:
            return None
        if doc.get("key") != profile_cache_key(mesh_shape, dim, dtype):
            return None
        return CostProfile.from_dict(doc["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ProfileCache:
    """Directory-backed cache: ``get`` / ``put`` by (mesh shape, dim, dtype)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, mesh_shape: MeshShape, dim: int, dtype: Any) -> Path:
        return profile_cache_path(self.directory, mesh_shape, dim, dtype)

    def get(self, mesh_shape: MeshShape, dim: int, dtype: Any) -> CostProfile | None:
        return load_profile(self.directory, mesh_shape=mesh_shape, dim=dim, dtype=dtype)

    def put(self, mesh_shape: MeshShape, dim: int, dtype: Any, profile: CostProfile) -> Path:
        return store_profile(self.directory, profile, mesh_shape=mesh_shape, dim=dim, dtype=dtype)
