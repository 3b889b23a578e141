"""Which files jaxgc may replace: the manifest every output folder carries.

jaxgc replaces only what it wrote. Every output folder (a job's workdir, a model folder) holds
``jaxgc-manifest.json``::

  {"format": 1, "written_by": "jaxgc 0.2.0",
   "entries": ["checkpoints", "report.json", ...],    # top-level names jaxgc owns here
   "runs": [{"job": "compress", "config_sha256": "...", "started": ..., "status": "ok"}],
   "files": {"report.json": 5120, "checkpoints/w8/spec.json": 1333, ...}}   # bytes

The rules (:func:`claim`):

* A folder that is absent or empty becomes jaxgc's: the manifest is created.
* A folder with a manifest receives the job's outputs; a file or folder the manifest does not
  list (the user put it there) is never replaced: if it has the name of an output, the job is
  refused before any work, naming it. Other foreign files are left alone.
* A non-empty folder without a manifest is refused, naming what it holds, unless it has the
  layout an earlier jaxgc version wrote for this job (only the job's own output names, and all
  of its signature names): then it is adopted (the manifest lists what is there) and
  resuming keeps working.

Hidden bookkeeping (the lock ``.jaxgc.lock``, staging folders ``.staging-*``, temporary files
``.NAME.*.tmp``) is jaxgc's and never listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterable, Iterator

from jaxgc import _fileio

MANIFEST = "jaxgc-manifest.json"
FORMAT = 1
_HIDDEN_PREFIXES = (".jaxgc.lock", ".staging-", ".old-")


def _bookkeeping(name: str) -> bool:
  """Hidden files jaxgc keeps beside its outputs: the lock, staging folders, temporary files."""
  return name.startswith(_HIDDEN_PREFIXES) or (name.startswith(".") and ".tmp" in name)


def _internal(name: str) -> bool:
  """A folder's own manifest, or bookkeeping."""
  return name == MANIFEST or _bookkeeping(name)


def user_entries(folder: str) -> list[str]:
  """The sorted top-level names in ``folder`` other than jaxgc's bookkeeping."""
  return sorted(n for n in os.listdir(folder) if not _internal(n))


def read(folder: str | os.PathLike) -> dict[str, Any] | None:
  """The manifest of ``folder``, or None when it has none.

  Raises:
    ValueError: the manifest is not valid JSON of this format (naming the file).
  """
  path = os.path.join(os.fspath(folder), MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
      raise ValueError("no list of entries")
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read the jaxgc manifest {path} ({e}); move the folder aside and "
                     "rerun into a new one") from None
  return manifest


