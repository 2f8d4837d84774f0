import pytest
import torch

from genie.nn import KVCache, SpatialPosEmb, STBlock, STTransformer, sincos_2d

B, N, D, HEADS = 2, 6, 32, 4


def frames(t, seed=0, b=B):
    return torch.randn(b, t, N, D, generator=torch.Generator().manual_seed(seed))


def model(depth=2, seed=0, **kw):
    torch.manual_seed(seed)
    return STTransformer(D, depth, HEADS, **kw).eval()


def randomize_modulation(m):
    # adaLN projections start at zero; give them weights so that cond actually matters.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "modulation" in name:
                p.normal_(0, 0.1)


def test_shapes():
    m = model()
    assert m(frames(5)).shape == (B, 5, N, D)
    pos = SpatialPosEmb(2, 3, D, learned=False)
    assert pos(frames(5)).shape == (B, 5, N, D)
    assert sincos_2d(2, 3, D).shape == (N, D)
    with pytest.raises(ValueError, match="2x3"):
        pos(torch.zeros(1, 1, 7, D))


@torch.no_grad()
def test_temporal_attention_is_causal():
    m = model(depth=3)
    x = frames(5)
    y = x.clone()
    y[:, 3] += torch.randn(B, N, D)  # random: a constant shift would vanish in LayerNorm
    out_x, out_y = m(x), m(y)
    torch.testing.assert_close(out_x[:, :3], out_y[:, :3], atol=0, rtol=0)
    assert (out_x[:, 3:] - out_y[:, 3:]).abs().amax(dim=(0, 2, 3)).min() > 1e-3
    # Without causality the past does see the change.
    m_bi = model(depth=3, causal=False)
    assert not torch.allclose(m_bi(x)[:, 0], m_bi(y)[:, 0], atol=1e-3)


@torch.no_grad()
def test_spatial_attention_is_bidirectional_within_a_frame_only():
    block = STBlock(D, HEADS).eval()
    # Silence the temporal sub-layer so only spatial attention and the MLP remain.
    block.temporal.proj.weight.zero_()
    block.temporal.proj.bias.zero_()
    x = frames(3)
    y = x.clone()
    y[:, 1, N - 1] += torch.randn(B, D)  # last token of the middle frame
    out_x, out_y = block(x), block(y)
    torch.testing.assert_close(out_x[:, [0, 2]], out_y[:, [0, 2]], atol=0, rtol=0)
    # Every token of the frame, including those before the changed one, sees the change.
    assert (out_x[:, 1] - out_y[:, 1]).abs().amax(dim=(0, 2)).min() > 1e-4


@torch.no_grad()
def test_rope_makes_temporal_positions_relative():
    m = model(depth=2)
    x = frames(4)
    torch.testing.assert_close(m(x, start=0), m(x, start=1000), atol=1e-4, rtol=1e-4)
    # Without positions, bidirectional temporal attention could not tell frame order apart.
    m_bi = model(depth=2, causal=False)
    reversed_out = m_bi(x.flip(1)).flip(1)
    assert not torch.allclose(reversed_out, m_bi(x), atol=1e-3)


@torch.no_grad()
def test_adaln_block_is_identity_at_init_and_then_uses_cond():
    block = STBlock(D, HEADS, adaln=True, cond_dim=8).eval()
    x, cond = frames(3), torch.randn(B, 3, 8)
    torch.testing.assert_close(block(x, cond=cond), x, atol=0, rtol=0)
    randomize_modulation(block)
    assert not torch.allclose(block(x, cond=cond), block(x, cond=cond + 1), atol=1e-3)
    with pytest.raises(ValueError, match="cond"):
        block(x)
    with pytest.raises(ValueError, match="adaln"):
        STBlock(D, HEADS)(x, cond=cond)


