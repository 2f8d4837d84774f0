"""The MaskGIT dynamics model and its sampler on tiny configs.

Dimensions: B batch, T frames, h×w = 4×4 grid, N = 16 tokens per frame, K = 16 codes.
"""

from __future__ import annotations

import math

import pytest
import torch

from genie.dynamics import model_class, sampler_for
from genie.dynamics.maskgit import MaskGITDynamics, MaskGITSampler, SamplerSettings
from genie.dynamics.maskgit.sampler import cosine_masked, filter_logits
from genie.errors import GenieError

K, H, W, A = 16, 4, 4, 4
TINY = dict(vocab_size=K, grid_h=H, grid_w=W, num_actions=A, dim=32, depth=2, heads=2, context=3)


def tiny_model(seed: int = 0, **overrides) -> MaskGITDynamics:
    """A tiny model whose adaLN projections are random, so blocks and actions already matter.

    (adaLN-Zero starts every block as the identity: at init the logits would ignore the past
    and the actions, and every test below would pass for the wrong reason.)
    """
    torch.manual_seed(seed)
    model = MaskGITDynamics(**TINY | overrides).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.normal_(0, 0.2)
    return model


def clip(seed: int = 0, b: int = 2, t: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (b, t, H, W), generator=g), torch.randint(0, A, (b, t - 1),
                                                                         generator=g)


def test_shapes_and_logs():
    model = tiny_model()
    tokens, actions = clip(t=4)
    loss, logs = model((tokens, actions))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert set(logs) == {"loss", "accuracy", "mask_rate"} and 0.5 <= logs["mask_rate"] <= 1
    assert model.logits(tokens, actions).shape == (2, 4, H * W, K)
    cache = model.new_cache()
    model.prefill(tokens, actions, cache)
    frame = torch.full((2, H * W), model.mask_id)
    assert model.next_logits(frame, torch.tensor([0, 3]), cache).shape == (2, H * W, K)
    sampler = MaskGITSampler(model)
    sampler.reset(tokens, actions)
    codes = sampler.next_frame(1)
    assert codes.shape == (2, H, W) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < K and sampler.position == 5


def test_misuse_raises_clear_errors():
    model = tiny_model()
    tokens, actions = clip(t=4)
    with pytest.raises(ValueError, match="3 actions"):
        model((tokens, actions[:, :1]))
    with pytest.raises(ValueError, match="4x4 grid"):
        model.logits(tokens[..., :2], actions)
    cache = model.new_cache()
    model.prefill(tokens, actions, cache)
    with pytest.raises(ValueError, match="empty cache"):
        model.prefill(tokens, actions, cache)
    sampler = MaskGITSampler(model)
    with pytest.raises(RuntimeError, match="reset"):
        sampler.next_frame(0)
    with pytest.raises(ValueError, match="needs its actions"):
        sampler.reset(tokens)
    with pytest.raises(ValueError, match="context"):
        MaskGITDynamics(**TINY | {"context": 1})


def test_backend_registry_builds_the_sampler_from_world_settings():
    assert model_class("maskgit") is MaskGITDynamics
    sampler = sampler_for("maskgit", tiny_model(), {"steps": 4, "temperature": 0.5})
    assert sampler.settings.steps == 4 and sampler.settings.temperature == 0.5
    with pytest.raises(GenieError, match="maskgit"):
        model_class("gan")
    with pytest.raises(GenieError, match="stepz"):
        sampler_for("maskgit", tiny_model(), {"stepz": 4})
    with pytest.raises(GenieError, match="temperature"):
        SamplerSettings(temperature=-1.0)
    with pytest.raises(GenieError, match="confidence_noise"):
        SamplerSettings(confidence_noise=-0.5)


def test_save_load_round_trip(tmp_path, rollout):
    model = tiny_model()
    model.save_pretrained(tmp_path / "dyn")
    loaded = MaskGITDynamics.from_pretrained(tmp_path / "dyn").eval()
    assert loaded.config.context == 3 and loaded.config.num_actions == A
    tokens, actions = clip()
    assert torch.equal(model.logits(tokens, actions), loaded.logits(tokens, actions))
    frames = []
    for m in (model, loaded):
        sampler = MaskGITSampler(m, SamplerSettings(seed=5))
        sampler.reset(tokens, actions)
        frames.append(rollout(sampler, [0, 1, 2]))
    assert torch.equal(*frames)