def _write(folder: str, manifest: dict[str, Any]) -> None:
  _fileio.atomic_write_text(os.path.join(folder, MANIFEST),
                            json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _new(entries: Iterable[str] = ()) -> dict[str, Any]:
  from jaxgc import __version__  # pylint: disable=import-outside-toplevel
  return {"format": FORMAT, "written_by": f"jaxgc {__version__}",
          "entries": sorted(set(entries)), "runs": [], "files": {}}


def config_sha256(config: Any) -> str:
  """SHA-256 of a config's canonical JSON (``ConfigDict``, dict, or anything ``str``-able)."""
  obj = config.to_dict() if hasattr(config, "to_dict") else config
  text = json.dumps(obj, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def claim(folder: str | os.PathLike, job: str, outputs: Iterable[str],
          signature: Iterable[str] = (), config: Any = None) -> dict[str, Any]:
  """Makes sure ``job`` may write ``outputs`` (top-level names) into ``folder``; records it.

  Call it before any work, with the folder already created and locked.

  Args:
    folder: the output folder (it must exist).
    job: the job's name, recorded in the manifest.
    outputs: every top-level file or folder name the job may write into ``folder``.
    signature: names whose presence (all of them) shows that a folder without a manifest was
      written by an earlier jaxgc version of this job; it is adopted when it also holds nothing
      but ``outputs``. Empty: never adopt.
    config: the job's config, recorded as its SHA-256.

  Returns:
    The manifest as written.

  Raises:
    FileExistsError: ``folder`` holds something jaxgc did not write and would replace, or is not
      empty and was not written by jaxgc (naming the first such entry).
    ValueError: an unreadable manifest.
  """
  folder = os.fspath(folder)
  outputs = set(outputs)
  manifest = read(folder)
  present = user_entries(folder)
  if manifest is None:
    foreign = [e for e in present if e not in outputs]
    signature = set(signature)
    if present and (foreign or not signature or not signature <= set(present)):
      raise FileExistsError(
          f"folder {folder} is not empty and was not written by jaxgc (it holds "
          f"{(foreign or present)[0]!r} and no {MANIFEST}): refusing to write into it; choose "
          "a new or empty folder")
    manifest = _new(present)
    if present:
      manifest["adopted"] = f"layout of an earlier jaxgc {job} run"
  else:
    owned = set(manifest["entries"])
    clash = sorted(e for e in present if e in outputs and e not in owned)
    if clash:
      raise FileExistsError(
          f"{os.path.join(folder, clash[0])} was not written by jaxgc ({MANIFEST} does not "
          "list it): refusing to replace it; move it away or choose another folder")
  manifest["entries"] = sorted(set(manifest["entries"]) | outputs)
  manifest.setdefault("runs", []).append(
      {"job": job, "config_sha256": None if config is None else config_sha256(config),
       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running"})
  _write(folder, manifest)
  return manifest


def snapshot(folder: str | os.PathLike) -> str | None:
  """The text of the manifest of ``folder`` (None when it has none or does not exist): what
  :func:`finish` puts back when a job fails without changing a file."""
  try:
    with open(os.path.join(os.fspath(folder), MANIFEST), encoding="utf-8") as f:
      return f.read()
  except (FileNotFoundError, NotADirectoryError):
    return None


def finish(folder: str | os.PathLike, status: str, previous: str | None = None,
           files_at_claim: dict[str, int] | None = None) -> None:
  """Records the end of the latest run (``status``: ``"ok"``, ``"failed"``, ...) and every file
  now under the folder's owned entries, with its bytes.

  When the run failed without changing any file (the folder's :func:`listing` equals
  ``files_at_claim``, taken right after :func:`claim`), the manifest is put back as it was
  before :func:`claim` (``previous``, from :func:`snapshot`; removed when there was none), so a
  refused job leaves the folder exactly as it found it (and a folder it created can be removed
  while empty). Nothing happens when the folder has no manifest.
  """
  folder = os.fspath(folder)
  manifest = read(folder)
  if manifest is None:
    return
  runs = manifest.setdefault("runs", [])
  files = listing(folder, manifest["entries"])
  if status != "ok" and files_at_claim is not None and files == files_at_claim:
    path = os.path.join(folder, MANIFEST)
    if previous is None:
      os.remove(path)
    else:
      _fileio.atomic_write_text(path, previous)
    return
  if runs:
    runs[-1]["status"] = status
    runs[-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
  manifest["files"] = files
  _write(folder, manifest)


def listing(folder: str, entries: Iterable[str]) -> dict[str, int]:
  """``{relative path: bytes}`` of every file under ``entries`` of ``folder`` (links are listed,
  not followed; bookkeeping is skipped)."""
  out = {}
  for entry in sorted(entries):
    top = os.path.join(folder, entry)
    if os.path.isfile(top) or os.path.islink(top):
      out[entry] = os.lstat(top).st_size
      continue
    for root, dirs, names in os.walk(top):
      dirs[:] = sorted(d for d in dirs if not _bookkeeping(d))
      for n in sorted(names):
        if not _bookkeeping(n):
          p = os.path.join(root, n)
          out[os.path.relpath(p, folder)] = os.lstat(p).st_size
  return out


def write_folder_manifest(folder: str | os.PathLike, job: str) -> None:
  """Lists everything in a folder jaxgc has just written in full (a model folder in staging):
  all its entries are owned."""
  folder = os.fspath(folder)
  manifest = _new(user_entries(folder))
  manifest["runs"].append({"job": job, "status": "ok"})
  manifest["files"] = listing(folder, manifest["entries"])
  _write(folder, manifest)


def check_replaceable(path: str | os.PathLike, layout: Iterable[str], required: str,
                      what: str) -> None:
  """Raises unless ``path`` is absent, an empty folder, or a ``what`` jaxgc wrote, which is
  replaced as a whole: it may hold nothing its manifest does not list. Without a manifest (an
  earlier jaxgc wrote it) it is recognised by its layout: ``required`` and nothing outside
  ``layout``.

  Raises:
    FileExistsError: ``path`` is a file or link, or a folder holding something jaxgc did not
      write (named).
  """
  path = os.fspath(path)
  if not os.path.lexists(path):
    return
  if os.path.islink(path) or not os.path.isdir(path):
    raise FileExistsError(f"output path {path} exists and is not a folder: refusing to replace "
                          "it; choose another path")
  entries = sorted(os.listdir(path))
  foreign = foreign_entries(path)
  if foreign is None:
    layout = set(layout) | {MANIFEST}
    foreign = [e for e in entries if e not in layout]
    if not foreign and entries and required not in entries:
      foreign = entries
  if foreign:
    raise FileExistsError(f"output folder {path} is not a jaxgc {what} (it holds "
                          f"{foreign[0]!r}): refusing to replace it; choose a new or empty "
                          "folder")


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, job: str) -> Iterator[str]:
  """Writes a whole output folder atomically: yields a temporary sibling folder to fill; when
  the block ends, lists its files in a manifest, gives it ordinary permissions and renames it
  over ``path`` (which :func:`check_replaceable` must have cleared). On an error it is removed
  and ``path`` is as it was.

  Raises:
    PermissionError: the parent folder is not writable (named).
    OSError: writing failed (a full disk), naming ``path``.
  """
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  except OSError as e:
    raise PermissionError(f"output folder {parent} is not writable: {e.strerror or e}") from None
  try:
    yield tmp
    write_folder_manifest(tmp, job)
    _fileio.give_default_mode(tmp)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError) and e.errno is not None:   # a full disk: name the folder
      raise OSError(e.errno, e.strerror or str(e), path) from None
    raise


def record(folder: str | os.PathLike, names: Iterable[str]) -> None:
  """Adds files jaxgc has just written into a folder it owns (a sample grid beside a saved
  model) to the folder's manifest, with their bytes.

  Raises:
    ValueError: ``folder`` has no manifest (jaxgc did not write it).
  """
  folder = os.fspath(folder)
  manifest = read(folder)
  if manifest is None:
    raise ValueError(f"{folder} has no {MANIFEST}: jaxgc did not write it")
  manifest["entries"] = sorted(set(manifest["entries"]) | set(names))
  manifest["files"] = listing(folder, manifest["entries"])
  _write(folder, manifest)


def foreign_entries(folder: str | os.PathLike) -> list[str] | None:
  """The entries of ``folder`` its manifest does not list, or None when it has no manifest."""
  manifest = read(folder)
  if manifest is None:
    return None
  owned = set(manifest["entries"])
  return [e for e in user_entries(os.fspath(folder)) if e not in owned]
