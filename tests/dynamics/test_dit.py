"""The DiT dynamics model and its sampler on tiny configs.

Dimensions: B batch, T frames, h×w = 4×4 grid, N = 16 tokens per frame, C = 8 code width,
K = 16 codes.
"""

from __future__ import annotations

import math

import pytest
import torch

from genie.dynamics import model_class, sampler_for
from genie.dynamics.dit import DiTDynamics, DiTSampler, DiTSettings
from genie.errors import GenieError

K, C, H, W, A = 16, 8, 4, 4, 4
TINY = dict(vocab_size=K, grid_h=H, grid_w=W, num_actions=A, code_dim=C, dim=32, depth=2,
            heads=2, context=3)


def codebook() -> torch.Tensor:
    return torch.randn(K, C, generator=torch.Generator().manual_seed(7))


def tiny_model(seed: int = 0, **overrides) -> DiTDynamics:
    """A tiny model whose zero-initialised parts are random, so blocks and actions matter.

    (adaLN-Zero and the zero output projection make an untrained model predict v = 0 whatever
    its input: every test below would pass for the wrong reason. The action embeddings start
    small beside the noise-level embedding, too small to change a sampled code.)
    """
    torch.manual_seed(seed)
    model = DiTDynamics(**TINY | overrides).eval()
    model.set_codebook(codebook())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name or "latent_out" in name:
                p.normal_(0, 0.2)
        model.action_emb.weight.normal_(0, 1)
    return model


def clip(seed: int = 0, b: int = 2, t: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (b, t, H, W), generator=g), torch.randint(0, A, (b, t - 1),
                                                                         generator=g)


def noisy(seed: int = 0, b: int = 2, t: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (B, T, N, C) and levels (B, T), for calling the model directly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, H * W, C, generator=g), torch.rand(b, t, generator=g)


def test_shapes_and_logs():
    model = tiny_model()
    tokens, actions = clip(t=4)
    loss, logs = model((tokens, actions))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert set(logs) == {"loss", "loss_low_noise", "loss_high_noise", "accuracy_high_noise"}
    latents = model.latents(tokens)
    assert latents.shape == (2, 4, H * W, C)
    # Unit-variance elements, and every latent snaps back to its own code.
    assert latents.square().mean().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.equal(model.snap(latents), tokens.flatten(2))
    x, levels = noisy()
    assert model.velocity(x, levels, actions).shape == (2, 4, H * W, C)
    cache = model.new_cache()
    model.prefill(x, levels, actions, cache)
    v = model.next_velocity(x[:, 0], torch.tensor([1.0, 0.5]), torch.tensor([0, 3]), cache)
    assert v.shape == (2, H * W, C)
    sampler = DiTSampler(model)
    sampler.reset(tokens, actions)
    codes = sampler.next_frame(1)
    assert codes.shape == (2, H, W) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < K and sampler.position == 5


def test_misuse_raises_clear_errors():
    with pytest.raises(RuntimeError, match="set_codebook"):
        DiTDynamics(**TINY)(clip())
    model = tiny_model()
    tokens, actions = clip(t=4)
    with pytest.raises(ValueError, match="3 actions"):
        model((tokens, actions[:, :1]))
    with pytest.raises(ValueError, match="4x4 grid"):
        model.latents(tokens[..., :2])
    with pytest.raises(ValueError, match="built for"):
        model.set_codebook(torch.randn(K, C + 1))
    cache = model.new_cache()
    model.prefill(*noisy(), actions, cache)
    with pytest.raises(ValueError, match="empty cache"):
        model.prefill(*noisy(), actions, cache)
    sampler = DiTSampler(model)
    with pytest.raises(RuntimeError, match="reset"):
        sampler.next_frame(0)
    with pytest.raises(ValueError, match="needs its actions"):
        sampler.reset(tokens)
    with pytest.raises(ValueError, match="context"):
        DiTDynamics(**TINY | {"context": 1})
    with pytest.raises(ValueError, match="prediction"):
        DiTDynamics(**TINY | {"prediction": "epsilon"})
    for bad in ({"steps": 0}, {"context_noise": 1.0}, {"shift": 0.0}):
        with pytest.raises(GenieError):
            DiTSettings(**bad)


def test_backend_registry_builds_the_sampler_from_world_settings():
    assert model_class("dit") is DiTDynamics
    sampler = sampler_for("dit", tiny_model(), {"steps": 4, "context_noise": 0.2})
    assert isinstance(sampler, DiTSampler)
    assert sampler.settings.steps == 4 and sampler.settings.context_noise == 0.2
    with pytest.raises(GenieError, match="unknown dit sampler setting.*temperature"):
        sampler_for("dit", tiny_model(), {"temperature": 0.0})  # a MaskGIT setting


