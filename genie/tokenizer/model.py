"""The video tokenizer: an ST-transformer VQ-VAE over frame patches (Genie's ST-ViViT).

Dimensions: B batch, T frames, H×W pixels, p patch size, h×w = (H/p)×(W/p) token grid,
N = h*w tokens per frame, D width, C code width, K codebook size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from genie.nn import KVCache, SpatialPosEmb, STTransformer, VectorQuantizer


def to_unit(frames_u8: Tensor) -> Tensor:
    """uint8 frames (..., H, W, 3) -> float in [-1, 1]."""
    # Dividing the uint8 tensor makes the fp32 copy; the shift is then done in place.
    return frames_u8.div(127.5).sub_(1.0)


def to_uint8(frames: Tensor) -> Tensor:
    """Float frames in [-1, 1] -> uint8 (rounded, clipped)."""
    return frames.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, T, H, W, 3) -> (B, T, N, p*p*3)."""
    b, t, hh, ww, c = x.shape
    x = x.reshape(b, t, hh // p, p, ww // p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, (hh // p) * (ww // p), p * p * c)  # (B, T, N, p*p*3)


def unit_patches(frames_u8: Tensor, p: int) -> Tensor:
    """uint8 frames (B, T, H, W, 3) -> patches in [-1, 1] (B, T, N, p*p*3)."""
    # Cut into patches while still uint8: the reordering copy moves a quarter of the bytes.
    return to_unit(patchify(frames_u8, p))


def unpatchify(x: Tensor, p: int, h: int, w: int) -> Tensor:
    """(B, T, N, p*p*3) -> (B, T, H, W, 3)."""
    b, t = x.shape[:2]
    x = x.reshape(b, t, h, w, p, p, 3).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h * p, w * p, 3)  # (B, T, H, W, 3)


