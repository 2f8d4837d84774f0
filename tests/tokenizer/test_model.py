"""The video tokenizer on tiny configs: shapes, round trips, determinism, learning."""

from __future__ import annotations

import pytest
import torch

from genie.eval.metrics import psnr
from genie.tokenizer.model import VideoTokenizer

TINY = dict(height=16, width=24, patch=4, dim=32, encoder_depth=1, decoder_depth=1, heads=2,
            code_dim=8, codebook_size=32)


def clip(seed: int = 0, b: int = 2, t: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 16, 24, 3), generator=g, dtype=torch.uint8)


def smooth_clip() -> torch.Tensor:
    """A learnable clip: a bright square moving over a gradient, (1, 4, 16, 24, 3)."""
    y, x = torch.meshgrid(torch.arange(16), torch.arange(24), indexing="ij")
    frames = []
    for t in range(4):
        f = torch.stack([x * 10, y * 12, torch.full_like(x, 90)], -1)
        f[4:9, 3 + 3 * t : 8 + 3 * t] = torch.tensor([250, 240, 20])
        frames.append(f)
    return torch.stack(frames)[None].to(torch.uint8)


def test_shapes_and_code_range():
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY).eval()
    codes = model.encode(clip())
    assert codes.shape == (2, 3, 4, 6) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < 32
    frames = model.decode(codes)
    assert frames.shape == (2, 3, 16, 24, 3) and frames.dtype == torch.uint8


def test_encoding_is_causal_in_time():
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY).eval()
    a = clip()
    b = a.clone()
    b[:, -1] = 255 - b[:, -1]  # change only the last frame
    assert torch.equal(model.encode(a)[:, :-1], model.encode(b)[:, :-1])


def test_window_bounds_the_temporal_context():
    # One layer each way and a 2-frame window: the last frame depends on itself and the frame
    # before only, so a long video codes its late frames as a short clip would.
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY, window=2).eval()
    video = clip(t=6)
    assert torch.equal(model.encode(video)[:, -1], model.encode(video[:, 3:])[:, -1])
    codes = model.encode(video)
    assert torch.equal(model.decode(codes)[:, -1], model.decode(codes[:, 3:])[:, -1])
    unbounded = VideoTokenizer(**TINY).eval()
    unbounded.load_state_dict(model.state_dict())
    assert not torch.equal(unbounded.decode(codes)[:, -1], unbounded.decode(codes[:, 3:])[:, -1])


@pytest.mark.parametrize("window", [None, 2])
def test_decoding_frame_by_frame_matches_the_whole_clip(window):
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY, window=window).eval()
    codes = model.encode(clip(t=5))
    cache = model.new_decoder_cache()
    frames = torch.stack([model.decode_next(codes[:, t], cache) for t in range(5)], dim=1)
    whole = model.decode(codes)
    assert (frames.int() - whole.int()).abs().max() <= 1  # float reorderings may round apart


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY).eval()
    model.save_pretrained(tmp_path / "tok")
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok").eval()
    assert loaded.config.codebook_size == 32
    codes = model.encode(clip())
    assert torch.equal(codes, loaded.encode(clip()))
    assert torch.equal(model.decode(codes), loaded.decode(codes))


def test_seeded_construction_and_step_are_deterministic():
    def one_step() -> tuple[torch.Tensor, float]:
        torch.manual_seed(3)
        model = VideoTokenizer(**TINY)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        loss, _ = model(clip())
        loss.backward()
        opt.step()
        return model.patch_out.weight.detach().clone(), loss.item()

    (w1, l1), (w2, l2) = one_step(), one_step()
    assert l1 == l2 and torch.equal(w1, w2)


def test_one_step_lowers_the_loss():
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    batch = clip()
    before, _ = model(batch)
    before.backward()
    opt.step()
    after, _ = model(batch)
    assert after.item() < before.item()


@pytest.mark.parametrize("seed", [0])
def test_overfits_one_clip(seed):
    torch.manual_seed(seed)
    model = VideoTokenizer(**{**TINY, "codebook_size": 64, "dim": 48})
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    batch = smooth_clip()
    for _ in range(300):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    score = psnr(batch, model.decode(model.encode(batch))).mean().item()
    assert score >= 25, f"PSNR {score:.1f} dB after 300 steps on one clip"


def test_resolution_must_fit_patches():
    with pytest.raises(ValueError, match="do not split into 4px patches"):
        VideoTokenizer(**{**TINY, "height": 18})


def test_training_loss_between_patches_is_the_loss_between_frames():
    torch.manual_seed(0)
    model = VideoTokenizer(**TINY).eval()  # eval: no dead-code restarts between the two passes
    frames = clip()
    _, logs = model(frames)
    with torch.no_grad():
        recon = model.decode_embeddings(model.quantize(frames)[0])
    expected = torch.nn.functional.mse_loss(recon, frames.float() / 127.5 - 1)
    torch.testing.assert_close(logs["mse"], expected, rtol=1e-5, atol=1e-7)