def test_save_load_round_trip(tmp_path, rollout):
    model = tiny_model()
    model.save_pretrained(tmp_path / "dyn")
    loaded = DiTDynamics.from_pretrained(tmp_path / "dyn").eval()
    assert loaded.config.context == 3 and loaded.config.code_dim == C
    assert loaded.same_codebook(codebook()) and not loaded.same_codebook(codebook() + 1)
    x, levels = noisy()
    _, actions = clip()
    assert torch.equal(model.velocity(x, levels, actions), loaded.velocity(x, levels, actions))
    frames = []
    for m in (model, loaded):
        sampler = DiTSampler(m, DiTSettings(seed=5, steps=3))
        sampler.reset(*clip())
        frames.append(rollout(sampler, [0, 1, 2]))
    assert torch.equal(*frames)


def test_seeded_training_step_and_sampling_are_deterministic(rollout):
    def one_step() -> tuple[torch.Tensor, float]:
        torch.manual_seed(3)
        model = DiTDynamics(**TINY)
        model.set_codebook(codebook())
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        loss, _ = model(clip())
        loss.backward()
        opt.step()
        return model.latent_out.weight.detach().clone(), loss.item()

    (w1, l1), (w2, l2) = one_step(), one_step()
    assert l1 == l2 and torch.equal(w1, w2) and w1.abs().sum() > 0

    def sample(seed: int) -> torch.Tensor:
        sampler = DiTSampler(tiny_model(), DiTSettings(seed=seed, steps=3))
        sampler.reset(*clip())
        return rollout(sampler, [0, 1, 2, 3])

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_each_frame_of_a_clip_is_noised_to_its_own_level():
    model = tiny_model()
    seen = []
    backbone = model._backbone

    def spy(x, levels, frame_actions, **kwargs):
        seen.append((x, levels))
        return backbone(x, levels, frame_actions, **kwargs)

    model._backbone = spy
    tokens, actions = clip(b=8, t=4)
    model((tokens, actions))
    levels = seen[-1][1]  # (B, T), what the model conditions on
    assert levels.shape == (8, 4)
    assert (levels != levels[:, :1]).any(dim=1).all()  # no clip shares one level over its frames
    assert levels.min() >= 0 and levels.max() <= 1

    # The levels the inputs are noised to are those same per-frame levels: frame 1 clean,
    # frame 2 pure noise, in every clip.
    fixed = torch.tensor([0.3, 0.0, 1.0, 0.6]).expand(8, 4)
    model.sample_levels = lambda b, t, device: fixed
    model((tokens, actions))
    x, levels = seen[-1]
    x0 = model.latents(tokens)
    assert torch.equal(levels, fixed)
    assert torch.equal(x[:, 1], x0[:, 1])
    correlation = torch.corrcoef(torch.stack([x[:, 2].flatten(), x0[:, 2].flatten()]))[0, 1]
    assert abs(correlation) < 0.1


@torch.no_grad()
def test_a_frames_noise_level_changes_that_frame_and_later_ones_only():
    model = tiny_model()
    x, levels = noisy(t=5)
    _, actions = clip(t=5)
    other = levels.clone()
    other[:, 2] = 1 - other[:, 2]
    a, b = model.velocity(x, levels, actions), model.velocity(x, other, actions)
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=0, rtol=0)  # causal: earlier frames
    assert (a[:, 2:] - b[:, 2:]).abs().amax(dim=(0, 2, 3)).min() > 1e-3


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(prediction):
    model = tiny_model(prediction=prediction).train()
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    batch = clip(b=4)

    def loss_with_fixed_noise() -> torch.Tensor:
        torch.manual_seed(11)  # the same levels and noise before and after the step
        return model(batch)[0]

    before = loss_with_fixed_noise()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_with_fixed_noise() < before.detach()


