"""Checkpoints that are too big to ship: download once per machine, cache, verify, and refuse anything else.

The paper-scale 256 x 256 models (``load_model("ffhq256")``, ``load_model("celebahq256")``) are files on the Hugging
Face hub at a pinned commit. :func:`fetch` returns the folder that holds them, looking in this order and making no
network call while a copy is found:

1. the course cache, ``<root>/<repo_id>/<revision>/<filename>``, where ``<root>`` is the ``cache_dir`` argument,
   else ``$COURSE_CACHE_DIR``, else ``$HF_HOME/diffusion-course`` (``HF_HOME`` defaults to
   ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``). This is also where to put a file by hand.
2. Copies another tool already downloaded, used in place: Hugging Face's own cache at the same pinned commit
   (``$HF_HUB_CACHE``, default ``$HF_HOME/hub``; e.g. from diffusers' ``from_pretrained``), and, for files that
   deepinv downloads itself, torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``, where
   ``deepinv.models.DiffUNet(pretrained="download")`` keeps ``diffusion_ffhq_10m.pt``).
3. A download into the course cache with ``huggingface_hub.hf_hub_download`` (with its progress bar), unless
   ``HF_HUB_OFFLINE=1``.

Every file is checked before use: its size and sha256 against the values pinned with it (in
:mod:`helpers.paper_models`), and after a download also
against the hub's own record (the LFS sha256 for large files, the git blob sha1 for small ones). A file in the
course cache that fails is deleted and reported; a copy elsewhere that fails is reported and left alone. No network
and no copy: ``FileNotFoundError`` with the file's name, size, the path to put it at and the URL to fetch it from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import socket
import sys
import time
import urllib.parse
import urllib.request

COURSE_CACHE_ENV = "COURSE_CACHE_DIR"
HUB_URL = "https://huggingface.co"
# A hub that answers 429 (too many requests: Colab's shared addresses hit the limit), 5xx or times out is tried again
# after these pauses (seconds), then the download fails with the by-hand instructions, as offline.
RETRY_DELAYS = (5.0, 20.0, 60.0)
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
_told_about_hf_token = False


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository at a pinned commit, with what is known of it.

    ``size`` (bytes) and ``sha256`` are ``None`` where no public record of them was found; the download then relies
    on the hub's record, checked after a download (see :func:`fetch`). ``in_torch_hub``: torch hub's checkpoint
    folder may hold the same file under the same name (a copy that deepinv downloaded).
    """

    repo_id: str
    filename: str
    revision: str
    size: int | None
    sha256: str | None
    in_torch_hub: bool = False
    approx_size: str | None = None  # for messages when ``size`` is not known exactly, e.g. "455 MB"

    @property
    def url(self) -> str:
        """Where to fetch it by hand (a browser or ``wget``)."""
        return f"{HUB_URL}/{self.repo_id}/resolve/{self.revision}/{self.filename}"

    def describe_size(self) -> str:
        if self.size is not None:
            return f"{self.size:,} bytes" + (f" ({self.size / 1e6:.0f} MB)" if self.size >= 1e6 else "")
        return f"about {self.approx_size}" if self.approx_size else "size not recorded"


def _existing_file(path, name: str = "path") -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a file path (str or pathlib.Path); got {type(path).__name__}.")
    if not pathlib.Path(path).is_file():
        what = "a folder" if pathlib.Path(path).is_dir() else "missing"
        raise ValueError(f"{name} must be an existing file; got {str(path)!r}, which is {what}.")
    return pathlib.Path(path)


