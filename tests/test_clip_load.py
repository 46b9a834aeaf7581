"""clip.load: TorchScript archives, state-dict files, the checksummed cache, and the offline error."""
import hashlib
import urllib.error

import pytest
import torch

import clip
import clip.pretrained as pretrained
from clip.transforms import ClipPreprocess


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = clip.CLIP(**clip.tiny_clip_config("resnet")).eval()
    images = torch.randn(2, 3, 64, 64)
    tokens = clip.tokenize(["a photo of a cat", "two dogs"], context_length=32)
    with torch.no_grad():
        expected = model.encode_image(images), model.encode_text(tokens)
    return model, images, tokens, expected


def assert_same_outputs(model, tiny):
    _, images, tokens, (image_features, text_features) = tiny
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), image_features, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.encode_text(tokens), text_features, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torchscript_archive(tiny, tmp_path):
    model, images, tokens, _ = tiny
    traced = torch.jit.trace(model, (images, tokens), check_trace=False)
    path = tmp_path / "tiny_jit.pt"
    torch.jit.save(traced, str(path))
    assert pretrained.is_torchscript_archive(path)
    loaded, preprocess = clip.load(path)
    assert isinstance(loaded, clip.CLIP) and not loaded.training
    assert loaded.dtype == torch.float32
    assert preprocess == ClipPreprocess(64)
    assert_same_outputs(loaded, tiny)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "state_dict-key"])
def test_state_dict_file(tiny, tmp_path, wrap):
    model = tiny[0]
    path = tmp_path / "tiny.pt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    assert not pretrained.is_torchscript_archive(path)
    loaded, _ = clip.load(str(path))
    assert loaded.dtype == torch.float32
    for name, value in loaded.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, state[name].float())


def test_non_state_dict_file_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(clip.TorchFileError, match="state dict"):
        clip.load(path)


def test_bad_arguments(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a CLIP model name"):
        clip.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="jit=True"):
        clip.load("RN50", jit=True)
    with pytest.raises(ValueError, match="CUDA"):
        clip.load("RN50", fp16=True)


def test_available_models_and_real_urls():
    assert clip.available_models() == ["RN50", "RN101", "RN50x4", "ViT-B/32", "ViT-B/16", "ViT-L/14"]
    assert pretrained._MODELS["RN50"] == ("https://openaipublic.azureedge.net/clip/models/"
                                          "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")


@pytest.fixture
def fake_model(tiny, tmp_path, monkeypatch):
    """Registers 'Tiny' as a named model whose URL embeds the sha256 of a tiny checkpoint file."""
    source = tmp_path / "source.pt"
    torch.save(tiny[0].state_dict(), source)
    data = source.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(pretrained._MODELS, "Tiny", f"https://example.invalid/clip/models/{sha}/Tiny.pt")
    return data


def offline(url, dest):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_missing_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "_fetch", offline)
    with pytest.raises(clip.WeightsUnavailableError) as info:
        clip.load("RN50", download_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "RN50.pt") in message
    assert pretrained._MODELS["RN50"] in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_named_model_from_cache_folder_via_environment(fake_model, tiny, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Tiny.pt").write_bytes(fake_model)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(cache))
    monkeypatch.setattr(pretrained, "_fetch", offline)
    assert pretrained.model_file("Tiny") == cache / "Tiny.pt"
    loaded, _ = clip.load("Tiny")
    assert_same_outputs(loaded, tiny)


def test_download_is_verified_and_placed(fake_model, tiny, tmp_path, monkeypatch):
    def serve(url, dest):
        dest.write_bytes(fake_model)

    monkeypatch.setattr(pretrained, "_fetch", serve)
    loaded, _ = clip.load("Tiny", download_root=tmp_path / "new")
    assert (tmp_path / "new" / "Tiny.pt").read_bytes() == fake_model
    assert_same_outputs(loaded, tiny)

    monkeypatch.setattr(pretrained, "_fetch", lambda url, dest: dest.write_bytes(b"truncated"))
    with pytest.raises(ValueError, match="SHA-256"):
        clip.load("Tiny", download_root=tmp_path / "other")
    assert not (tmp_path / "other" / "Tiny.pt").exists()


def test_corrupt_cached_file_is_reported(fake_model, tmp_path, monkeypatch):
    (tmp_path / "Tiny.pt").write_bytes(fake_model[:-10])
    monkeypatch.setattr(pretrained, "_fetch", offline)
    with pytest.raises(ValueError, match="corrupt"):
        clip.load("Tiny", download_root=tmp_path)