@pytest.mark.parametrize("depth", [1, 2])
@torch.no_grad()
def test_cached_decoding_matches_banded_full_forward(depth):
    # Cached frame t sees the keys of frames t-W+1..t, each computed when that frame was new;
    # the uncached equivalent is the whole history under a banded causal mask of width W.
    w, t_total = 3, 2 * 3 + 3
    m = model(depth=depth, adaln=True, cond_dim=8)
    randomize_modulation(m)
    x, cond = frames(t_total), torch.randn(B, t_total, 8)
    banded = m(x, cond=cond, window=w)
    cache = m.new_cache(window=w)
    for t in range(t_total):
        out = m(x[:, t : t + 1], cond=cond[:, t : t + 1], cache=cache)
        torch.testing.assert_close(out[:, 0], banded[:, t], atol=1e-5, rtol=1e-5)
        assert len(cache) == min(t + 1, w - 1) and cache.position == t + 1
        first = max(0, t - w + 1)
        window_only = m(x[:, first : t + 1], cond=cond[:, first : t + 1], start=first)[:, -1]
        if depth == 1 or t < w:
            # One layer sees nothing beyond the window, so the last W frames alone suffice.
            torch.testing.assert_close(window_only, banded[:, t], atol=1e-5, rtol=1e-5)
        else:
            # Deeper layers carry information from frames that have left the window.
            assert not torch.allclose(window_only, banded[:, t], atol=1e-4)