def sha256_of(path: str | pathlib.Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the pinned checksums of :class:`RemoteFile`)."""
    path = _existing_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1_of(path: str | pathlib.Path) -> str:
    """The git object id of a file (``git hash-object``): the hub's ETag for files not stored with LFS."""
    data = _existing_file(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- where files live ----

def _env_path(name: str) -> pathlib.Path | None:
    value = os.environ.get(name)
    return pathlib.Path(value).expanduser() if value else None


def hf_home() -> pathlib.Path:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface`` (huggingface_hub's rule)."""
    return _env_path("HF_HOME") or (_env_path("XDG_CACHE_HOME") or pathlib.Path("~/.cache").expanduser()) / "huggingface"


def cache_root(cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
    """The course cache: ``cache_dir`` if given, else ``$COURSE_CACHE_DIR``, else ``$HF_HOME/diffusion-course``."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)) or pathlib.Path(cache_dir).expanduser().is_file():
            got = f"the file {str(cache_dir)!r}" if isinstance(cache_dir, (str, os.PathLike)) else repr(cache_dir)
            raise ValueError(f"cache_dir must be a folder path (str or pathlib.Path; created if missing) or None; got "
                             f"{got}.")
        return pathlib.Path(cache_dir).expanduser()
    return _env_path(COURSE_CACHE_ENV) or hf_home() / "diffusion-course"


def course_folder(remote: RemoteFile, cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
    """``<root>/<repo_id>/<revision>``: the folder of the course cache that holds ``remote``."""
    return cache_root(cache_dir) / remote.repo_id / remote.revision


def hf_hub_cache() -> pathlib.Path:
    """Hugging Face's own cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    return _env_path("HF_HUB_CACHE") or hf_home() / "hub"


def torch_hub_checkpoints() -> pathlib.Path:
    """Torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where deepinv keeps its downloads."""
    import torch.hub

    return pathlib.Path(torch.hub.get_dir()) / "checkpoints"


def _hf_snapshot_folder(files: tuple[RemoteFile, ...]) -> pathlib.Path | None:
    """The snapshot folder of Hugging Face's cache that holds all ``files`` at their pinned commit, or ``None``."""
    repo_id, revision = files[0].repo_id, files[0].revision
    folder = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
    return folder if all((folder / f.filename).is_file() for f in files) else None


def _torch_hub_folder(files: tuple[RemoteFile, ...]) -> pathlib.Path | None:
    if len(files) != 1 or not files[0].in_torch_hub:
        return None
    folder = torch_hub_checkpoints()
    return folder if (folder / files[0].filename).is_file() else None


def find_cached(files: tuple[RemoteFile, ...], cache_dir: str | pathlib.Path | None = None) -> pathlib.Path | None:
    """The first folder that holds every one of ``files`` (course cache, Hugging Face's cache, torch hub's), without
    verifying them and without any network call; ``None`` if there is none."""
    _check_files(files)
    folder = course_folder(files[0], cache_dir)
    if all((folder / f.filename).is_file() for f in files):
        return folder
    return _hf_snapshot_folder(files) or _torch_hub_folder(files)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``$HF_ENDPOINT``, else huggingface.co:443) opens; through the
    proxy in ``$HTTPS_PROXY`` (or ``$https_proxy``) when one is set and ``$NO_PROXY`` does not exempt the hub, since
    that is the way the download itself goes (a machine behind a proxy often cannot reach the hub directly)."""
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds > 0; got {timeout!r}.")
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or HUB_URL)
    host, port = endpoint.hostname, endpoint.port or 443
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname, proxy_url.port or (443 if proxy_url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def download_allowed() -> bool:
    """False when ``HF_HUB_OFFLINE`` is set to a true value (read now, not when huggingface_hub was imported)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() not in {"1", "ON", "YES", "TRUE"}


# ---- verification ----

def verify(path: pathlib.Path, remote: RemoteFile, expected_size: int | None = None, expected_sha256: str | None = None,
           expected_git_sha1: str | None = None, owned: bool = True) -> None:
    """Check a local copy of ``remote``: its size and sha256 against the pinned values and the ``expected_*`` ones
    (the hub's metadata, after a download). On a mismatch a file in the course cache (``owned``) is deleted; either
    way ``RuntimeError`` says what was wrong, where, and what to do."""
    problems = []
    actual_size = path.stat().st_size
    for size in {s for s in (remote.size, expected_size) if s is not None}:
        if actual_size != size:
            kind = "truncated (a partial download?)" if actual_size < size else "too long"
            problems.append(f"it has {actual_size:,} bytes, expected {size:,}: {kind}")
    sha256s = {s for s in (remote.sha256, expected_sha256) if s is not None}
    if not problems and sha256s:
        actual = sha256_of(path)
        problems += [f"its sha256 is {actual}, expected {s}" for s in sha256s if actual != s]
    if not problems and expected_git_sha1 is not None:
        actual = git_blob_sha1_of(path)
        if actual != expected_git_sha1:
            problems.append(f"its git blob sha1 is {actual}, expected {expected_git_sha1} (the hub's ETag)")
    if not problems:
        return
    if owned:
        path.unlink()
        action = (f"It has been deleted. Run again to download it anew, or put a good copy there by hand "
                  f"(from {remote.url}).")
    else:
        action = (f"This copy belongs to another tool's cache and was left alone: delete it (then the course downloads "
                  f"its own into {cache_root()}) or replace it with a good copy from {remote.url}.")
    raise RuntimeError(f"{path} is corrupt: {'; '.join(problems)}. {action}")


# ---- the one entry point ----

def fetch(files: tuple[RemoteFile, ...], cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
    """Return a folder holding every one of ``files`` (one hub repository, one commit), verified; download them into
    the course cache if no copy is found (see the module docstring for the order).

    Raises ``FileNotFoundError`` when a file is missing and cannot be downloaded (offline, ``HF_HUB_OFFLINE=1``, no
    network): the message names the file, its size, the path to put it at and its URL. Raises ``RuntimeError`` for
    a corrupt file (deleted if it was in the course cache) and when the hub no longer serves the pinned commit.
    """
    _check_files(files)
    course = course_folder(files[0], cache_dir)
    if all((course / f.filename).is_file() for f in files):
        for f in files:
            verify(course / f.filename, f, owned=True)
        return course
    for folder in (_hf_snapshot_folder(files), _torch_hub_folder(files)):
        if folder is not None:
            for f in files:
                verify(folder / f.filename, f, owned=False)
            return folder
    for f in files:
        if (course / f.filename).is_file():
            verify(course / f.filename, f, owned=True)
        else:
            _download(f, course)  # verified there, against the pinned values and the hub's record
    return course


def _check_files(files: tuple[RemoteFile, ...]) -> None:
    if not files or not all(isinstance(f, RemoteFile) for f in files):
        raise ValueError(f"files must be a non-empty tuple of download.RemoteFile; got {files!r}.")
    if len({(f.repo_id, f.revision) for f in files}) != 1:
        raise ValueError(f"files must come from one repository at one revision (they are loaded from one folder); "
                         f"got {sorted({(f.repo_id, f.revision) for f in files})}.")


def _missing(remote: RemoteFile, folder: pathlib.Path, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{remote.filename} ({remote.describe_size()}) of {remote.repo_id} is not on this machine and cannot be "
        f"downloaded: {why}. Download it by hand from {remote.url} and put it at {folder / remote.filename} "
        f"(or set {COURSE_CACHE_ENV} to a folder that holds {remote.repo_id}/{remote.revision}/{remote.filename}). "
        f"Looked in: {folder}, {hf_hub_cache()} (Hugging Face's cache, commit {remote.revision[:12]})"
        + (f", {torch_hub_checkpoints()} (torch hub)" if remote.in_torch_hub else "") + ".")


def _download(remote: RemoteFile, folder: pathlib.Path) -> None:
    """Download ``remote`` into ``folder`` with a progress bar, then check it against the hub's record of it.

    (1) ``hf_hub_download`` at the pinned commit into ``folder`` (a partial download stays as ``.incomplete`` under
    ``folder/.cache`` and is resumed next time). (2) The hub's record of the file: size and ETag (the sha256 of an
    LFS file, the git blob sha1 of a small one). (3) :func:`verify` against the pinned values and that record.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if not download_allowed():
        raise _missing(remote, folder, "HF_HUB_OFFLINE is set, so the course does not try the network")
    if not hub_reachable():  # fail now, not after huggingface_hub's retries (about 40 s)
        raise _missing(remote, folder, f"the hub ({os.environ.get('HF_ENDPOINT') or HUB_URL}) cannot be reached "
                                       f"from this machine")
    # (1) the download, with huggingface_hub's progress bar; a busy hub (429, 5xx, timeout) is tried again
    print(f"downloading {remote.url} ({remote.describe_size()}) into {folder}")
    _explain_colab_token_warning()
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        if attempt:
            print(f"  the hub answered {reason}; trying again in {delay:g} s ({attempt} of {len(RETRY_DELAYS)})")
            time.sleep(delay)
        try:
            hf_hub_download(remote.repo_id, remote.filename, revision=remote.revision, local_dir=folder)
            break
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
            if isinstance(error, LocalEntryNotFoundError):  # no network: huggingface_hub's way of saying so
                raise _missing(remote, folder, f"no connection to the hub ({error})") from error
            raise RuntimeError(f"the hub no longer serves {remote.filename} of {remote.repo_id} at the pinned commit "
                               f"{remote.revision}: {error}. The pinned revision in helpers/paper_models.py needs "
                               f"updating (on a machine with network: check the repository's history).") from error
        except (HfHubHTTPError, *_timeout_errors()) as error:
            reason = _transient_reason(error)
            if reason is None:
                raise
            last_error = error
    else:
        raise _missing(remote, folder, f"the hub answered {reason} {len(RETRY_DELAYS) + 1} times, over "
                                       f"{sum(RETRY_DELAYS):g} s (last: {last_error})") from last_error
    # (2) the hub's record of the file at the pinned commit
    try:
        metadata = get_hf_file_metadata(hf_hub_url(remote.repo_id, remote.filename, revision=remote.revision))
    except HfHubHTTPError as error:
        (folder / remote.filename).unlink()
        raise RuntimeError(f"downloaded {remote.filename}, but the hub did not say what its checksum should be "
                           f"({error}); deleted it unchecked. Run again.") from error
    etag = (metadata.etag or "").strip('"').lower()
    # (3) size and checksums: the pinned ones and the hub's
    verify(folder / remote.filename, remote, expected_size=metadata.size,
           expected_sha256=etag if len(etag) == 64 else None, expected_git_sha1=etag if len(etag) == 40 else None,
           owned=True)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a timed-out request, in the HTTP libraries huggingface_hub uses (httpx, requests)."""
    errors: list[type[BaseException]] = [TimeoutError]
    try:
        import httpx
        errors.append(httpx.TimeoutException)
    except ImportError:
        pass
    try:
        import requests
        errors.append(requests.exceptions.Timeout)
    except ImportError:
        pass
    return tuple(errors)


def _transient_reason(error: BaseException) -> str | None:
    """``"429 (too many requests)"``, ``"503"``, ``"a timeout"`` for errors worth another try; ``None`` otherwise."""
    if isinstance(error, _timeout_errors()):
        return "a timeout"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in TRANSIENT_STATUS:
        return "429 (too many requests)" if status == 429 else str(status)
    return None


def _explain_colab_token_warning() -> None:
    """Once per session, on Colab without ``HF_TOKEN``: say that huggingface_hub's warning about the missing secret
    can be ignored (the course's weights are public)."""
    global _told_about_hf_token
    if _told_about_hf_token or "google.colab" not in sys.modules or os.environ.get("HF_TOKEN"):
        return
    _told_about_hf_token = True
    print("  Colab may warn that 'The secret HF_TOKEN does not exist in your Colab secrets': the course's weights are "
          "public, so no token is needed and the warning can be ignored.")
