"""What `genie eval world` leaves behind, and `genie eval compare` reading it back.

OUT/metrics.json   every number (see genie/eval/world.py for what they mean)
OUT/report.md      the summary tables, linking the plots and videos
OUT/horizons.png   PSNR and SSIM against horizon: inferred, random, copy, ceiling
OUT/drift.png      drift statistics per step against the real range
OUT/actions.png    latent against true actions (when the dataset has true actions)
OUT/clips/*.mp4    real | inferred | random side by side; drift_00.mp4 a long rollout
"""

from __future__ import annotations

import json
from pathlib import Path

from genie.errors import GenieError

WAYS = ("inferred", "random", "copy", "ceiling")


def write_report(evaluation, out: str | Path, fps: float = 15, scale: int = 4) -> Path:
    """Write every output of an `Evaluation` into `out` (created); returns report.md."""
    from genie.data.files import write_json_atomic
    from genie.eval import plots
    from genie.generate import save_clip

    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    m = evaluation.metrics
    write_json_atomic(out / "metrics.json", m)
    plots.plot_horizons(m, out / "horizons.png")
    if m["drift"].get("curves"):
        plots.plot_drift(m["drift"], out / "drift.png")
    if m["actions"].get("contingency"):
        plots.plot_confusion(m["actions"], out / "actions.png")
    for name, frames in evaluation.videos.items():
        save_clip(frames, out / "clips" / f"{name}.mp4", fps=fps, scale=scale)
    report = out / "report.md"
    tmp = report.with_name("report.md.tmp")
    tmp.write_text(format_report(m, sorted(p.name for p in (out / "clips").glob("*.mp4")),
                                 [p.name for p in sorted(out.glob("*.png"))]))
    tmp.replace(report)
    return report


def picked_horizons(horizons: list[int]) -> list[int]:
    """The horizons a table shows: 1, 2, 4, 8, ... and the last."""
    last = horizons[-1]
    picked = [h for h in (1, 2, 4, 8, 16, 32, 64, 128, 256) if h <= last]
    return picked + ([last] if last not in picked else [])