@torch.no_grad()
def test_cache_takes_several_frames_at_once():
    w = 3
    m = model(depth=2)
    x = frames(9)
    banded = m(x, window=w)
    cache = m.new_cache(window=w)
    prompt = m(x[:, :5], cache=cache)  # a prompt longer than the window, in one call
    torch.testing.assert_close(prompt, banded[:, :5], atol=1e-5, rtol=1e-5)
    assert len(cache) == w - 1 and cache.position == 5
    pair = m(x[:, 5:7], cache=cache)  # two frames, the band crossing the cache boundary
    torch.testing.assert_close(pair, banded[:, 5:7], atol=1e-5, rtol=1e-5)
    for t in range(7, 9):
        out = m(x[:, t : t + 1], cache=cache)
        torch.testing.assert_close(out[:, 0], banded[:, t], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_uncommitted_steps_leave_the_cache_alone():
    w = 3
    m = model(depth=2)
    x = frames(6)
    banded = m(x, window=w)
    cache = m.new_cache(window=w)
    m(x[:, :4], cache=cache)
    keys_before = list(cache.keys)
    for seed in (1, 2):  # refine a different guess of frame 4 several times
        m(frames(1, seed=seed), cache=cache, commit=False)
    assert cache.position == 4 and all(a is b for a, b in zip(cache.keys, keys_before, strict=True))
    draft = m(x[:, 4:5], cache=cache, commit=False)
    final = m(x[:, 4:5], cache=cache)
    torch.testing.assert_close(draft, final, atol=0, rtol=0)
    torch.testing.assert_close(final[:, 0], banded[:, 4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(x[:, 5:6], cache=cache)[:, 0], banded[:, 5], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_keep_commits_the_first_frames_and_computes_the_rest_after_them():
    # A sampler commits a finished frame in the same pass as its first step on the next one.
    w = 3
    m = model(depth=2, adaln=True, cond_dim=D)
    randomize_modulation(m)
    x, cond = frames(6), torch.randn(B, 6, D)
    banded = m(x, window=w, cond=cond)
    merged, alone = m.new_cache(window=w), m.new_cache(window=w)
    m(x[:, :4], cond=cond[:, :4], cache=merged)
    m(x[:, :4], cond=cond[:, :4], cache=alone)
    out = m(x[:, 4:6], cond=cond[:, 4:6], cache=merged, keep=1)
    torch.testing.assert_close(out, banded[:, 4:6], atol=1e-5, rtol=1e-5)
    m(x[:, 4:5], cond=cond[:, 4:5], cache=alone)
    assert merged.frames_seen == alone.frames_seen == [5, 5]
    for a, b in zip(merged.keys + merged.values, alone.keys + alone.values, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_commit_without_output_fills_the_cache_as_a_full_pass_does():
    m = model(depth=3, adaln=True, cond_dim=D)
    randomize_modulation(m)
    x, cond = frames(5), torch.randn(B, 5, D)
    full, kv_only = m.new_cache(window=3), m.new_cache(window=3)
    m(x[:, :3], cond=cond[:, :3], cache=full)
    assert m(x[:, :3], cond=cond[:, :3], cache=kv_only, output=False) is None
    for t in (3, 4):  # one frame at a time, as a sampler commits
        m(x[:, t:t + 1], cond=cond[:, t:t + 1], cache=full)
        m(x[:, t:t + 1], cond=cond[:, t:t + 1], cache=kv_only, output=False)
    assert kv_only.frames_seen == full.frames_seen == [5, 5, 5]
    for a, b in zip(full.keys + full.values, kv_only.keys + kv_only.values, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="kv_only"):
        m.blocks[0](x, cond=cond, kv_only=True)


@torch.no_grad()
def test_cache_clone_restores_an_independent_snapshot():
    m = model(depth=2)
    x = frames(5)
    cache = m.new_cache(window=3)
    m(x[:, :3], cache=cache)
    snapshot = cache.clone()
    after_a = m(x[:, 3:4], cache=cache)
    after_b = m(x[:, 4:5], cache=cache)
    assert snapshot.position == 3 and cache.position == 5
    # Undo: restore the snapshot (cloned again, so it can be restored twice) and replay.
    restored = snapshot.clone()
    torch.testing.assert_close(m(x[:, 3:4], cache=restored), after_a, atol=0, rtol=0)
    assert snapshot.position == 3 and restored.position == 4
    # A different action from the same snapshot does not disturb the first branch.
    branch = snapshot.clone()
    m(frames(1, seed=9), cache=branch)
    torch.testing.assert_close(m(x[:, 4:5], cache=restored), after_b, atol=0, rtol=0)


@torch.no_grad()
def test_repeated_cache_serves_a_batch_of_branches():
    # Previews step several actions from one state: a (1-row) cache repeated to 3 rows must
    # give each row what the single row would.
    m = model(depth=2)
    x = frames(3, b=1)
    cache = m.new_cache(window=3)
    m(x[:, :2], cache=cache)
    branches = frames(1, seed=5, b=3)
    wide = m(branches, cache=cache.repeat(3))
    for i in range(3):
        one = m(branches[i : i + 1], cache=cache.clone())
        torch.testing.assert_close(wide[i : i + 1], one, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_crop_slides_the_window():
    m = model(depth=1)
    x = frames(6)
    cache = m.new_cache()  # no window: keeps all five frames
    m(x[:, :5], cache=cache)
    assert len(cache) == 5
    cache.crop(2)
    assert len(cache) == 2 and cache.position == 5
    reference = m(x[:, 3:6], start=3)[:, -1]
    torch.testing.assert_close(m(x[:, 5:6], cache=cache)[:, 0], reference, atol=1e-5, rtol=1e-5)


def test_cache_misuse_raises_clear_errors():
    m = model(depth=2)
    x = frames(1)
    with pytest.raises(ValueError, match="layers"):
        m(x, cache=KVCache(3))
    with pytest.raises(ValueError, match="start"):
        m(x, cache=m.new_cache(), start=4)
    with pytest.raises(ValueError, match="window"):
        m(x, cache=m.new_cache(window=3), window=4)
    with pytest.raises(ValueError, match="causal"):
        model(causal=False)(x, cache=m.new_cache())
    cache = m.new_cache()
    m(x, cache=cache)
    with pytest.raises(ValueError, match="batch"):
        m(frames(1, b=3), cache=cache)
    m.set_backend("xformers")
    with pytest.raises(RuntimeError, match="sdpa"):
        m(x)


def test_bf16_autocast_matches_fp32_loosely():
    m = model(depth=2)
    x = frames(4)
    with torch.no_grad():
        ref = m(x, window=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full = m(x, window=2)
            cache = m.new_cache(window=2)
            steps = torch.cat([m(x[:, t : t + 1], cache=cache) for t in range(4)], dim=1)
    assert cache.keys[0].dtype == torch.bfloat16
    torch.testing.assert_close(full.float(), ref, atol=0.1, rtol=0.1)
    torch.testing.assert_close(steps.float(), ref, atol=0.1, rtol=0.1)


def test_a_few_steps_fit_a_batch():
    m = model(depth=1).train()
    x, target = frames(2), frames(2, seed=1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = (m(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_swiglu_reads_value_then_gate_from_one_weight():
    # Saved worlds hold `up` as one (2*hidden, D) weight, value rows first: the MLP must
    # compute what it computed when it split one product in two.
    from genie.nn.st_block import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(D).double()
    x = torch.randn(3, 5, D, dtype=torch.float64, requires_grad=True)
    value, gate = mlp.up(x).chunk(2, dim=-1)
    want = mlp.down(value * torch.nn.functional.silu(gate))
    torch.testing.assert_close(mlp(x), want)
    got_grad, = torch.autograd.grad(mlp(x).square().sum(), x)
    want_grad, = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(got_grad, want_grad)
