"""The DiT dynamics model: noisy latents of past frames and a latent action -> the next frame.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame, C code width (the
tokenizer's), K codebook size, A latent actions, D width.

Latents (`latent`): each token of a frame is a unit vector of the tokenizer's code space,
scaled by sqrt(C) so that every element has about unit variance, like the noise. Either its
code's normalized codebook vector (`"code"`, read from the codes in the token cache) or the
tokenizer's pre-quantization unit vector that code was chosen from (`"encoder"`, cached beside
the codes). The model keeps a frozen copy of the codebook (saved with its weights); the sampler
snaps each denoised token to its nearest code, so a DiT world hands the decoder codes, as a
MaskGIT world does. What the context holds differs: the snapped code's vector, or with encoder
latents the denoised latent itself, put back on the sphere the training latents lie on.

Noise: rectified flow. At level τ in [0, 1] (1 is pure noise) a frame is x_τ = (1-τ) x0 + τ ε
and the sampler integrates the velocity v = ε - x0. The network predicts v itself
(`prediction="velocity"`, MSE on v) or the clean latents x0 (`prediction="x0"`, MSE on x0,
v = (x_τ - x0_hat) / τ): at high noise a velocity network must carry the noise ε through all
its layers to its output, an x0 network only the frame. Diffusion forcing: every frame of a training
clip gets its own level, so one model both denoises the next frame and reads context that is
not clean (its own samples at play time, which the sampler holds at a small fixed level).

Action alignment, (B, T-1) or (B, T) `actions`, the receptive field and the cache: as for
every dynamics model (genie/dynamics/causal.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from genie.dynamics.causal import CausalDynamics, check_context
from genie.nn import KVCache, SpatialPosEmb, STTransformer

# Frames above this noise level are "high noise" in the training logs: the regime of the frame
# being generated, where the loss says how well the next frame is predicted.
HIGH_NOISE = 0.5
PREDICTIONS = ("velocity", "x0")
LATENTS = ("code", "encoder")
CONTEXT_LEVEL = 0.1  # the sampler's default context noise level (DiTSettings.context_noise)
LEVEL_FEATURES = 256  # sinusoidal features of the noise level, as DiT's timestep embedding
# x0 prediction turns into a velocity by dividing by τ, floored here against τ = 0: the
# sampler never denoises at τ = 0, but context frames held at level 0 pass through too.
MIN_X0_LEVEL = 0.05


class DiTDynamics(CausalDynamics, ModelMixin, ConfigMixin):
    """ST transformer over continuous frame latents, causal in time, predicting v or x0.

    Input per token: its noisy latent (C) projected to D, plus a learned spatial position;
    temporal positions are rotary (relative), so a KV cache stays valid as the window slides.
    Each frame's condition (action embedding + noise-level embedding) sets every block's
    shift, scale and gate (adaLN-Zero) and the final norm's; the output projection starts at
    zero, so an untrained model outputs 0 (v = 0, or x0 = 0).

    Training (`forward`): codes (B, T, h, w) -> latents, an independent level τ ~ U(0, 1) per
    frame (`sample_levels`), MSE on the prediction (v or x0) of every frame. Uniform rather
    than SD3's logit-normal: sampling conditions on context frames at a small level (~0.1) in
    every step, and a logit-normal draw rarely visits levels that low.
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 1024,
        grid_h: int = 16,
        grid_w: int = 16,
        num_actions: int = 8,
        code_dim: int = 32,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        context: int = 16,
        # "velocity" also because a config.json saved before the option existed has no such
        # key and was trained on v; new models get dynamics.prediction (default velocity).
        prediction: str = "velocity",
        latent: str = "code",
    ):
        super().__init__()
        check_context(context)
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown DiT prediction {prediction!r}: choose one of {PREDICTIONS}")
        if latent not in LATENTS:
            raise ValueError(f"unknown DiT latent {latent!r}: choose one of {LATENTS}")
        self.no_action = num_actions
        # Zeros until set_codebook: a persistent buffer, so it is saved with the weights and a
        # loaded DiT snaps to the codes it was trained on.
        self.register_buffer("codebook", torch.zeros(vocab_size, code_dim))
        self.latent_in = nn.Linear(code_dim, dim)
        self.pos = SpatialPosEmb(grid_h, grid_w, dim)
        self.action_emb = nn.Embedding(num_actions + 1, dim)  # the extra row is "no action"
        nn.init.normal_(self.action_emb.weight, std=0.02)
        self.level_features = Timesteps(LEVEL_FEATURES, flip_sin_to_cos=True,
                                        downscale_freq_shift=0)
        self.level_emb = TimestepEmbedding(LEVEL_FEATURES, dim)
        self.transformer = STTransformer(dim, depth, heads, adaln=True, cond_dim=dim)
        self.latent_out = nn.Linear(dim, code_dim)
        nn.init.zeros_(self.latent_out.weight)
        nn.init.zeros_(self.latent_out.bias)

    # ------------------------------------------------------------------ latents and codes

    def set_codebook(self, codebook: Tensor) -> None:
        """Take the tokenizer's codebook (K, C) (`quantizer.codebook`); stored normalized."""
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            raise ValueError(f"codebook of shape {tuple(codebook.shape)}, but the model was "
                             f"built for {tuple(self.codebook.shape)}")
        with torch.no_grad():
            self.codebook.copy_(F.normalize(codebook.detach().float(), dim=-1))

    def same_codebook(self, codebook: Tensor) -> bool:
        """Whether `codebook` (K, C), normalized, is the one this model was trained on."""
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            return False
        theirs = F.normalize(codebook.detach().float(), dim=-1).to(self.codebook.device)
        return torch.allclose(theirs, self.codebook.float(), atol=1e-5)

    def latents(self, frames: Tensor) -> Tensor:
        """Codes (B, T, h, w) or (B, T, N) int, or vectors (B, T, N, C) float of any length ->
        latents (B, T, N, C): unit vectors (the codes' codebook entries) scaled by sqrt(C)."""
        if not self.codebook.any():
            raise RuntimeError("the DiT has no codebook yet: call set_codebook(tokenizer."
                               "quantizer.codebook) before training or sampling")
        if frames.is_floating_point():
            units = F.normalize(frames.float(), dim=-1)  # (B, T, N, C)
        else:
            units = self.codebook[frames.reshape(*frames.shape[:2], -1)]  # (B, T, N, C)
        if units.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"frames of {units.shape[2]} tokens, but the model was built for a "
                f"{self.config.grid_h}x{self.config.grid_w} grid"
            )
        return units * math.sqrt(self.config.code_dim)

    def snap(self, latents: Tensor) -> Tensor:
        """Latents (..., C) -> the code (...) of highest cosine similarity to each."""
        return (latents.float() @ self.codebook.float().t()).argmax(-1)

    def _backbone(
        self,
        x: Tensor,
        levels: Tensor,
        frame_actions: Tensor,
        *,
        start: int | None = None,
        cache: KVCache | None = None,
        commit: bool = True,
        output: bool = True,
    ) -> Tensor | None:
        """Noisy latents (B, T, N, C), levels (B, T) and actions (B, T) -> the network's output
        (B, T, N, C); with `output=False` the frames only enter the cache."""
        b, t = levels.shape
        h = self.pos(self.latent_in(x))  # (B, T, N, D)
        features = self.level_features(levels.reshape(-1).float() * 1000)  # (B*T, F)
        noise = self.level_emb(features.to(h.dtype)).view(b, t, -1)  # (B, T, D)
        cond = self.action_emb(frame_actions) + noise  # (B, T, D)
        window = None if cache is not None else self.config.context  # a cache has its own
        h = self.transformer(h, cond=cond, start=start, window=window, cache=cache,
                             commit=commit, output=output)
        return None if h is None else self.latent_out(h)

    # ------------------------------------------------------------------ training

    def sample_levels(self, b: int, t: int, device: torch.device) -> Tensor:
        """The training noise levels (B, T): one independent draw per frame (diffusion forcing).

        In half the clips, the frames before a random first target k ~ U{1..T-1} are drawn
        from U(0, 2 * 0.1) instead, around the level the sampler holds its context at: with
        independent uniform levels, a clip whose 7 context frames are all that clean comes up
        about once in 10^5, yet that is the only case sampling asks for.
        """
        levels = torch.rand(b, t, device=device)
        first = torch.randint(1, t, (b, 1), device=device)
        clean = (torch.arange(t, device=device) < first) & \
            (torch.rand(b, 1, device=device) < 0.5)
        return torch.where(clean, levels * 2 * CONTEXT_LEVEL, levels)

    def forward(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict]:
        """batch = (codes (B, T, h, w) int, actions (B, T-1) int[, encoder latents (B, T, N, C)])
        -> (loss, logs). The encoder latents are what a `latent="encoder"` model learns."""
        codes, actions = batch[:2]
        if self.config.latent == "encoder":
            if len(batch) < 3:
                raise ValueError("a DiT on encoder latents trains on (codes, actions, latents) "
                                 "batches: build the token cache with latents=True")
            x0 = self.latents(batch[2])  # (B, T, N, C)
        else:
            x0 = self.latents(codes)  # (B, T, N, C)
        b, t = x0.shape[:2]
        frame_actions = self.frame_actions(actions, t)
        levels = self.sample_levels(b, t, x0.device)  # (B, T)
        noise = torch.randn_like(x0)
        tau = levels[:, :, None, None]
        x = (1 - tau) * x0 + tau * noise
        out = self._backbone(x, levels, frame_actions).float()
        target = x0 if self.config.prediction == "x0" else noise - x0
        per_frame = (out - target).square().mean(dim=(2, 3))  # (B, T)
        loss = per_frame.mean()

        with torch.no_grad():
            high = levels >= HIGH_NOISE
            # The clean frame the model implies, snapped to codes: how often a high-noise frame
            # lands on its true code says how well it predicts a frame it barely sees.
            x0_hat = out if self.config.prediction == "x0" else x - tau * out
            hits = (self.snap(x0_hat) == codes.reshape(b, t, -1)).float().mean(-1)  # (B, T)
            logs = {"loss": loss.detach(), "loss_low_noise": _mean_where(per_frame, ~high),
                    "loss_high_noise": _mean_where(per_frame, high),
                    "accuracy_high_noise": _mean_where(hits, high)}
        return loss, logs

    # ------------------------------------------------------------------ inference

    def velocity(self, x: Tensor, levels: Tensor, actions: Tensor, *, start: int = 0) -> Tensor:
        """Uncached: latents (B, T, N, C) at levels (B, T) -> velocity (B, T, N, C).

        Every frame is recomputed under the banded `context` window; `start` is the absolute
        index of x[:, 0]. Passing the last `receptive_field` frames reproduces the whole history.
        """
        out = self._backbone(x, levels, self.frame_actions(actions, x.shape[1]), start=start)
        return self._velocity(out, x, levels[:, :, None, None])

    @torch.no_grad()
    def prefill(self, x: Tensor, levels: Tensor, actions: Tensor, cache: KVCache) -> None:
        """Commit context latents (B, t, N, C) at levels (B, t) and actions (B, t-1) to an
        empty cache. A prompt longer than `context` is fine: the cache slides as it fills."""
        self._require_empty(cache)
        self._backbone(x, levels, self.frame_actions(actions, x.shape[1]), cache=cache,
                       output=False)

    @torch.no_grad()
    def commit(self, x: Tensor, level: Tensor, action: Tensor, cache: KVCache) -> None:
        """Append a finished frame's latents (B, N, C) at `level` (B,), led to by `action` (B,)."""
        self._backbone(x[:, None], level[:, None], action[:, None], cache=cache, output=False)

    @torch.no_grad()
    def next_velocity(self, x: Tensor, level: Tensor, action: Tensor, cache: KVCache, *,
                      commit: bool = False) -> Tensor:
        """Velocity (B, N, C) of the next frame's latents (B, N, C) at `level` (B,).

        Only the new frame is computed, against the cached past; `action` (B,) leads into it.
        `commit=True` appends the frame to the cache: do it once, at the context level, or
        call `commit`, which skips the velocity.
        """
        out = self._backbone(x[:, None], level[:, None], action[:, None], cache=cache,
                             commit=commit)
        return self._velocity(out[:, 0], x, level[:, None, None])

    def _velocity(self, out: Tensor, x: Tensor, tau: Tensor) -> Tensor:
        """The network's output for latents x at levels tau (broadcast) -> the velocity."""
        out = out.float()
        if self.config.prediction == "velocity":
            return out
        return (x.float() - out) / tau.float().clamp_min(MIN_X0_LEVEL)


def _mean_where(values: Tensor, where: Tensor) -> Tensor:
    """Mean of `values` where `where` holds (0 when it holds nowhere, as a log must be a number)."""
    return (values * where).sum() / where.sum().clamp_min(1)
