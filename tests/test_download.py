"""helpers.download: where checkpoints are cached, how they are verified, and the errors when they are not there.

No test touches the network: huggingface_hub's download functions are replaced, either by ones that fail the test
when called or by fakes that write a file the way a download would.
"""
import hashlib
import pathlib
import socket
import types

import huggingface_hub
import pytest

from helpers import download
from helpers.download import RemoteFile
from helpers.download import hub_reachable as real_hub_reachable

DATA = bytes(range(256)) * 40  # 10,240 bytes standing in for a checkpoint
REVISION = "0123456789abcdef0123456789abcdef01234567"


pytestmark = pytest.mark.usefixtures("isolated_caches")   # tests/conftest.py: no network, caches in tmp_path


@pytest.fixture
def remote():
    return RemoteFile(repo_id="course-tests/tiny", filename="weights.pt", revision=REVISION, size=len(DATA),
                      sha256=hashlib.sha256(DATA).hexdigest())


def put(path: pathlib.Path, data: bytes = DATA) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fake_hub(monkeypatch, served: bytes, etag: str, size: int | None):
    """Replace the hub: hf_hub_download writes ``served`` where huggingface_hub would; the metadata says ``etag``."""
    calls = []

    def hf_hub_download(repo_id, filename, *, revision, local_dir):
        calls.append((repo_id, filename, revision))
        return str(put(pathlib.Path(local_dir) / filename, served))

    monkeypatch.setattr(download, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata",
                        lambda url: types.SimpleNamespace(etag=f'"{etag}"', size=size))
    return calls


# ---- where ----

def test_cache_root_precedence_argument_then_course_variable_then_hf_home(tmp_path, monkeypatch):
    assert download.cache_root() == tmp_path / "hf_home" / "diffusion-course"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "course"))
    assert download.cache_root() == tmp_path / "course"
    assert download.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("COURSE_CACHE_DIR")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_root() == tmp_path / "xdg" / "huggingface" / "diffusion-course"


def test_course_folder_layout_is_root_repo_revision(tmp_path, remote):
    assert download.course_folder(remote, tmp_path) == tmp_path / "course-tests" / "tiny" / REVISION


def test_git_blob_sha1_is_gits_object_id(tmp_path):
    assert download.git_blob_sha1_of(put(tmp_path / "empty", b"")) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert download.git_blob_sha1_of(put(tmp_path / "hello", b"hello\n")) == "ce013625030ba8dba906f756967f9e9ca394464a"


# ---- cache hits: no network ----

def test_cache_hit_makes_no_network_call(tmp_path, remote):
    put(download.course_folder(remote, tmp_path) / "weights.pt")
    assert download.fetch((remote,), cache_dir=tmp_path) == download.course_folder(remote, tmp_path)


def test_course_cache_variable_is_used(tmp_path, monkeypatch, remote):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "course"))
    put(tmp_path / "course" / "course-tests" / "tiny" / REVISION / "weights.pt")
    assert download.fetch((remote,)) == tmp_path / "course" / "course-tests" / "tiny" / REVISION


def test_copy_in_hugging_faces_cache_at_the_pinned_commit_is_used_in_place(tmp_path, remote):
    snapshot = tmp_path / "hf_home" / "hub" / "models--course-tests--tiny" / "snapshots" / REVISION
    put(snapshot / "weights.pt")
    assert download.find_cached((remote,)) == snapshot
    assert download.fetch((remote,)) == snapshot