def test_init_from_carries_weights_across_a_change_of_regulariser(tmp_path):
    from genie.train.stages import init_from

    tiny_model().save_pretrained(tmp_path / "dyn")
    tuned = tiny_model(seed=1, context_noise=0.1)  # fine-tuning with context noise is allowed
    init_from(tuned, tmp_path / "dyn", "dynamics")
    tokens, actions = clip()
    assert torch.equal(tuned.eval().logits(tokens, actions), tiny_model().logits(tokens, actions))
    with pytest.raises(GenieError, match="dim 32 vs 48"):  # an architecture change is not
        init_from(tiny_model(dim=48), tmp_path / "dyn", "dynamics")


def test_seeded_training_step_and_sampling_are_deterministic(rollout):
    def one_step() -> tuple[torch.Tensor, float]:
        torch.manual_seed(3)
        model = MaskGITDynamics(**TINY)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        loss, _ = model(clip())
        loss.backward()
        opt.step()
        return model.head.weight.detach().clone(), loss.item()

    (w1, l1), (w2, l2) = one_step(), one_step()
    assert l1 == l2 and torch.equal(w1, w2)

    def sample(seed: int) -> torch.Tensor:
        sampler = MaskGITSampler(tiny_model(), SamplerSettings(seed=seed))
        sampler.reset(*clip())
        return rollout(sampler, [0, 1, 2, 3])

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    batch = clip(b=4)

    def loss_with_fixed_masks() -> torch.Tensor:
        torch.manual_seed(11)  # the same masks before and after the step
        return model(batch)[0]

    before = loss_with_fixed_masks()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_with_fixed_masks() < before.detach()


@torch.no_grad()
def test_action_t_conditions_frame_t_plus_1_and_later():
    model = tiny_model()
    tokens, actions = clip(t=6)
    changed = actions.clone()
    changed[:, 2] = (changed[:, 2] + 1) % A  # the transition from frame 2 to frame 3
    a, b = model.logits(tokens, actions), model.logits(tokens, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=0, rtol=0)
    assert (a[:, 3:] - b[:, 3:]).abs().amax(dim=(0, 2, 3)).min() > 1e-3
    # The cached path aligns the same way: the action passed with a frame leads into it.
    cache = model.new_cache()
    model.prefill(tokens[:, :3], actions[:, :2], cache)
    incremental = model.next_logits(tokens[:, 3].flatten(1), actions[:, 2], cache)
    torch.testing.assert_close(incremental, a[:, 3], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_context_noise_applies_in_training_only():
    clean, noisy = tiny_model(), tiny_model(context_noise=0.5)
    batch = clip(b=4)

    def loss(model: MaskGITDynamics) -> float:
        torch.manual_seed(2)
        return model(batch)[0].item()

    assert loss(clean) == loss(noisy)  # eval mode: validation loss sees the true context
    clean.train(), noisy.train()
    assert loss(clean) != loss(noisy)


@torch.no_grad()
def test_receptive_field_is_exact_and_tight():
    model = tiny_model()  # depth 2, context 3: frame t depends on frames t-4..t
    tokens, actions = clip(t=9)
    full = model.logits(tokens, actions)[:, -1]
    field = model.receptive_field
    assert field == 5
    start = 9 - field
    cut = model.logits(tokens[:, start:], actions[:, start - 1 :], start=start)[:, -1]
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    shorter = model.logits(tokens[:, start + 1 :], actions[:, start:], start=start + 1)[:, -1]
    assert not torch.allclose(shorter, full, atol=1e-4)


def test_filter_logits_keeps_top_k_and_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)
    assert torch.isfinite(filter_logits(logits, 2, None)).tolist() == [[True, True, False, False]]
    # Probabilities 0.64, 0.24, 0.09, 0.03: the first two hold 0.88 >= 0.8.
    kept = torch.isfinite(filter_logits(logits, None, 0.8))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.5)).sum() == 1