@torch.no_grad()
def test_x0_prediction_becomes_the_velocity_that_leads_to_it():
    """x_τ - τ v is the network's x0: the sampler's Euler step lands on the predicted frame."""
    model = tiny_model(prediction="x0")
    x, levels = noisy()
    _, actions = clip()
    x0_hat = model._backbone(x, levels, model.frame_actions(actions, 4)).float()
    v = model.velocity(x, levels, actions)
    tau = levels[:, :, None, None].clamp_min(0.05)  # below that the division is floored
    torch.testing.assert_close(x - tau * v, x0_hat, atol=1e-5, rtol=1e-5)
    cache = model.new_cache()
    model.prefill(x[:, :3], levels[:, :3], actions[:, :2], cache)
    torch.testing.assert_close(model.next_velocity(x[:, 3], levels[:, 3], actions[:, 2], cache),
                               v[:, 3], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_action_t_conditions_frame_t_plus_1_and_later():
    model = tiny_model()
    x, levels = noisy(t=6)
    _, actions = clip(t=6)
    changed = actions.clone()
    changed[:, 2] = (changed[:, 2] + 1) % A  # the transition from frame 2 to frame 3
    a, b = model.velocity(x, levels, actions), model.velocity(x, levels, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=0, rtol=0)
    assert (a[:, 3:] - b[:, 3:]).abs().amax(dim=(0, 2, 3)).min() > 1e-3
    # The cached path aligns the same way: the action passed with a frame leads into it.
    cache = model.new_cache()
    model.prefill(x[:, :3], levels[:, :3], actions[:, :2], cache)
    incremental = model.next_velocity(x[:, 3], levels[:, 3], actions[:, 2], cache)
    torch.testing.assert_close(incremental, a[:, 3], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_receptive_field_is_exact_and_tight():
    model = tiny_model()  # depth 2, context 3: frame t depends on frames t-4..t
    x, levels = noisy(t=9)
    _, actions = clip(t=9)
    full = model.velocity(x, levels, actions)[:, -1]
    field = model.receptive_field
    assert field == 5
    start = 9 - field
    cut = model.velocity(x[:, start:], levels[:, start:], actions[:, start - 1:],
                         start=start)[:, -1]
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    shorter = model.velocity(x[:, start + 1:], levels[:, start + 1:], actions[:, start:],
                             start=start + 1)[:, -1]
    assert not torch.allclose(shorter, full, atol=1e-4)


@pytest.mark.parametrize("settings", [
    DiTSettings(seed=0),  # the default: 8 steps, context held at level 0.1
    DiTSettings(seed=0, steps=1, context_noise=0.0),
    DiTSettings(seed=0, steps=3, context_noise=0.3, shift=3.0),
])
@torch.no_grad()
def test_cached_and_uncached_sampling_give_the_same_codes(settings, rollout):
    # context 3, depth 2: the 5-frame prompt already slides the cache, and the uncached path
    # recomputes only the 5-frame receptive field; then context + 8 = 11 generated frames.
    model = tiny_model()
    tokens, actions = clip(t=5)
    moves = torch.randint(0, A, (11,), generator=torch.Generator().manual_seed(1)).tolist()
    runs, contexts = [], []
    for use_cache in (True, False):
        sampler = DiTSampler(model, DiTSettings(**vars(settings) | {"use_cache": use_cache}))
        sampler.reset(tokens, actions)
        runs.append(rollout(sampler, moves))
        contexts.append(sampler.state().frames)
    assert torch.equal(*runs)
    assert torch.equal(*contexts)  # the same seeded noise on the same committed frames
    assert runs[0].unique().numel() > 4  # a real rollout, not a constant frame


@torch.no_grad()
def test_denoising_steps_run_on_the_scheduler_grid_and_leave_the_cache_alone():
    model = tiny_model()
    calls = []
    next_velocity, commit = model.next_velocity, model.commit

    def spy(x, level, action, cache, *, commit=False):
        calls.append((round(level[0].item(), 3), commit, cache.position))
        return next_velocity(x, level, action, cache, commit=commit)

    def spy_commit(x, level, action, cache):
        calls.append((round(level[0].item(), 3), True, cache.position))
        commit(x, level, action, cache)

    model.next_velocity, model.commit = spy, spy_commit
    sampler = DiTSampler(model, DiTSettings(steps=4, context_noise=0.2))
    sampler.reset(*clip(t=3))
    sampler.next_frame(0)
    # Four uncommitted passes from pure noise down; the frame waits for the next one to start.
    steps = [(1.0, False), (0.667, False), (0.334, False), (0.001, False)]
    assert calls == [(*step, 3) for step in steps]
    assert sampler.position == 4
    sampler.next_frame(1)
    # First the frame before is committed at level 0.2, then the new one is denoised after it.
    assert calls[4:] == [(0.2, True, 3)] + [(*step, 4) for step in steps]


@pytest.mark.parametrize("use_cache", [True, False])
@torch.no_grad()
def test_snapshot_restore_replays_exactly(use_cache, check_snapshot_replays):
    sampler = DiTSampler(tiny_model(), DiTSettings(use_cache=use_cache, steps=3))
    sampler.reset(*clip(t=3))
    check_snapshot_replays(sampler)


def test_encoder_latents_are_what_an_encoder_dit_learns_and_its_context_holds(rollout):
    model = tiny_model(latent="encoder")
    tokens, actions = clip(t=4)
    with pytest.raises(ValueError, match="latents=True"):
        model((tokens, actions))
    units = torch.randn(2, 4, H * W, C, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    loss, _ = model((tokens, actions, units))
    torch.manual_seed(0)
    assert model((tokens, actions, units.flip(-1)))[0] != loss  # the latents, not the codes
    # Sampling: prompt latents in; cached and uncached agree; the context holds the denoised
    # latents on the sphere, not the snapped codes' vectors (as a code DiT's does).
    runs, contexts = [], []
    for use_cache in (True, False):
        sampler = DiTSampler(model, DiTSettings(seed=0, steps=2, context_noise=0.0,
                                                use_cache=use_cache))
        sampler.reset(units, actions)
        runs.append(rollout(sampler, [0, 1, 2, 3, 0, 1]))
        contexts.append(sampler.state().frames)
    assert torch.equal(*runs)
    assert (contexts[0] - contexts[1]).abs().max() < 1e-3  # float round-off apart
    last = contexts[0][:, -1]  # (B, N, C) at context level 0: the clean latents
    assert torch.allclose(last.norm(dim=-1), torch.full(last.shape[:2], math.sqrt(C)), atol=1e-4)
    snapped = model.latents(runs[0][:, -1:])[:, 0]
    assert not torch.allclose(last, snapped)


def test_the_latent_option_is_checked():
    with pytest.raises(ValueError, match="unknown DiT latent"):
        DiTDynamics(**TINY, latent="pixels")
