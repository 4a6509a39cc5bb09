"""The unit config and the factory key read from files the one way every part of the box reads them: bounded,
regular files only (fsutil.read_regular), then verified (config.load) — so the agent, phone home and the report
network cannot differ on what counts as this box's config."""

from __future__ import annotations

from pathlib import Path

from hypervisor_core.config import MAX_BYTES, ConfigError, UnitConfig, load, read_public_key
from hypervisor_core.fsutil import read_regular

MAX_KEY_BYTES = 64 << 10  # a PEM Ed25519 public key is 113 bytes


class InputError(Exception):
    """A file that cannot be read or is not what it must be; `str()` names it and says why."""


def read_config(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read the unit config {path}: {exc.strerror or exc}") from None


def read_key(path: Path) -> bytes:
    try:
        return read_public_key(read_regular(path, MAX_KEY_BYTES).decode(errors="replace"))
    except OSError as exc:
        raise InputError(f"cannot read the factory key {path}: {exc.strerror or exc}") from None
    except ConfigError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_verified(config_path: Path, key_path: Path) -> UnitConfig:
    """The unit config at `config_path`, its seal verified with the factory key at `key_path`."""
    raw, public = read_config(config_path), read_key(key_path)
    try:
        return load(raw, public)
    except ConfigError as exc:
        raise InputError(f"unit config refused: {exc}") from None
