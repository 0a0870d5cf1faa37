"""The container of an .imnn file: a zip archive of one JSON manifest and NumPy
arrays, every member covered by a SHA-256, written atomically.

Members::

    manifest.json     what the file holds; ``manifest["arrays"]`` gives, for every
                      array by name, its member, shape, dtype and SHA-256
    manifest.sha256   the SHA-256 of manifest.json (hex, from format version 2 on)
    arrays/K.npy      one array each, NumPy's .npy format, never pickled

Reading trusts nothing before it is checked, and checks everything before any
of it is used: the manifest's declared size (at most ``MAX_MANIFEST_BYTES``, and
read with that bound whatever the zip declares), its checksum, that it is JSON
with the expected entries, then every array member's declared size against the
shape and dtype the manifest gives it (no member larger than the array it
describes), its checksum, and the shape and dtype of the array it holds.
Anything wrong is a :class:`DamagedFileError` naming the member or key.

Writing goes to a temporary file next to the target, named
``.NAME.HOST-PID-XXXXXXXX.tmp`` (HOST: 8 hex digits of the host name's hash,
PID: the writer's process id), fsynced and renamed over the target. A write
first removes the temporaries that interrupted writes left in the same
directory: those of a dead process on this host, and any older than
``STALE_SECONDS`` (a writer on another host, or a name from an older imnn).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest.sha256"
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_NPY_HEADER_BYTES = 4096  # an .npy header of any array this library writes is < 256 bytes
STALE_SECONDS = 3600.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DTYPE_KINDS = "biufc"  # bool, integers, floats, complex: never objects, strings or records


class DamagedFileError(ValueError):
    """An .imnn file that is truncated, corrupted, inconsistent or not an .imnn file."""


def damaged(path, what: str) -> DamagedFileError:
    return DamagedFileError(f"{path} is damaged: {what}")


# --- writing ------------------------------------------------------------------------------

def encode_array(value) -> tuple[bytes, dict]:
    """(.npy bytes, manifest entry without its member name) of one array."""
    value = np.asarray(value)
    if value.dtype.kind not in _DTYPE_KINDS:
        raise TypeError(f"cannot save an array of dtype {value.dtype}: only numeric arrays")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, value, allow_pickle=False)
    data = buffer.getvalue()
    return data, {"shape": list(value.shape), "dtype": value.dtype.str,
                  "sha256": hashlib.sha256(data).hexdigest()}


def write_archive(path, manifest: dict, arrays: dict) -> None:
    """Write ``arrays`` (name -> array) and ``manifest`` (to which their entries
    are added under ``"arrays"``) atomically to ``path``."""
    members, entries = {}, {}
    for k, (name, value) in enumerate(arrays.items()):
        member = f"arrays/{k}.npy"
        members[member], entry = encode_array(value)
        entries[name] = {"member": member, **entry}
    text = json.dumps({**manifest, "arrays": entries}, indent=1,
                      ensure_ascii=False).encode("utf-8")

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(MANIFEST, text)
            archive.writestr(MANIFEST_CHECKSUM, hashlib.sha256(text).hexdigest())
            for member, data in members.items():
                archive.writestr(member, data)

    write_atomically(path, write)


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp")
_LEGACY_TEMPORARY = r"\.{name}\.[a-z0-9_]{{8}}\.tmp"  # tempfile.mkstemp names of imnn 1.0
_writing: set[str] = set()  # this process's temporaries being written now
_writing_lock = threading.Lock()


def write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then
    rename it over ``path`` (and fsync the directory, so the rename is durable).

    Either ``path`` holds the old file or the new one, whatever happens. The
    temporaries that interrupted writes left in the directory are removed first
    (see :func:`leftover_temporaries`).

    Args:
        path: the file to write.
        write: writes the content to the binary file object it is given.
    """
    path = Path(path)
    remove_leftover_temporaries(path.parent, path.name)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp",
                                             prefix=f".{path.name}.{_HOST}-{os.getpid()}-")
    with _writing_lock:
        _writing.add(temporary)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        with _writing_lock:
            _writing.discard(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def leftover_temporaries(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """The temporary files that interrupted atomic writes left in ``directory``.

    A temporary is left over when the process that made it is gone (same host,
    its pid no longer alive, or this process but not one of its writes in
    progress), or when it is older than ``STALE_SECONDS`` (made on another host,
    or by imnn 1.0, whose names carry no pid). Temporaries of live writers are
    never listed.

    Args:
        directory: the directory to look in.
        name: also list imnn 1.0's temporaries of this file name (``.NAME.XXXXXXXX.tmp``)
            once they are stale.

    Returns:
        The paths, sorted.
    """
    directory = Path(directory)
    legacy = re.compile(_LEGACY_TEMPORARY.format(name=re.escape(name))) if name else None
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    now, found = time.time(), []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None and not (legacy and legacy.fullmatch(entry.name)):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        except OSError:
            continue
        if old or (match and match["host"] == _HOST and _writer_gone(int(match["pid"]),
                                                                    entry.path)):
            found.append(Path(entry.path))
    return sorted(found)


def remove_leftover_temporaries(directory: str | os.PathLike,
                                name: str | None = None) -> list[Path]:
    """Remove the temporaries that interrupted writes left in ``directory``.

    Args:
        directory: the directory to clean.
        name: see :func:`leftover_temporaries`.

    Returns:
        The paths removed.
    """
    removed = []
    for path in leftover_temporaries(directory, name):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass  # another writer removed it first
    return removed


def _writer_gone(pid: int, temporary: str) -> bool:
    if pid == os.getpid():
        with _writing_lock:
            return temporary not in _writing
    if os.name != "posix":
        return False  # no harmless liveness probe: wait for STALE_SECONDS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# --- reading ------------------------------------------------------------------------------

def read_archive(path, versions: tuple[int, ...], format_name: str) -> tuple[dict, dict]:
    """(manifest, arrays by name) of the archive at ``path``, all checked.

    Args:
        path: the file.
        versions: the format versions this reader accepts; version 1 files have
            no manifest checksum.
        format_name: the manifest's ``"format"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: anything wrong, named.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .imnn file: {path}")
    with open(path, "rb") as file:  # not finding or not being allowed to read it is no damage
        try:
            with zipfile.ZipFile(file) as archive:
                manifest = _read_manifest(path, archive, versions, format_name)
                arrays = {name: _read_array(path, archive, name, entry)
                          for name, entry in _array_entries(path, manifest).items()}
        except DamagedFileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError, zlib.error) as error:
            # zipfile's own errors: a truncated archive, a bad CRC, an unknown compression.
            raise DamagedFileError(f"{path} is damaged (truncated or corrupted): "
                                   f"{type(error).__name__}: {error}") from None
    return manifest, arrays


def _member(path, archive, name: str, limit: int) -> bytes:
    """The bytes of member ``name``, refused if it declares more than ``limit``
    and read with that bound whatever it declares."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise damaged(path, f"member {name!r} is missing") from None
    if info.file_size > limit:
        raise damaged(path, f"member {name!r} declares {info.file_size} bytes, more than "
                            f"the {limit} it may have")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise damaged(path, f"member {name!r} holds more than the {limit} bytes it may have")
    return data


def _read_manifest(path, archive, versions, format_name) -> dict:
    text = _member(path, archive, MANIFEST, MAX_MANIFEST_BYTES)
    names = set(archive.namelist())
    if MANIFEST_CHECKSUM in names:
        digest = _member(path, archive, MANIFEST_CHECKSUM, 64).decode("ascii", "replace")
        if digest != hashlib.sha256(text).hexdigest():
            raise damaged(path, f"{MANIFEST} does not match its checksum ({MANIFEST_CHECKSUM})")
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise damaged(path, f"{MANIFEST} is not valid JSON ({type(error).__name__}: "
                            f"{str(error)[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise DamagedFileError(f"{path} is not an .imnn file (its {MANIFEST} has no "
                               f"\"format\": \"{format_name}\")")
    version = manifest.get("version")
    if isinstance(version, bool) or version not in versions:
        raise DamagedFileError(f"{path} has format version {version!r}, this imnn reads "
                               f"version{'s' if len(versions) > 1 else ''} "
                               f"{', '.join(map(str, versions))}")
    if version >= 2 and MANIFEST_CHECKSUM not in names:
        raise damaged(path, f"member {MANIFEST_CHECKSUM!r} is missing (format version "
                            f"{version} covers its manifest by a checksum)")
    return manifest


def _array_entries(path, manifest) -> dict:
    """manifest["arrays"], each entry checked: name -> (member, shape, dtype, sha256)."""
    entries = manifest.get("arrays")
    if not isinstance(entries, dict):
        raise damaged(path, "manifest key 'arrays' is missing or not a table")
    checked, members = {}, {}  # member -> the array it holds
    for name, entry in entries.items():
        at = f"manifest key arrays[{name!r}]"
        if not isinstance(entry, dict):
            raise damaged(path, f"{at} is not a table")
        for key in ("member", "shape", "dtype", "sha256"):
            if key not in entry:
                raise damaged(path, f"{at} has no {key!r}")
        member, shape, dtype, digest = (entry[k] for k in ("member", "shape", "dtype", "sha256"))
        if not isinstance(member, str) or not member.startswith("arrays/"):
            raise damaged(path, f"{at}.member must name an arrays/ member, got {member!r}")
        if member in members:
            raise damaged(path, f"{at}.member {member!r} is already the member of array "
                                f"{members[member]!r}")
        members[member] = name
        if not (isinstance(shape, list) and len(shape) <= 32 and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise damaged(path, f"{at}.shape must be a list of non-negative integers, "
                                f"got {shape!r}")
        try:
            dtype = np.dtype(dtype) if isinstance(dtype, str) else None
        except (TypeError, ValueError, SyntaxError):
            dtype = None
        if dtype is None or dtype.kind not in _DTYPE_KINDS or dtype.str != entry["dtype"]:
            raise damaged(path, f"{at}.dtype must be a numeric NumPy dtype such as '<f8', "
                                f"got {entry['dtype']!r}")
        if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            raise damaged(path, f"{at}.sha256 must be 64 hex digits, got {digest!r}")
        checked[name] = (member, tuple(shape), dtype, digest)
    return checked


def _read_array(path, archive, name, entry) -> np.ndarray:
    member, shape, dtype, digest = entry
    size = math.prod(shape) * dtype.itemsize
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise damaged(path, f"member {member!r} of array {name!r} is missing") from None
    if not size <= info.file_size <= size + MAX_NPY_HEADER_BYTES:
        raise damaged(path, f"member {member!r} declares {info.file_size} bytes, but array "
                            f"{name!r} of shape {shape} and dtype {dtype.str} takes {size} "
                            "bytes and a header")
    data = _member(path, archive, member, size + MAX_NPY_HEADER_BYTES)
    if hashlib.sha256(data).hexdigest() != digest:
        raise damaged(path, f"array {name!r} ({member}) does not match its checksum")
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any parse failure of foreign bytes is damage
        raise damaged(path, f"array {name!r} ({member}) is not a .npy array "
                            f"({type(error).__name__}: {error})") from None
    if array.shape != shape or array.dtype != dtype:
        raise damaged(path, f"array {name!r} ({member}) holds shape {array.shape} and dtype "
                            f"{array.dtype.str}, its manifest entry says {shape} and {dtype.str}")
    return array