@torch.no_grad()
def test_iterations_reveal_tokens_on_the_cosine_schedule():
    model = tiny_model()
    masked_in = []
    next_logits = model.next_logits

    def spy(frame, action, cache, *, rows=None, pending=None):
        masked_in.append(int((frame == model.mask_id).sum(-1)[0]))
        # Logits are asked for exactly the masked tokens, in ascending order.
        assert torch.equal(rows, (frame == model.mask_id).nonzero()[:, 1].view(len(frame), -1))
        return next_logits(frame, action, cache, rows=rows, pending=pending)

    model.next_logits = spy
    sampler = MaskGITSampler(model, SamplerSettings(steps=4))
    sampler.reset(*clip())
    codes = sampler.next_frame(0)
    n = H * W
    assert masked_in == [n] + [cosine_masked(s, 4, n) for s in range(3)]
    assert masked_in == [16, 14, 11, 6]
    assert (codes < K).all()  # the last iteration fills every token


@pytest.mark.parametrize("settings", [
    SamplerSettings(seed=0),  # the default: temperature 1, annealed confidence noise
    SamplerSettings(seed=0, temperature=0.0, confidence_noise=0.0),  # greedy: ties would show
    SamplerSettings(seed=0, temperature=0.7, top_k=5, top_p=0.9, steps=3),
])
@torch.no_grad()
def test_cached_and_uncached_sampling_give_the_same_tokens(settings, rollout):
    # context 3, depth 2: the 5-frame prompt already slides the cache, and the uncached path
    # recomputes only the 5-frame receptive field; then context + 8 = 11 generated frames.
    model = tiny_model()
    tokens, actions = clip(t=5)
    moves = torch.randint(0, A, (11,), generator=torch.Generator().manual_seed(1)).tolist()
    runs = []
    for use_cache in (True, False):
        chosen = SamplerSettings(**vars(settings) | {"use_cache": use_cache})
        sampler = MaskGITSampler(model, chosen)
        sampler.reset(tokens, actions)
        runs.append(rollout(sampler, moves))
    assert torch.equal(*runs)
    assert runs[0].unique().numel() > 4  # a real rollout, not a constant frame


@pytest.mark.parametrize("use_cache", [True, False])
@torch.no_grad()
def test_snapshot_restore_replays_exactly(use_cache, check_snapshot_replays):
    sampler = MaskGITSampler(tiny_model(), SamplerSettings(use_cache=use_cache))
    sampler.reset(*clip(t=3))
    check_snapshot_replays(sampler)


def test_learns_the_token_world(token_world):
    """After a few hundred steps, the sampled next frame follows the action.

    Two-frame clips keep it fast; the prompt is then one frame, as in training. (A model trained
    on two-frame clips has never seen a context frame that an action led into, so it cannot
    roll out further: longer rollouts need context >= 3, which takes about twice the steps.)
    """
    torch.manual_seed(0)
    model = MaskGITDynamics(**TINY | {"context": 2})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    tokens, actions = token_world.rollout(2048, 2, seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(800):
        idx = torch.randint(0, len(tokens), (32,), generator=g)
        loss, _ = model((tokens[idx], actions[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    prompt, _ = token_world.rollout(64, 1, seed=99)  # first frames of unseen episodes
    sampler = MaskGITSampler(model)
    sampler.reset(prompt)
    start = sampler.state()
    predicted, truth = [], []
    for action in range(A):
        sampler.load_state(start)
        predicted.append(sampler.next_frame(action))
        truth.append(token_world.step(prompt[:, -1], torch.full((64,), action)))
    predicted, truth = torch.stack(predicted), torch.stack(truth)  # (A, B, h, w)
    exact = (predicted == truth).flatten(2).all(-1)  # (A, B)
    assert exact.float().mean() >= 0.9
    # Copying the last frame is right only where a wall blocks the move: far below the bar.
    copy = (prompt[:, -1] == truth).flatten(2).all(-1)
    assert copy.float().mean() < 0.5
    # Different actions lead to different frames wherever the true frames differ.
    for a in range(A):
        for b in range(a + 1, A):
            differs = (truth[a] != truth[b]).flatten(1).any(-1)
            pred_differs = (predicted[a] != predicted[b]).flatten(1).any(-1)
            assert pred_differs[differs].float().mean() >= 0.9
