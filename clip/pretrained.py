"""OpenAI model names, the checksummed weight cache, reading checkpoint files, and `load`."""
import hashlib
import http.client
import os
import pickle
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from .hf import read_hf_folder
from .model import CLIP, build_model, convert_to_fp16
from .transforms import ClipPreprocess, clip_preprocess

_BASE = "https://openaipublic.azureedge.net/clip/models"
_MODELS = {
    "RN50": f"{_BASE}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
}


class WeightsUnavailableError(FileNotFoundError):
    """Named CLIP weights are neither in the cache nor downloadable."""


class TorchFileError(ValueError):
    """A torch file is truncated, corrupt or holds something else than expected."""


def torch_load(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on CPU; a truncated or corrupt file raises :class:`TorchFileError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, KeyError, pickle.UnpicklingError) as e:
        raise TorchFileError(f"{path}: unreadable torch file ({type(e).__name__}: {e}); is it truncated or "
                             "not a torch file? Copy or write it again") from None
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e) and "zip archive" not in str(e):
            raise
        raise TorchFileError(f"{path}: truncated or corrupt torch file ({str(e).split('. ')[0]}); copy or write it "
                             "again") from None


def available_models() -> list[str]:
    """Names accepted by `load` (OpenAI's checkpoints)."""
    return list(_MODELS)


def cache_dir(download_root: str | Path | None = None) -> Path:
    """The weight cache: `download_root`, else $CLIP_CACHE_DIR, else ~/.cache/clip."""
    root = download_root if download_root is not None else os.environ.get("CLIP_CACHE_DIR") or "~/.cache/clip"
    return Path(root).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path) -> None:
    """Stream `url` into `dest`, with a progress bar."""
    with urllib.request.urlopen(url, timeout=60) as src, open(dest, "wb") as out:
        total = int(src.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))


def model_file(name: str, download_root: str | Path | None = None) -> Path:
    """Path of the verified checkpoint for a model name, downloading it into the cache if absent."""
    if name not in _MODELS:
        raise ValueError(f"unknown CLIP model {name!r}; available: {available_models()}")
    url = _MODELS[name]
    expected = url.split("/")[-2]
    target = cache_dir(download_root) / url.split("/")[-1]
    if target.is_file():
        digest = _sha256(target)
        if digest != expected:
            raise ValueError(f"{target} has SHA-256 {digest} but {name} must have {expected}; the file is "
                             f"corrupt or another model. Replace it with {url}")
        return target
    partial = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch(url, partial)
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts and socket errors are OSErrors
        partial.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"CLIP weights {name!r} are not at {target} and could not be downloaded ({err}).\n"
            f"Fetch {url} (SHA-256 {expected}) on a machine with network access and place it at {target} "
            f"(the folder is download_root, else $CLIP_CACHE_DIR, else ~/.cache/clip), "
            f"or pass the file's path to clip.load.") from None
    digest = _sha256(partial)
    if digest != expected:
        partial.unlink()
        raise ValueError(f"downloaded {url} has SHA-256 {digest}, expected {expected}")
    partial.replace(target)
    return target


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a torch.jit.save archive (it holds compiled code), False for torch.save files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """State dict from a TorchScript archive (OpenAI's release format), a plain state-dict file,
    or a dict holding one under 'state_dict'. Plain files are read with weights_only=True."""
    if is_torchscript_archive(path):
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but OpenAI's files need it
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    obj = torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise TorchFileError(f"{path} holds neither a CLIP state dict nor a dict with a 'state_dict' entry")
    return obj


def load(name_or_path: str | Path, device: str | torch.device = "cpu", jit: bool = False,
         download_root: str | Path | None = None, fp16: bool = False) -> tuple[CLIP, ClipPreprocess]:
    """Load CLIP weights by model name (see `available_models`), file path, or Hugging Face CLIP folder
    (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, ViT models; see `clip.hf`).

    Returns (model in eval mode on `device`, preprocess for its input resolution). The model is fp32
    unless fp16=True, which needs a CUDA device and casts weights like OpenAI's release. Only the eager
    model exists here: jit must be False (TorchScript archives are read for their weights).
    """
    if jit:
        raise ValueError("jit=True is not supported; TorchScript archives are loaded into the eager model")
    device = torch.device(device)
    if fp16 and device.type != "cuda":
        raise ValueError(f"fp16 is only supported on CUDA, not on {device}")
    source = Path(name_or_path).expanduser()
    if str(name_or_path) in _MODELS:
        state_dict = read_state_dict(model_file(str(name_or_path), download_root))
    elif source.is_file():
        state_dict = read_state_dict(source)
    elif source.is_dir():
        state_dict = read_hf_folder(source)
    else:
        raise FileNotFoundError(f"{name_or_path!r} is neither a CLIP model name {available_models()} nor a file "
                                "nor a Hugging Face CLIP folder")
    if not any(k.startswith("visual.") for k in state_dict) or "token_embedding.weight" not in state_dict:
        raise TorchFileError(f"{name_or_path} is not a CLIP checkpoint (no 'visual.*' and 'token_embedding' weights, "
                             "e.g. a captioner checkpoint); give a CLIP model name or a CLIP file")
    model = build_model(state_dict)
    if fp16:
        convert_to_fp16(model)
    return model.to(device), clip_preprocess(model.visual.input_resolution)
