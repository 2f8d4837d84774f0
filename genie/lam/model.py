"""The latent action model (LAM): discrete actions discovered from pixels, without labels.

Dimensions: B batch, T frames, H×W pixels, p patch size, h×w = (H/p)×(W/p) token grid,
N = h*w tokens per frame, D width, C code width, K number of latent actions.

Action t is the transition from frame t to frame t+1 (0-based): a clip of T frames has T-1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from genie.nn import SpatialPosEmb, STTransformer, VectorQuantizer
from genie.tokenizer.model import to_uint8, unit_patches, unpatchify

# Softmax temperature of the soft code assignment that the entropy term spreads; cosine
# similarities lie in [-1, 1], so 0.1 makes the assignment sharp but still differentiable.
ENTROPY_TEMPERATURE = 0.1


class AttentionPool(nn.Module):
    """Pools the N tokens of each frame into one vector with learned per-head queries.

    x (B, T, N, D) -> (B, T, D). Queries start at zero, i.e. as mean pooling; training can
    then focus on the few tokens where the player moved instead of averaging them with the
    whole background.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))

    def forward(self, x: Tensor) -> Tensor:
        b, t, n, d = x.shape
        xh = x.view(b, t, n, self.heads, d // self.heads)  # (B, T, N, heads, D/heads)
        scores = torch.einsum("btnhe,he->btnh", xh, self.query) / math.sqrt(d // self.heads)
        weights = scores.softmax(dim=2)  # over the N tokens of a frame
        return torch.einsum("btnh,btnhe->bthe", weights, xh).reshape(b, t, d)  # (B, T, D)


class LatentActionModel(ModelMixin, ConfigMixin):
    """Frames (B, T, H, W, 3) uint8 -> one of K latent actions per transition (B, T-1).

    Encoder: an ST transformer over pixel patches of all T frames, causal in time, so the
    features of frame t+1 have seen frames <= t+1 and nothing later. Action t is the change
    from frame t's features to frame t+1's, pooled over space (AttentionPool), then
    vector-quantized to one of K codes.
    Decoder: an ST transformer over the patches of frames 0..T-2, conditioned per frame by
    adaLN on the action embedding, predicts frame t+1 at position t as frame t plus a change.
    It sees the past frames but never frame t+1, so the only way to know what changed is the
    K-way bottleneck: the code is forced to carry the change.

    Choices, measured on the moving-square world of tests/lam/test_learns.py: reading the
    action from the feature *change* (not frame t+1's features) is what lets the codes align
    with the true moves rather than with the scene; fixed sin-cos spatial positions (not
    learned ones that start near zero) let both transformers tell neighbours apart from the
    first step, without which even a decoder given the true actions barely learned.

    Collapse guards: dead-code restarts (`restart_after` steps unused, 0 = off), dropout on
    the pooled action features before quantization (`action_dropout`), and an entropy term
    (`entropy_weight`) that spreads the batch's soft code assignment over the K codes.

    `window` bands temporal attention to the W most recent frames (set to the training clip
    length): the actions of a long video are then read as they were in training, and coding a
    dataset in chunks needs only W-1 warm-up frames per encoder layer.

    `forward(batch)` returns `(loss, logs)` for the training engine. Infer actions in eval
    mode: in training mode dropout is applied and the quantizer counts usage and restarts.
    """

    @register_to_config
    def __init__(
        self,
        height: int = 64,
        width: int = 64,
        patch: int = 8,
        dim: int = 128,
        encoder_depth: int = 2,
        decoder_depth: int = 2,
        heads: int = 4,
        num_actions: int = 8,
        code_dim: int = 32,
        commitment: float = 0.25,
        restart_after: int = 100,
        action_dropout: float = 0.1,
        entropy_weight: float = 0.0,
        window: int | None = None,
    ):
        super().__init__()
        if height % patch or width % patch:
            raise ValueError(f"frames of {height}x{width} do not split into {patch}px patches")
        self.grid = (height // patch, width // patch)
        h, w = self.grid
        pixels = patch * patch * 3
        self.enc_in = nn.Linear(pixels, dim)
        self.enc_pos = SpatialPosEmb(h, w, dim, learned=False)
        self.encoder = STTransformer(dim, encoder_depth, heads)
        self.pool = AttentionPool(dim, heads)
        self.dropout = nn.Dropout(action_dropout)
        self.quantizer = VectorQuantizer(dim, num_actions, code_dim, beta=commitment,
                                         restart_after=restart_after or None)
        self.dec_in = nn.Linear(pixels, dim)
        self.dec_pos = SpatialPosEmb(h, w, dim, learned=False)
        self.decoder = STTransformer(dim, decoder_depth, heads, adaln=True)
        self.patch_out = nn.Linear(dim, pixels)
        # The decoder starts by copying frame t: what it learns is the change, which is what
        # the action has to explain.
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)

    # ------------------------------------------------------------------------ encoder

    def action_features(self, frames_u8: Tensor) -> Tensor:
        """Frames (B, T, H, W, 3) -> pre-quantization action features (B, T-1, D)."""
        return self._action_features(unit_patches(frames_u8, self.config.patch))

    def _action_features(self, patches: Tensor) -> Tensor:
        x = self.enc_in(patches)  # (B, T, N, D)
        x = self.encoder(self.enc_pos(x), window=self.config.window)
        # Transition t -> t+1 is read from how the features of frame t+1 (causal: they have seen
        # frames <= t+1) differ from those of frame t. What did not change cancels, so the
        # codes start out describing the change rather than the scene.
        return self.pool(x[:, 1:] - x[:, :-1])  # (B, T-1, D)

    def quantize(self, frames_u8: Tensor) -> tuple[Tensor, Tensor, dict]:
        """Frames -> (action embeddings (B, T-1, D), actions (B, T-1), quantizer stats)."""
        return self._quantize(unit_patches(frames_u8, self.config.patch))

    def _quantize(self, patches: Tensor) -> tuple[Tensor, Tensor, dict]:
        features = self.dropout(self._action_features(patches))
        emb, codes, stats = self.quantizer(features)
        if self.config.entropy_weight and self.training:
            stats["entropy_loss"] = self._entropy_loss(features)
        return emb, codes, stats

    def _entropy_loss(self, features: Tensor) -> Tensor:
        """log K - H(mean soft assignment): zero when the batch uses all K codes equally."""
        z = F.normalize(self.quantizer.in_proj(features.float()), dim=-1)  # (B, T-1, C)
        codebook = F.normalize(self.quantizer.codebook.float(), dim=-1)  # (K, C)
        probs = (z @ codebook.t() / ENTROPY_TEMPERATURE).softmax(-1).flatten(0, -2).mean(0)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        return math.log(self.config.num_actions) - entropy

    @torch.no_grad()
    def infer_actions(self, frames_u8: Tensor) -> Tensor:
        """Frames (B, T, H, W, 3) uint8 -> latent actions (B, T-1) int64; action t = t -> t+1."""
        return self.quantize(frames_u8)[1]

    # ------------------------------------------------------------------------ decoder

    def decode(self, frames_u8: Tensor, action_emb: Tensor) -> Tensor:
        """Frames 0..t-1 (B, t, H, W, 3) uint8 and action embeddings (B, t, D) -> predictions
        of frames 1..t in [-1, 1] (B, t, H, W, 3): position i is frame i+1 from frames <= i."""
        next_patches = self._decode_patches(unit_patches(frames_u8, self.config.patch), action_emb)
        return unpatchify(next_patches, self.config.patch, *self.grid)

    def _decode_patches(self, past: Tensor, action_emb: Tensor) -> Tensor:
        """Patches of frames 0..t-1 (B, t, N, p*p*3) -> those of frames 1..t predicted."""
        x = self.decoder(self.dec_pos(self.dec_in(past)), cond=action_emb,
                         window=self.config.window)  # (B, t, N, D)
        return past + self.patch_out(x)

    @torch.no_grad()
    def predict_next(self, frames_u8: Tensor, actions: Tensor) -> Tensor:
        """Frames (B, t, H, W, 3) uint8 and actions (B, t) -> next frames (B, t, H, W, 3) uint8.

        Output i is frame i+1 predicted from frames <= i and action i (teacher-forced); the
        frame after the clip under `actions[:, -1]` is output t-1.
        """
        emb = self.quantizer.lookup(actions).to(self.patch_out.weight.dtype)  # (B, t, D)
        return to_uint8(self.decode(frames_u8, emb))

    # ------------------------------------------------------------------------ training

    def forward(self, frames_u8: Tensor) -> tuple[Tensor, dict]:
        """One training step's loss on a batch of clips (B, T, H, W, 3) uint8, T >= 2."""
        # Frames are converted once, and the losses taken between patches: the same squared
        # errors as between frames, without reassembling the prediction.
        patches = unit_patches(frames_u8, self.config.patch)  # (B, T, N, p*p*3)
        emb, codes, stats = self._quantize(patches)
        past, target = patches[:, :-1], patches[:, 1:]
        mse = F.mse_loss(self._decode_patches(past, emb).float(), target)
        loss = mse + stats["loss"]
        logs = {}
        if "entropy_loss" in stats:
            loss = loss + self.config.entropy_weight * stats["entropy_loss"]
            logs["entropy_loss"] = stats["entropy_loss"].detach()
        copy_mse = F.mse_loss(past, target)
        shares = torch.bincount(codes.flatten(), minlength=self.config.num_actions).float()
        shares = shares / shares.sum()
        logs |= {"loss": loss.detach(), "mse": mse.detach(), "psnr": _psnr(mse.detach()),
                 "copy_psnr": _psnr(copy_mse), "action_usage": stats["usage"],
                 "perplexity": stats["perplexity"], "vq_loss": stats["loss"].detach(),
                 "restarted_codes": stats["restarted"]}
        logs |= {f"action_use/{k}": share for k, share in enumerate(shares)}
        return loss, logs

    @torch.no_grad()
    def sample_images(self, frames_u8: Tensor) -> Tensor:
        """What each action does, (H', W', 3) uint8: one column per clip (at most 4).

        Rows: the last context frame, the real next frame, then the prediction of the next
        frame under each of the K actions, the one inferred from the real video framed green.
        """
        clips = frames_u8[:4]
        b, k = len(clips), self.config.num_actions
        inferred = self.infer_actions(clips)  # (b, T-1)
        # Every action at the last transition, the inferred ones before it: (b*K, T-1).
        actions = inferred.repeat_interleave(k, 0)
        actions[:, -1] = torch.arange(k, device=actions.device).repeat(b)
        context = clips[:, :-1].repeat_interleave(k, 0)
        preds = self.predict_next(context, actions)[:, -1].view(b, k, *clips.shape[2:])
        preds[:, :, [0, -1], :] = preds[:, :, :, [0, -1]] = 0  # dark edges keep cells apart
        green = torch.tensor([0, 255, 0], dtype=torch.uint8, device=preds.device)
        for i, a in enumerate(inferred[:, -1].tolist()):
            preds[i, a, [0, -1], :] = preds[i, a, :, [0, -1]] = green
        rows = torch.cat([clips[:, -2:], preds], dim=1)  # (b, K+2, H, W, 3)
        return torch.cat([torch.cat(list(col), dim=0) for col in rows], dim=1)


def _psnr(mse: Tensor) -> Tensor:
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))  # value range 2 in [-1, 1]
