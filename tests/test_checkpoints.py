import functools
import http.server
import threading

import pytest

from sam2med import checkpoints
from sam2med.checkpoints import MODELS, model_for_checkpoint, resolve_checkpoint
from sam2med.errors import CheckpointError


def test_official_names_and_urls():
    assert {"tiny", "small", "base_plus", "large"} <= set(MODELS)
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


@pytest.fixture
def served_cache(tmp_path, monkeypatch, file_server):
    """The loopback server standing in for both download hosts (SAM2.1, MedSAM2), and a cache folder to fill."""
    root, url = file_server
    monkeypatch.setattr(checkpoints, "OFFICIAL_BASE_URL", url)
    monkeypatch.setattr(checkpoints, "MEDSAM2_BASE_URL", url)
    cache = tmp_path / "cache"
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(cache))
    return root, url, cache


def test_download_verifies_and_writes_atomically(served_cache, random_checkpoint):
    root, _, cache = served_cache
    (root / "sam2.1_hiera_tiny.pt").write_bytes(random_checkpoint.read_bytes())
    path = resolve_checkpoint("tiny")
    assert path == cache / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == random_checkpoint.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["sam2.1_hiera_tiny.pt"]


def test_corrupt_download_leaves_no_file(served_cache):
    root, _, cache = served_cache
    (root / "sam2.1_hiera_small.pt").write_bytes(b"<html>not a checkpoint</html>")
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


MEDSAM2_FILES = {"medsam2": "MedSAM2_latest.pt", "medsam2-2411": "MedSAM2_2411.pt", "medsam2-ct-lesion": "MedSAM2_CTLesion.pt",
                 "medsam2-mri-liver-lesion": "MedSAM2_MRI_LiverLesion.pt", "medsam2-us-heart": "MedSAM2_US_Heart.pt"}


def test_registry_holds_sam2_and_medsam2_with_sizes_preprocessing_and_terms():
    from sam2med.windowing import PREPROCESSING

    assert sorted(MODELS) == sorted(["tiny", "small", "base_plus", "large", *MEDSAM2_FILES])
    for name, filename in MEDSAM2_FILES.items():
        spec = MODELS[name]
        assert spec.filename == filename and spec.url == f"https://huggingface.co/wanglab/MedSAM2/resolve/main/{filename}"
        assert (spec.family, spec.input_size, spec.preprocessing) == ("MedSAM2", 512, "medsam2")
        assert spec.config == MODELS["tiny"].config  # SAM2.1-tiny, built at 512 px with a 32x32 RoPE grid
        assert "2504.03600" in spec.citation and spec.licence.startswith("Apache-2.0") and spec.purpose
        assert model_for_checkpoint(f"/x/{filename}") == name
    for name in ("tiny", "small", "base_plus", "large"):
        assert (MODELS[name].family, MODELS[name].input_size, MODELS[name].preprocessing) == ("SAM2.1", 1024, "sam2")
    assert PREPROCESSING["medsam2"].eight_bit and PREPROCESSING["medsam2"].resize == "bicubic"
    assert not PREPROCESSING["sam2"].eight_bit and PREPROCESSING["sam2"].resize == "bilinear"


def _sidecar(checkpoint, **content):
    import json

    checkpoint.write_bytes(b"weights")
    path = checkpoints.sidecar_path(checkpoint)
    path.write_text(json.dumps(content))
    return path


def test_sidecar_names_base_model_and_input_size(tmp_path):
    ft = tmp_path / "my_ft.pt"
    path = _sidecar(ft, base_model="medsam2", image_size=384, base_checkpoint="MedSAM2_latest.pt", steps=200)
    assert path == tmp_path / "my_ft.pt.json"
    choice = checkpoints.choose_model(None, ft)
    assert (choice.model, choice.image_size) == ("medsam2", 384)
    assert choice.sidecar.extra == {"base_checkpoint": "MedSAM2_latest.pt", "steps": 200}
    assert model_for_checkpoint(ft) == "medsam2"
    assert checkpoints.choose_model("medsam2", ft).image_size == 384  # the same name agrees
    assert checkpoints.choose_model(None, ft, image_size=256).image_size == 256  # an explicit size wins
    with pytest.raises(CheckpointError) as caught:
        checkpoints.choose_model("tiny", ft)
    assert str(caught.value) == ("checkpoint my_ft.pt is a 'medsam2' model (its sidecar my_ft.pt.json names 'medsam2'), "
                                 "not 'tiny': drop --model or give the matching name")
    plain = tmp_path / "plain.pt"
    plain.write_bytes(b"weights")
    assert (checkpoints.choose_model(None, plain).model, checkpoints.choose_model(None, plain).image_size) == ("tiny", 1024)
    assert checkpoints.choose_model("medsam2", None).image_size == 512


@pytest.mark.parametrize("content, message", [
    ({"base_model": "huge", "image_size": 512}, "base_model 'huge' is not a known model"),
    ({"base_model": "tiny", "image_size": 500}, "image_size must be an integer multiple of 32"),
    ({"base_model": "tiny"}, "image_size must be an integer multiple of 32, at least 128, got None"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_sidecar_is_one_line(tmp_path, content, message):
    ft = tmp_path / "ft.pt"
    _sidecar(ft, **content) if isinstance(content, dict) else (ft.write_bytes(b"w"), checkpoints.sidecar_path(ft).write_text("[1, 2]"))
    with pytest.raises(CheckpointError, match=message) as caught:
        checkpoints.choose_model(None, ft)
    assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)


def test_registry_file_name_with_another_model_name_fails(tmp_path):
    medsam2 = tmp_path / "MedSAM2_CTLesion.pt"
    medsam2.write_bytes(b"weights")
    assert checkpoints.choose_model(None, medsam2).model == "medsam2-ct-lesion"
    with pytest.raises(CheckpointError, match=r"^checkpoint MedSAM2_CTLesion.pt is a 'medsam2-ct-lesion' model "
                                              r"\(its file name is that of 'medsam2-ct-lesion'\), not 'medsam2'"):
        checkpoints.choose_model("medsam2", medsam2)


def test_medsam2_download_and_offline_message(served_cache, medsam2_checkpoint):
    root, url, cache = served_cache
    (root / "MedSAM2_latest.pt").write_bytes(medsam2_checkpoint.read_bytes())
    assert resolve_checkpoint("medsam2") == cache / "MedSAM2_latest.pt"
    assert (cache / "MedSAM2_latest.pt").read_bytes() == medsam2_checkpoint.read_bytes()
    with pytest.raises(CheckpointError) as caught:  # not served: the same clear offline message as for SAM2.1
        resolve_checkpoint("medsam2-us-heart")
    message = str(caught.value)
    assert message.startswith("cannot download the MedSAM2 'medsam2-us-heart' checkpoint")
    assert f"download {url}/MedSAM2_US_Heart.pt and save it as {cache / 'MedSAM2_US_Heart.pt'}" in message
    assert ("--model medsam2-us-heart --random-weights checkpoints/MedSAM2_US_Heart.RANDOM-WEIGHTS.pt, then pass "
            "--model medsam2-us-heart --checkpoint checkpoints/MedSAM2_US_Heart.RANDOM-WEIGHTS.pt") in message
    assert "\n" not in message and sorted(p.name for p in cache.iterdir()) == ["MedSAM2_latest.pt"]
