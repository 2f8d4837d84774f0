"""The latent action model on tiny configs: shapes, round trip, action alignment, learning."""

from __future__ import annotations

import math

import pytest
import torch

from genie.lam.model import LatentActionModel

TINY = dict(height=16, width=24, patch=4, dim=32, encoder_depth=2, decoder_depth=1, heads=2,
            num_actions=4, code_dim=8)


def clip(seed: int = 0, b: int = 2, t: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 16, 24, 3), generator=g, dtype=torch.uint8)


def model(**overrides) -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(**{**TINY, **overrides})


def test_shapes_and_ranges():
    lam = model().eval()
    frames = clip()
    actions = lam.infer_actions(frames)
    assert actions.shape == (2, 5) and actions.dtype == torch.int64
    assert actions.min() >= 0 and actions.max() < 4
    nxt = lam.predict_next(frames[:, :-1], actions)
    assert nxt.shape == (2, 5, 16, 24, 3) and nxt.dtype == torch.uint8
    loss, logs = lam.train()(frames)
    assert loss.ndim == 0 and loss.requires_grad
    assert {"loss", "psnr", "action_usage", "perplexity", "restarted_codes"} <= set(logs)
    shares = [logs[f"action_use/{k}"].item() for k in range(4)]
    assert sum(shares) == pytest.approx(1.0)
    assert logs["action_usage"] == sum(s > 0 for s in shares) / 4


def test_sample_image_shows_every_action():
    lam = model().eval()
    image = lam.sample_images(clip(b=5))
    # Rows: last context frame, real next frame, one per action; columns: at most 4 clips.
    assert image.shape == ((4 + 2) * 16, 4 * 24, 3) and image.dtype == torch.uint8
    assert torch.equal(image[:16, :24], clip(b=5)[0, -2])  # the real frames, untouched


def test_save_load_round_trip(tmp_path):
    lam = model(action_dropout=0.1, entropy_weight=0.05, restart_after=0).eval()
    lam.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam").eval()
    assert loaded.config.entropy_weight == 0.05 and loaded.config.restart_after == 0
    frames = clip()
    actions = lam.infer_actions(frames)
    assert torch.equal(actions, loaded.infer_actions(frames))
    assert torch.equal(lam.predict_next(frames[:, :-1], actions),
                       loaded.predict_next(frames[:, :-1], actions))


def test_action_t_is_read_from_frames_t_and_t_plus_1():
    # Change only frame 4: the transitions before 3 -> 4 must not notice, transition 3 must.
    lam = model().eval()
    a = clip()
    b = a.clone()
    b[:, 4] = 255 - b[:, 4]
    with torch.no_grad():
        fa, fb = lam.action_features(a), lam.action_features(b)  # (B, 5, D)
    assert torch.equal(fa[:, :3], fb[:, :3])
    assert (fa[:, 3] - fb[:, 3]).abs().amax(-1).gt(1e-3).all()
    assert torch.equal(lam.infer_actions(a)[:, :3], lam.infer_actions(b)[:, :3])


def test_a_clip_that_changes_only_from_frame_3_to_4():
    # Frames 0-3 the same picture, frames 4-5 another: the features of transitions 0-2 are
    # those of "nothing changed" (equal), transition 3's are not.
    lam = model().eval()
    frames = clip(b=1)
    frames[:, 1:4] = frames[:, 0:1]
    frames[:, 5] = frames[:, 4]
    with torch.no_grad():
        f = lam.action_features(frames)[0]  # (5, D)
    torch.testing.assert_close(f[1], f[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(f[2], f[0], atol=1e-5, rtol=0)
    assert (f[3] - f[0]).norm() > 100 * (f[2] - f[0]).norm().clamp_min(1e-6)


def test_prediction_of_frame_4_uses_action_3_and_no_later_frame():
    lam = model().eval()
    frames = clip()
    with torch.no_grad():  # a decoder that does not start as a pure copy, to see dependence
        for p in lam.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    past = frames[:, :-1]  # frames 0..4; output i predicts frame i+1
    actions = torch.zeros(2, 5, dtype=torch.int64)
    base = lam.predict_next(past, actions)
    other = actions.clone()
    other[:, 3] = 1
    changed = lam.predict_next(past, other)
    assert not torch.equal(changed[:, 3], base[:, 3])  # frame 4 depends on action 3
    assert torch.equal(changed[:, :3], base[:, :3])  # frames 1-3 do not
    later = actions.clone()
    later[:, 4] = 2
    past_later = past.clone()
    past_later[:, 4] = 0
    assert torch.equal(lam.predict_next(past_later, later)[:, :4], base[:, :4])


def test_one_step_lowers_the_loss():
    lam = model(action_dropout=0.0)  # the same codes before and after the step
    opt = torch.optim.AdamW(lam.parameters(), 3e-3)
    batch = clip()
    before, _ = lam(batch)
    before.backward()
    opt.step()
    after, _ = lam(batch)
    assert after.item() < before.item()


def test_entropy_term_only_when_asked():
    _, logs = model()(clip())
    assert "entropy_loss" not in logs
    _, logs = model(entropy_weight=0.1)(clip())
    assert 0 <= logs["entropy_loss"].item() <= math.log(4)


def test_resolution_must_fit_patches():
    with pytest.raises(ValueError, match="do not split into 4px patches"):
        model(height=18)


def test_window_bounds_what_an_action_depends_on():
    """With window W, transition t -> t+1 depends only on frames t+1-depth*(W-1) .. t+1 (the
    band, stacked over the encoder's layers): a long video gives the same action features as
    short clips cut from it, which is what lets a dataset be coded in chunks."""
    lam = model(window=3).eval()
    frames = clip(t=10)
    seen = TINY["encoder_depth"] * (3 - 1) + 1  # frames up to and including t+1
    with torch.no_grad():
        whole = lam.action_features(frames)  # (2, 9, D)
        for t in range(seen - 1, 9):
            part = lam.action_features(frames[:, t + 2 - seen - 1:t + 2])[:, -1]
            assert torch.allclose(whole[:, t], part, atol=1e-5)
        # Without the band the earliest frames still matter.
        unbanded = model().eval().action_features(frames)
        assert not torch.allclose(whole[:, -1], unbanded[:, -1], atol=1e-3)


def test_training_losses_between_patches_are_the_losses_between_frames():
    torch.manual_seed(0)
    lam = model().eval()  # eval: no dropout or restarts between the passes
    with torch.no_grad():  # a decoder that predicts a change, not the copy it starts as
        for p in [lam.patch_out.weight, lam.patch_out.bias, *lam.decoder.parameters()]:
            p.normal_(0, 0.1)
    frames = clip()
    _, logs = lam(frames)
    unit = frames.float() / 127.5 - 1
    with torch.no_grad():
        pred = lam.decode(frames[:, :-1], lam.quantize(frames)[0])
    mse = torch.nn.functional.mse_loss(pred, unit[:, 1:])
    copy = torch.nn.functional.mse_loss(unit[:, :-1], unit[:, 1:])
    torch.testing.assert_close(logs["mse"], mse, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(logs["copy_psnr"], 10 * torch.log10(4.0 / copy))