def test_copy_at_another_commit_of_hugging_faces_cache_is_not_used(tmp_path, remote, monkeypatch):
    put(tmp_path / "hf_home" / "hub" / "models--course-tests--tiny" / "snapshots" / ("f" * 40) / "weights.pt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download.find_cached((remote,)) is None
    with pytest.raises(FileNotFoundError):
        download.fetch((remote,))


def test_copy_in_torch_hub_is_used_for_files_deepinv_downloads(tmp_path, remote):
    put(tmp_path / "torch_home" / "hub" / "checkpoints" / "weights.pt")
    assert download.find_cached((remote,)) is None  # not a file deepinv downloads
    deepinv_file = RemoteFile(**{**remote.__dict__, "in_torch_hub": True})
    assert download.fetch((deepinv_file,)) == tmp_path / "torch_home" / "hub" / "checkpoints"


# ---- corrupt files ----

def test_corrupt_file_in_the_course_cache_is_deleted_and_reported(tmp_path, remote):
    path = put(download.course_folder(remote, tmp_path) / "weights.pt", DATA[:-1] + b"\x00")
    with pytest.raises(RuntimeError, match=r"corrupt: its sha256 is [0-9a-f]{64}, expected .*has been deleted"):
        download.fetch((remote,), cache_dir=tmp_path)
    assert not path.exists()


def test_truncated_file_in_the_course_cache_is_deleted_and_reported(tmp_path, remote):
    path = put(download.course_folder(remote, tmp_path) / "weights.pt", DATA[:1000])
    with pytest.raises(RuntimeError, match=r"has 1,000 bytes, expected 10,240: truncated .*has been deleted"):
        download.fetch((remote,), cache_dir=tmp_path)
    assert not path.exists()


def test_corrupt_copy_in_another_tools_cache_is_reported_and_left_alone(tmp_path, remote):
    path = put(tmp_path / "torch_home" / "hub" / "checkpoints" / "weights.pt", b"x" * len(DATA))
    with pytest.raises(RuntimeError, match="belongs to another tool's cache and was left alone"):
        download.fetch((RemoteFile(**{**remote.__dict__, "in_torch_hub": True}),))
    assert path.exists()


# ---- missing files ----

def test_missing_file_offline_says_what_is_missing_how_big_where_to_put_it_and_where_to_get_it(tmp_path, monkeypatch,
                                                                                              remote):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        download.fetch((remote,), cache_dir=tmp_path)
    message = str(info.value)
    assert "weights.pt" in message and "10,240 bytes" in message and "HF_HUB_OFFLINE" in message
    assert str(tmp_path / "course-tests" / "tiny" / REVISION / "weights.pt") in message
    assert f"https://huggingface.co/course-tests/tiny/resolve/{REVISION}/weights.pt" in message


def test_missing_file_without_network_is_file_not_found(tmp_path, monkeypatch, remote):
    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(download, "hub_reachable", lambda: True)   # TCP opens, but huggingface_hub gets nothing
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(FileNotFoundError, match=r"no connection to the hub .*put it at"):
        download.fetch((remote,), cache_dir=tmp_path)


def test_missing_file_with_the_hub_out_of_reach_fails_at_once(tmp_path, monkeypatch, remote):
    monkeypatch.setattr(download, "hub_reachable", lambda: False)   # hf_hub_download would fail the test
    with pytest.raises(FileNotFoundError, match=r"the hub \(https://huggingface.co\) cannot be reached .*put it at"):
        download.fetch((remote,), cache_dir=tmp_path)


def test_hub_reachable_opens_a_tcp_connection_to_the_endpoint(monkeypatch):
    """The real check (the fixture replaces download.hub_reachable), on loopback only: a listening port, then none."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{server.getsockname()[1]}")
        assert real_hub_reachable(timeout=1.0)
    assert not real_hub_reachable(timeout=1.0)   # the same port, closed now


def test_hub_reachable_goes_through_the_https_proxy(monkeypatch):
    """Behind a proxy the hub is reached through it: a listening proxy port with a closed hub port is reachable,
    unless NO_PROXY exempts the hub (then the hub itself is tried)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        hub_port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{hub_port}")
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert real_hub_reachable(timeout=1.0)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert not real_hub_reachable(timeout=1.0)


def http_error(status):
    import httpx

    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/x"))
    return huggingface_hub.errors.HfHubHTTPError(f"{status} Client Error", response=response)


def flaky_hub(monkeypatch, failures):
    """hf_hub_download raises each of ``failures`` in turn, then serves DATA; the hub's record matches it."""
    failures = list(failures)
    calls = fake_hub(monkeypatch, DATA, etag=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    serve = huggingface_hub.hf_hub_download

    def hf_hub_download(*args, **kwargs):
        if failures:
            calls.append("failed")
            raise failures.pop(0)
        return serve(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    return calls


def test_a_busy_hub_is_tried_again_and_the_download_completes(tmp_path, monkeypatch, remote, capsys):
    import httpx

    calls = flaky_hub(monkeypatch, [http_error(429), httpx.ReadTimeout("slow"), http_error(503)])
    folder = download.fetch((remote,), cache_dir=tmp_path)
    assert (folder / "weights.pt").read_bytes() == DATA and calls.count("failed") == 3
    out = capsys.readouterr().out
    assert "the hub answered 429 (too many requests); trying again in 0 s (1 of 3)" in out
    assert "the hub answered a timeout" in out and "the hub answered 503" in out


def test_a_hub_that_stays_busy_gives_the_by_hand_message(tmp_path, monkeypatch, remote):
    flaky_hub(monkeypatch, [http_error(429)] * 4)
    with pytest.raises(FileNotFoundError, match=r"cannot be downloaded: the hub answered 429 \(too many requests\) 4 "
                                                r"times.*Download it by hand from https://huggingface.co/.*put it at"):
        download.fetch((remote,), cache_dir=tmp_path)


def test_other_http_errors_are_not_retried(tmp_path, monkeypatch, remote):
    calls = flaky_hub(monkeypatch, [http_error(403)])
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError, match="403"):
        download.fetch((remote,), cache_dir=tmp_path)
    assert calls.count("failed") == 1


def test_colabs_missing_hf_token_warning_is_explained_once(tmp_path, monkeypatch, remote, capsys):
    monkeypatch.setitem(__import__("sys").modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(download, "_told_about_hf_token", False)
    fake_hub(monkeypatch, DATA, etag=remote.sha256, size=len(DATA))
    download.fetch((remote,), cache_dir=tmp_path / "a")
    download.fetch((remote,), cache_dir=tmp_path / "b")
    assert capsys.readouterr().out.count("the course's weights are public, so no token is needed") == 1


def test_no_token_explanation_outside_colab(tmp_path, monkeypatch, remote, capsys):
    monkeypatch.delitem(__import__("sys").modules, "google.colab", raising=False)
    monkeypatch.setattr(download, "_told_about_hf_token", False)
    fake_hub(monkeypatch, DATA, etag=remote.sha256, size=len(DATA))
    download.fetch((remote,), cache_dir=tmp_path)
    assert "HF_TOKEN" not in capsys.readouterr().out


# ---- downloads (faked) ----

def test_download_lands_in_the_course_cache_verified(tmp_path, monkeypatch, remote):
    calls = fake_hub(monkeypatch, DATA, etag=remote.sha256, size=len(DATA))
    folder = download.fetch((remote,), cache_dir=tmp_path)
    assert folder == download.course_folder(remote, tmp_path) and (folder / "weights.pt").read_bytes() == DATA
    assert calls == [("course-tests/tiny", "weights.pt", REVISION)]
    download.fetch((remote,), cache_dir=tmp_path)  # the second time: a cache hit
    assert len(calls) == 1


def test_download_with_the_wrong_checksum_is_deleted_and_reported(tmp_path, monkeypatch, remote):
    bad = DATA[::-1]
    fake_hub(monkeypatch, bad, etag=hashlib.sha256(bad).hexdigest(), size=len(bad))
    with pytest.raises(RuntimeError, match=rf"its sha256 is {hashlib.sha256(bad).hexdigest()}, expected "
                                           rf"{remote.sha256}.*has been deleted"):
        download.fetch((remote,), cache_dir=tmp_path)
    assert not (download.course_folder(remote, tmp_path) / "weights.pt").exists()


def test_download_with_nothing_pinned_is_checked_against_the_hubs_sha256(tmp_path, monkeypatch, remote):
    unpinned = RemoteFile(**{**remote.__dict__, "size": None, "sha256": None})
    fake_hub(monkeypatch, DATA, etag="ab" * 32, size=len(DATA))
    with pytest.raises(RuntimeError, match=f"expected {'ab' * 32}"):
        download.fetch((unpinned,), cache_dir=tmp_path)
    fake_hub(monkeypatch, DATA, etag=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    assert (download.fetch((unpinned,), cache_dir=tmp_path) / "weights.pt").read_bytes() == DATA


def test_small_file_download_is_checked_against_the_hubs_git_blob_sha1(tmp_path, monkeypatch, remote):
    config = RemoteFile(repo_id="course-tests/tiny", filename="config.json", revision=REVISION, size=None, sha256=None)
    fake_hub(monkeypatch, b'{"a": 1}\n', etag="0" * 40, size=9)
    with pytest.raises(RuntimeError, match="git blob sha1 is .*the hub's ETag"):
        download.fetch((config,), cache_dir=tmp_path)
    fake_hub(monkeypatch, b'{"a": 1}\n', etag=hashlib.sha1(b'blob 9\0{"a": 1}\n').hexdigest(), size=9)
    download.fetch((config,), cache_dir=tmp_path)


def test_download_of_a_truncated_file_is_deleted_and_reported(tmp_path, monkeypatch, remote):
    fake_hub(monkeypatch, DATA[:5000], etag=remote.sha256, size=len(DATA))
    with pytest.raises(RuntimeError, match="has 5,000 bytes, expected 10,240: truncated"):
        download.fetch((remote,), cache_dir=tmp_path)
    assert not (download.course_folder(remote, tmp_path) / "weights.pt").exists()


# ---- bad arguments ----

def test_files_of_two_revisions_are_refused(remote):
    other = RemoteFile(**{**remote.__dict__, "revision": "f" * 40})
    with pytest.raises(ValueError, match="one repository at one revision"):
        download.fetch((remote, other))
    with pytest.raises(ValueError, match="non-empty tuple of download.RemoteFile"):
        download.fetch(())
