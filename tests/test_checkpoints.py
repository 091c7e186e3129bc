import functools
import http.server
import threading

import pytest

from sam2med import checkpoints
from sam2med.checkpoints import MODELS, model_for_checkpoint, resolve_checkpoint
from sam2med.errors import CheckpointError


def test_official_names_and_urls():
    assert set(MODELS) == {"tiny", "small", "base_plus", "large"}
    assert MODELS["tiny"].url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    assert MODELS["base_plus"].config == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert model_for_checkpoint("/x/sam2.1_hiera_large.pt") == "large"
    assert model_for_checkpoint("/x/mine.pt") == "tiny"


def test_unknown_model_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="unknown model 'huge'"):
        resolve_checkpoint("huge")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint("tiny", tmp_path / "nope.pt")


@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server over a folder, standing in for the official download host."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_and_writes_atomically(tmp_path, monkeypatch, file_server, random_checkpoint):
    root, url = file_server
    (root / "sam2.1_hiera_tiny.pt").write_bytes(random_checkpoint.read_bytes())
    monkeypatch.setattr(checkpoints, "OFFICIAL_BASE_URL", url)
    cache = tmp_path / "cache"
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(cache))
    path = resolve_checkpoint("tiny")
    assert path == cache / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == random_checkpoint.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["sam2.1_hiera_tiny.pt"]


def test_corrupt_download_leaves_no_file(tmp_path, monkeypatch, file_server):
    root, url = file_server
    (root / "sam2.1_hiera_small.pt").write_bytes(b"<html>not a checkpoint</html>")
    monkeypatch.setattr(checkpoints, "OFFICIAL_BASE_URL", url)
    cache = tmp_path / "cache"
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(cache))
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        resolve_checkpoint("small")
    assert list(cache.iterdir()) == []


def test_offline_message_names_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "OFFICIAL_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint("tiny")
    message = str(caught.value)
    assert "http://127.0.0.1:9/sam2.1_hiera_tiny.pt" in message and str(tmp_path / "sam2.1_hiera_tiny.pt") in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="download .* and save it there") as again:
        resolve_checkpoint("tiny", download=False)
    hint = "python main.py download --model tiny --random-weights checkpoints/sam2.1_hiera_tiny.RANDOM-WEIGHTS.pt"
    for text in (message, str(again.value)):  # the plumbing can be tried offline, and the weights are named random
        assert hint in text and "RANDOM weights" in text and "no segmentation quality" in text


def test_random_weights_are_marked_and_recognised(random_checkpoint, tmp_path):
    import shutil

    from sam2med.provenance import has_random_weights

    assert has_random_weights(random_checkpoint)  # built by `download --random-weights`: marked inside
    official_name = tmp_path / "sam2.1_hiera_tiny.pt"
    torch_only = tmp_path / "plain.pt"
    import torch

    torch.save({"model": {}}, torch_only)
    shutil.copy(random_checkpoint, official_name)
    assert has_random_weights(official_name) and not has_random_weights(torch_only)


def test_checkpoint_of_another_architecture_is_rejected(random_checkpoint):
    import torch

    from sam2med.engine.model import load_tracker

    with pytest.raises(CheckpointError, match="does not fit the SAM2.1 'small' architecture"):
        load_tracker("small", random_checkpoint, torch.device("cpu"))