def _num(value, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _gap(m: dict, key: str, i: int) -> str:
    """A paired gap at horizon index i with its standard error; "—" in older metrics.json."""
    if key not in m:
        return "—"
    sem = m[f"{key}_sem"][i]
    return _num(m[key][i], signed=True) + (f" ± {sem:.2f}" if sem else "")


def format_report(m: dict, videos: list[str] = (), pngs: list[str] = ()) -> str:
    """report.md: settings, the prediction table, drift, actions, links to plots and videos."""
    s = m["settings"]
    sampler = s.get("sampler", {})
    lines = [
        "# World evaluation", "",
        f"- world: `{s.get('world', '?')}`",
        f"- data: `{s.get('data', '?')}`, split {s['split']}: {m['clips']} clips "
        f"from {len(s['clip_sources'])} episode(s)",
        f"- prompt {s['context']} real frames, then {s['horizon']} generated; seed {s['seed']}",
        "- sampler: " + (", ".join(f"{k} {v}" for k, v in sampler.items()) or "—")
        + (f"; precision {s['precision']}" if "precision" in s else ""),
        "",
        "## Prediction against the real continuation",
        "",
        "PSNR in dB (SSIM in brackets), mean over clips. *inferred*: latent actions the LAM "
        "reads off the real continuation; *random*: uniformly random latent actions, same "
        "sampling seed; *copy*: the last prompt frame repeated; *ceiling*: the tokenizer's own "
        "reconstruction of the real frame. ΔtPSNR = inferred − random; vs copy = inferred − copy "
        "(each ± its standard error over clips).",
        "",
        "| horizon | inferred | random | copy | ceiling | ΔtPSNR | vs copy |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in picked_horizons(m["horizons"]):
        i = h - 1
        cells = [f"{_num(m['psnr'][w][i])} ({_num(m['ssim'][w][i], 3)})" for w in WAYS]
        gaps = [_gap(m, "delta_psnr", i), _gap(m, "copy_margin", i)]
        lines.append(f"| {h} | " + " | ".join(cells + gaps) + " |")
    lines += ["", "## Drift", ""]
    d = m["drift"]
    if d.get("curves"):
        lines += [
            f"{d['rollouts']} rollouts of {d['steps']} frames, {d['actions']}. Real range: "
            f"percentiles {d['range_percentiles'][0]:g}-{d['range_percentiles'][1]:g} over "
            "real frames of the split; a statistic leaves at the first step whose mean over "
            "the rollouts is outside it, and is in range for the share of steps where that "
            "mean is inside.", "",
            "| statistic | real range | real median | step 1 | last step | leaves at step "
            "| steps in range |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, curve in d["curves"].items():
            r = d["real"].get(name)
            span = f"{r['low']:.3g} – {r['high']:.3g}" if r else "—"
            left = d["leaves_at"].get(name)
            lines.append(f"| {name.replace('_', ' ')} | {span} | "
                         f"{_num(r['median'], 3) if r else '—'} | {curve[0]:.3g} | "
                         f"{curve[-1]:.3g} | {left if left else 'never'} | "
                         f"{_share(d, name)} |")
        if d.get("note"):
            lines += ["", d["note"]]
    else:
        lines.append(f"Skipped: {d.get('skipped', 'no rollouts')}.")
    if m.get("previews"):
        v = m["previews"]
        lines += ["", "## Per-action previews", "",
                  f"The next frame under each latent action from {v['prompts']} prompts, same "
                  "state and seed. PSNR between the two frames of each pair (60 = identical): "
                  f"worst pair {v['worst_pair_psnr']:.2f} dB, mean {v['mean_pair_psnr']:.2f} dB; "
                  f"{v['distinguishable_pairs']} of {v['pairs']} pairs differ by more than the "
                  f"tokenizer's error plus {v['margin_db']:g} dB (at most "
                  f"{v['threshold_db']:.2f} dB)."]
    lines += ["", "## Actions", ""]
    a = m["actions"]
    if a.get("has_true_actions"):
        lines.append(f"On {a['transitions']} distinct real transitions: NMI {a['nmi']:.3f}, "
                     f"many-to-one accuracy {a['many_to_one_accuracy']:.3f} (always the most "
                     f"common true action: {a['majority_accuracy']:.3f}).")
    else:
        lines.append(a.get("note", "No true actions."))
    shifts = ", ".join(f"{i}: {_num(v, 2, signed=True)}"
                       for i, v in enumerate(a["real_shift_by_latent"]))
    lines += ["", f"Mean horizontal shift of the real picture (px, + = right) under each latent "
              f"action: {shifts}.", ""]
    k = a["key_check"]
    if "skipped" in k:
        lines.append(f"Key check skipped: {k['skipped']}.")
    else:
        lines += ["| key | latent action | real shift (px) | generated shift (px) | same sign |",
                  "|---|---:|---:|---:|---|"]
        for key, r in k.items():
            agree = "—" if r["agrees"] is None else "yes" if r["agrees"] else "no"
            lines.append(f"| {key} | {r['latent_action']} | "
                         f"{_num(r['real_shift_px'], signed=True)} | "
                         f"{_num(r['generated_shift_px'], signed=True)} | {agree} |")
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs]
    if videos:
        lines += ["", "## Videos", "", "Clips: real | inferred | random; the prompt frames are "
                  "the same in all three.", ""] + [f"- [clips/{v}](clips/{v})" for v in videos]
    lines += ["", f"Measured in {m['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def load_metrics(path: str | Path) -> dict:
    """metrics.json of an evaluation folder (or a world folder holding eval/), or the file."""
    path = Path(path)
    for candidate in (path, path / "metrics.json", path / "eval" / "metrics.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as e:
                raise GenieError(f"{candidate} is damaged ({e}): run genie eval world "
                                 "again") from e
    raise GenieError(f"{path} holds no metrics.json: give folders written by genie eval world")


def compare_table(paths: list[str | Path]) -> str:
    """Several evaluations side by side: one column each, one row per number."""
    evals = [load_metrics(p) for p in paths]
    horizons = sorted({h for m in evals for h in picked_horizons(m["horizons"])
                       if h in (1, 4, m["horizons"][-1])})

    def at(m: dict, key: str, way: str | None, h: int):
        values = m[key] if way is None else m[key][way]
        return values[h - 1] if h <= len(values) else None

    rows: list[tuple[str, list[str]]] = []
    for way in WAYS:
        for h in horizons:
            rows.append((f"PSNR {way} h={h}", [_num(at(m, "psnr", way, h)) for m in evals]))
    rows.append(("ΔtPSNR(4)", [_num(at(m, "delta_psnr", None, 4), signed=True) for m in evals]))
    for stat in ("sharpness", "colour_distance", "token_entropy"):
        rows.append((f"drift {stat.replace('_', ' ')} leaves at",
                     [_drift_step(m, stat) for m in evals]))
        rows.append((f"drift {stat.replace('_', ' ')} in range",
                     [_share(m.get("drift", {}), stat) for m in evals]))
    rows.append(("previews: worst pair PSNR",
                 [_num(m.get("previews", {}).get("worst_pair_psnr")) for m in evals]))
    rows.append(("NMI", [_num(m["actions"].get("nmi"), 3) for m in evals]))
    rows.append(("many-to-one accuracy",
                 [_num(m["actions"].get("many_to_one_accuracy"), 3) for m in evals]))
    rows.append(("clips", [str(m["clips"]) for m in evals]))
    names = [_name(p) for p in paths]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(n), *(len(r[1][j]) for r in rows)) for j, n in enumerate(names)]
    out = ["".ljust(width) + "  " + "  ".join(n.rjust(c) for n, c in zip(names, cols,
                                                                          strict=True))]
    for label, cells in rows:
        out.append(label.ljust(width) + "  " + "  ".join(
            v.rjust(c) for v, c in zip(cells, cols, strict=True)))
    return "\n".join(out)


def _drift_step(m: dict, stat: str) -> str:
    d = m.get("drift", {})
    if not d.get("curves") or stat not in d.get("leaves_at", {}):
        return "—"
    step = d["leaves_at"][stat]
    return str(step) if step else f">{d['steps']}"


def _share(drift: dict, stat: str) -> str:
    """The share of drift steps in the real range, as a percentage ('—' in files made before
    genie measured it)."""
    share = drift.get("in_range", {}).get(stat)
    return "—" if share is None else f"{share:.0%}"


def _name(path: str | Path) -> str:
    """A short column name: the folder, or world/eval when the folder is a world's eval."""
    p = Path(path).resolve()
    if p.name == "metrics.json":
        p = p.parent
    return f"{p.parent.name}/{p.name}" if p.name == "eval" else p.name