class VideoTokenizer(ModelMixin, ConfigMixin):
    """Frames (B, T, H, W, 3) uint8 <-> discrete codes (B, T, h, w).

    Encoder and decoder are ST transformers, causal in time, so a frame's codes depend only on
    it and the frames before it (what lets play tokenize one new frame at a time). Codes are
    small (C=32) and l2-normalized, looked up by cosine similarity in a K-entry codebook.
    `window` bands temporal attention to the W most recent frames: set to the training clip
    length, a video of any length is coded as well as the clips it was trained on (positions
    are relative, so frame 100 sees the same kind of context as frame 3 did in training).

    `forward(batch)` returns `(loss, logs)` for the training engine.
    """

    @register_to_config
    def __init__(
        self,
        height: int = 64,
        width: int = 64,
        patch: int = 4,
        dim: int = 256,
        encoder_depth: int = 4,
        decoder_depth: int = 4,
        heads: int = 4,
        code_dim: int = 32,
        codebook_size: int = 1024,
        commitment: float = 0.25,
        window: int | None = None,
    ):
        super().__init__()
        if height % patch or width % patch:
            raise ValueError(f"frames of {height}x{width} do not split into {patch}px patches")
        self.grid = (height // patch, width // patch)
        h, w = self.grid
        self.patch_in = nn.Linear(patch * patch * 3, dim)
        self.enc_pos = SpatialPosEmb(h, w, dim)
        self.encoder = STTransformer(dim, encoder_depth, heads)
        self.quantizer = VectorQuantizer(dim, codebook_size, code_dim, beta=commitment)
        self.dec_pos = SpatialPosEmb(h, w, dim)
        self.decoder = STTransformer(dim, decoder_depth, heads)
        self.patch_out = nn.Linear(dim, patch * patch * 3)

    def quantize(self, frames_u8: Tensor) -> tuple[Tensor, Tensor, dict]:
        """Frames -> (quantized embeddings (B, T, N, D), codes (B, T, N), quantizer stats)."""
        return self.quantizer(self._encode(frames_u8))

    def _encode(self, frames_u8: Tensor) -> Tensor:
        """Frames (B, T, H, W, 3) uint8 -> the encoder's output (B, T, N, D)."""
        return self._encode_patches(unit_patches(frames_u8, self.config.patch))

    def _encode_patches(self, patches: Tensor) -> Tensor:
        x = self.patch_in(patches)  # (B, T, N, D)
        return self.encoder(self.enc_pos(x), window=self.config.window)

    def decode_embeddings(self, z: Tensor) -> Tensor:
        """Quantized embeddings (B, T, N, D) -> frames in [-1, 1] (B, T, H, W, 3)."""
        return unpatchify(self._decode_patches(z), self.config.patch, *self.grid)

    def _decode_patches(self, z: Tensor) -> Tensor:
        """Quantized embeddings (B, T, N, D) -> patches in [-1, 1] (B, T, N, p*p*3)."""
        return self.patch_out(self.decoder(self.dec_pos(z), window=self.config.window))

    @torch.no_grad()
    def encode(self, frames_u8: Tensor) -> Tensor:
        """Frames (B, T, H, W, 3) uint8 -> codes (B, T, h, w) int64."""
        _, codes, _ = self.quantize(frames_u8)
        return codes.view(*codes.shape[:2], *self.grid)

    @torch.no_grad()
    def encode_latents(self, frames_u8: Tensor) -> tuple[Tensor, Tensor]:
        """Frames (B, T, H, W, 3) uint8 -> (codes (B, T, h, w), the pre-quantization latents
        (B, T, N, C) they were chosen from: unit vectors, each nearest its code's entry)."""
        z = self.quantizer.unit(self._encode(frames_u8))  # (B, T, N, C)
        codes = self.quantizer.nearest(z)  # (B, T, N)
        return codes.view(*codes.shape[:2], *self.grid), z

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, T, h, w) -> frames (B, T, H, W, 3) uint8."""
        z = self.quantizer.lookup(codes.flatten(2)).to(self.patch_out.weight.dtype)
        return to_uint8(self.decode_embeddings(z))

    def new_decoder_cache(self) -> KVCache:
        """A cache for `decode_next`: the decoder's keys/values of the frames decoded so far."""
        return self.decoder.new_cache(self.config.window)

    @torch.no_grad()
    def decode_next(self, codes: Tensor, cache: KVCache) -> Tensor:
        """Codes of the next frame (B, h, w) -> its pixels (B, H, W, 3) uint8.

        The same as the last frame of `decode` over the whole history, at the cost of one frame:
        the decoder is causal, so the past frames' keys and values come from `cache`.
        """
        z = self.quantizer.lookup(codes.flatten(1)[:, None]).to(self.patch_out.weight.dtype)
        x = self.patch_out(self.decoder(self.dec_pos(z), cache=cache))  # (B, 1, N, p*p*3)
        return to_uint8(unpatchify(x, self.config.patch, *self.grid))[:, 0]

    def forward(self, frames_u8: Tensor) -> tuple[Tensor, dict]:
        """One training step's loss on a batch of clips (B, T, H, W, 3) uint8."""
        # The loss is taken between patches: the same squared errors as between frames,
        # without reassembling the reconstruction or converting the frames a second time.
        patches = unit_patches(frames_u8, self.config.patch)
        z, codes, stats = self.quantizer(self._encode_patches(patches))
        mse = F.mse_loss(self._decode_patches(z).float(), patches)
        loss = mse + stats["loss"]
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range 2 in [-1, 1]
        logs = {"loss": loss.detach(), "mse": mse.detach(), "psnr": psnr,
                "codebook_usage": stats["usage"], "perplexity": stats["perplexity"],
                "vq_loss": stats["loss"].detach(), "restarted_codes": stats["restarted"]}
        return loss, logs

    @torch.no_grad()
    def sample_images(self, frames_u8: Tensor) -> Tensor:
        """A picture for the run folder: real frames above their reconstructions, (H', W', 3)."""
        clip = frames_u8[:1]
        recon = to_uint8(self.decode_embeddings(self.quantize(clip)[0]))
        rows = [torch.cat(list(x[0]), dim=1) for x in (clip, recon)]  # (H, T*W, 3) each
        return torch.cat(rows, dim=0)
