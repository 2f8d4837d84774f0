"""`genie data prepare`: a folder of videos -> a dataset of uint8 frame shards.

Layout of a prepared dataset (README, "Prepare any videos"):

    DATASET/shard_00000.npy          (N, H, W, 3) uint8, opened with mmap_mode="r"
    DATASET/shard_00000.actions.npy  (N,) int16: action from frame i to i+1, -1 where unknown
    DATASET/index.json               episodes: source, shard, offset, length, split
    DATASET/meta.json                written last; its presence marks the dataset complete

Each source video is decoded by a worker into a temporary file, streamed frame by frame; the
main process appends finished sources to the current shard in file order, so the result does not
depend on the number of workers. A journal records each shard once it is safely on disk, which
is what lets an interrupted run be finished by running the same command again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genie.data.files import NpyStreamWriter, read_rows, write_json_atomic
from genie.data.pool import worker_pool
from genie.errors import GenieError

FORMAT = "genie-frames"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".actions.npy"
RECORD_META = "record.json"  # written by `genie data record`: action names, game, fps
_NOT_VIDEOS = {".npy", ".json", ".txt", ".md"}  # our own sidecars and notes: never tried


@dataclass
class PrepareSettings:
    """Everything that decides the content of a dataset (workers only change the speed)."""

    size: tuple[int, int] = (64, 64)
    crop: str | None = None
    fps: float | None = None
    val_fraction: float = 0.05
    split_scenes: bool = False
    scene_threshold: float = 30.0
    shard_mb: float = 256.0


@dataclass
class PrepareSummary:
    videos: int = 0
    episodes: int = 0
    frames: int = 0
    splits: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # [source, reason]
    seconds: float = 0.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def find_videos(src: Path) -> list[Path]:
    """Every file under src (recursive, sorted) that might be a video: PyAV decides later."""
    if src.is_file():
        return [src]
    files = [
        p
        for p in src.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(src).parts)
        and p.suffix.lower() not in _NOT_VIDEOS
    ]
    return sorted(files, key=lambda p: p.relative_to(src).as_posix())


def prepare(
    src: str | Path,
    out: str | Path,
    settings: PrepareSettings,
    workers: int | None = None,
    overwrite: bool = False,
    log=_stderr,
    progress: bool = True,
) -> PrepareSummary:
    """Decode every video under `src` into the dataset `out`; returns what was done.

    Problems with single files are logged and skipped; a GenieError is raised when nothing at
    all was usable, or when `out` exists and may not be replaced.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.exists():
        raise GenieError(f"source {src} does not exist: give a folder of videos or a video file")
    _check_settings(settings)
    videos = find_videos(src)
    if not videos:
        raise GenieError(f"no files found under {src}: give a folder that holds video files")
    root = src if src.is_dir() else src.parent
    # Through JSON, so that it compares equal to the copy read back from prepare.json.
    settings_key = json.loads(json.dumps({"src": str(src.resolve()), **asdict(settings)}))
    resuming = (out / "prepare.json").exists() and not _is_empty(out, "prepare.json")
    journal = _open_output(out, settings_key, overwrite, log)
    done = {s for entry in journal for s in entry["sources"]}
    todo = [v for v in videos if v.relative_to(root).as_posix() not in done]
    if resuming and not overwrite:
        log(f"finishing the interrupted prepare of {out}: {len(done)} of {len(videos)} files "
            "were done")
    tmp_dir = out / ".tmp"
    tmp_dir.mkdir(exist_ok=True)
    jobs = [
        (i, str(path), path.relative_to(root).as_posix(), str(tmp_dir), asdict(settings))
        for i, path in enumerate(todo)
    ]
    packer = _ShardPacker(out, settings, sum(e["shard"] is not None for e in journal))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    bar = tqdm(total=len(videos), initial=len(done), unit="video", disable=not progress,
               desc="prepare", dynamic_ncols=True)
    pool = worker_pool("spawn", workers) if workers > 1 else None
    try:
        results = pool.imap(_decode_source, jobs) if pool else map(_decode_source, jobs)
        for result in results:
            problem = [f"{result['problem']}: skipped"] if result["problem"] else []
            with bar.external_write_mode():  # lines above the bar, not through it
                for note in result["notes"] + problem:
                    log(f"{result['source']}: {note}")
            packer.add(result)
            bar.update(1)
            bar.set_postfix(frames=packer.total_frames, refresh=False)
        packer.finish()
    finally:
        bar.close()
        if pool:
            pool.terminate()
    journal += packer.committed
    return _finish(out, root, settings, journal, len(videos), start, log)


def _is_empty(folder: Path, *but: str) -> bool:
    return all(p.name in but for p in folder.iterdir())


def _check_settings(s: PrepareSettings) -> None:
    if s.crop not in (None, "center"):
        raise GenieError(f"--crop {s.crop!r} is not supported: use --crop center or leave it out")
    if s.fps is not None and s.fps <= 0:
        raise GenieError(f"--fps {s.fps} must be positive (leave it out to keep every frame)")
    if not 0 <= s.val_fraction < 1:
        raise GenieError(f"--val-fraction {s.val_fraction} must be in [0, 1)")
    if s.shard_mb <= 0:
        raise GenieError(f"--shard-mb {s.shard_mb} must be positive")


def _open_output(out: Path, settings_key: dict, overwrite: bool, log) -> list[dict]:
    """Make `out` ready; returns the journal of an interrupted run with the same settings."""
    marker = out / "prepare.json"
    if out.exists() and any(out.iterdir()):
        ours = (out / "meta.json").exists() or marker.exists()
        if not ours:
            raise GenieError(
                f"{out} exists and is not a genie dataset: choose another --out (nothing was "
                "deleted)"
            )
        if overwrite:
            log(f"--overwrite: removing the existing dataset {out}")
            shutil.rmtree(out)
        elif (out / "meta.json").exists():
            raise GenieError(f"dataset {out} already exists: add --overwrite to replace it")
        elif json.loads(marker.read_text()) != settings_key:
            raise GenieError(
                f"{out} holds an interrupted prepare with other settings: run it with the same "
                "settings to finish it, or add --overwrite to start over"
            )
        else:
            return _read_journal(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, settings_key)
    return []


def _read_journal(out: Path) -> list[dict]:
    entries = []
    path = out / "journal.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by the kill: its shard is redone
    kept = {e["shard"] for e in entries}
    for stray in out.glob("shard_*"):  # written after the last journal line: redo them
        if stray.suffix == ".tmp" or stray.name.split(".")[0] + ".npy" not in kept:
            stray.unlink()
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    return entries


class _ShardPacker:
    """Appends decoded sources to shards in order; commits each full shard to the journal."""

    def __init__(self, out: Path, settings: PrepareSettings, first_shard: int):
        self.out, self.settings = out, settings
        self.next_shard = first_shard
        frame_bytes = 3 * settings.size[0] * settings.size[1]
        self.shard_frames = max(1, int(settings.shard_mb * 2**20) // frame_bytes)
        self.committed: list[dict] = []
        self.total_frames = 0
        self._start_shard()

    def _start_shard(self) -> None:
        self.name = f"shard_{self.next_shard:05d}.npy"
        self.writer = None
        self.actions: list[np.ndarray] = []
        self.episodes: list[dict] = []
        self.sources: list[str] = []
        self.skipped: list[list[str]] = []

    def add(self, result: dict) -> None:
        self.sources.append(result["source"])
        if result["problem"]:
            self.skipped.append([result["source"], result["problem"]])
        else:
            self._copy_frames(result)
        if self.writer is not None and self.writer.rows >= self.shard_frames:
            self._commit()

    def _copy_frames(self, result: dict) -> None:
        if self.writer is None:
            self.writer = NpyStreamWriter(self.out / self.name, (*self.settings.size, 3))
        for segment, (start, length) in enumerate(result["segments"]):
            offset = self.writer.rows
            for rows in read_rows(result["tmp"], start, length):
                self.writer.write(rows)
            actions = result["actions"]
            self.actions.append(
                actions[start : start + length] if actions is not None
                else np.full(length, -1, np.int16)
            )
            self.episodes.append({
                "source": result["source"], "segment": segment, "shard": self.name,
                "offset": offset, "length": length, "has_actions": actions is not None,
            })
        self.total_frames += sum(length for _, length in result["segments"])
        os.unlink(result["tmp"])

    def _commit(self) -> None:
        if self.writer is not None:
            self.writer.close()
            np.save(self.out / (self.name[:-4] + ".actions.npy"), np.concatenate(self.actions))
        shard = self.name if self.writer is not None else None
        entry = {"shard": shard, "episodes": self.episodes, "sources": self.sources,
                 "skipped": self.skipped}
        with open(self.out / "journal.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.committed.append(entry)
        self.next_shard += self.writer is not None
        self._start_shard()

    def finish(self) -> None:
        if self.writer is not None or self.sources:
            self._commit()


def _finish(out, root, settings, journal, n_videos, start, log) -> PrepareSummary:
    episodes = [ep for entry in journal for ep in entry["episodes"]]
    skipped = [s for entry in journal for s in entry["skipped"]]
    if not episodes:
        shutil.rmtree(out, ignore_errors=True)  # nothing usable: leave only the messages
        raise GenieError(
            f"no usable video among the {n_videos} files tried ({len(skipped)} skipped, reasons "
            "above): nothing was written"
        )
    _assign_splits(episodes, settings.val_fraction)
    for i, ep in enumerate(episodes):
        ep["id"] = i
    action_names = _action_names(root, episodes, log)
    splits = {s: sum(ep["split"] == s for ep in episodes) for s in ("train", "val")}
    summary = PrepareSummary(
        videos=len({ep["source"] for ep in episodes}), episodes=len(episodes),
        frames=sum(ep["length"] for ep in episodes), splits=splits, skipped=skipped,
        seconds=time.perf_counter() - start,
    )
    write_json_atomic(out / "index.json", episodes)
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "complete": True,
        "height": settings.size[0], "width": settings.size[1],
        "episodes": summary.episodes, "frames": summary.frames, "splits": splits,
        "has_actions": any(ep["has_actions"] for ep in episodes), "action_names": action_names,
        "source": str(root.resolve()), "settings": asdict(settings), "skipped": skipped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(out / "meta.json", meta)  # last: from here on the dataset loads
    for name in ("journal.jsonl", "prepare.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ".tmp", ignore_errors=True)
    return summary


def _assign_splits(episodes: list[dict], val_fraction: float) -> None:
    """Deterministic split by episode, stable when files are added.

    If the sources sit in top-level `train/` and `val/` folders, the folders decide (this is how
    held-out levels are kept apart); otherwise a hash of the episode's name does, with at least
    one validation and one training episode whenever there are two or more.
    """
    tops = {ep["source"].split("/")[0] for ep in episodes}
    if {"train", "val"} <= tops and all("/" in ep["source"] for ep in episodes):
        for ep in episodes:
            ep["split"] = "val" if ep["source"].startswith("val/") else "train"
        return

    def score(ep: dict) -> float:
        key = f"{ep['source']}#{ep['segment']}".encode()
        return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2**64

    scores = [score(ep) for ep in episodes]
    for ep, s in zip(episodes, scores, strict=True):
        ep["split"] = "val" if s < val_fraction else "train"
    if len(episodes) >= 2:
        order = sorted(range(len(episodes)), key=scores.__getitem__)
        if all(ep["split"] == "train" for ep in episodes):
            episodes[order[0]]["split"] = "val"
        if all(ep["split"] == "val" for ep in episodes):
            episodes[order[-1]]["split"] = "train"


def _action_names(root: Path, episodes: list[dict], log) -> list[str] | None:
    """Action names from the recorder's record.json files; None if absent or in conflict."""
    found = {}
    for folder in {(root / ep["source"]).parent for ep in episodes if ep["has_actions"]}:
        for candidate in (folder / RECORD_META, root / RECORD_META):
            if candidate.exists():
                names = json.loads(candidate.read_text()).get("action_names")
                if names:
                    found[tuple(names)] = candidate
                break
    if len(found) > 1:
        log(f"recordings disagree on action names ({', '.join(map(str, found.values()))}): "
            "names left out")
        return None
    return list(next(iter(found))) if found else None


# ----------------------------------------------------------------------------------- workers


def _decode_source(job) -> dict:
    """Decode one file into `tmp_dir/<i>.npy`; runs in a worker process."""
    import av

    from genie.data.video import DecodeReport, decode_problem, read_frames

    i, path, rel, tmp_dir, s = job
    s = PrepareSettings(**{**s, "size": tuple(s["size"])})
    path = Path(path)
    result = {"source": rel, "problem": None, "notes": [], "segments": [], "actions": None,
              "tmp": None}
    if path.stat().st_size == 0:
        result["problem"] = "empty file (0 bytes)"
        return result
    tmp = Path(tmp_dir) / f"{i:06d}.npy"
    writer = NpyStreamWriter(tmp, (*s.size, 3))
    report = DecodeReport()
    segments: list[list[int]] = []
    source_index: list[int] = []
    prev, diffs = None, []
    try:
        for frame in read_frames(path, s.size, s.crop, s.fps, report):
            cut = prev is None or frame.after_gap
            if s.split_scenes and prev is not None:
                diff = float(np.abs(frame.rgb.astype(np.int16) - prev).mean())
                cut |= _is_scene_cut(diff, diffs, s.scene_threshold)
                diffs.append(diff)
            if cut:
                segments.append([writer.rows, 0])
            writer.write(frame.rgb)
            segments[-1][1] += 1
            source_index.append(frame.index)
            prev = frame.rgb.astype(np.int16)
    except (av.error.FFmpegError, OSError) as e:
        writer.abort()
        result["problem"] = f"not a readable video ({decode_problem(e)})"
        return result
    writer.close()
    result["tmp"] = str(tmp)
    if report.errors or report.truncated:
        result["notes"].append(
            f"damaged: {report.errors} decode errors, {report.dropped} frames dropped; kept "
            f"{report.frames} decodable frames as {len(segments)} pieces"
        )
    kept = [seg for seg in segments if seg[1] >= 2]
    if not kept:
        os.unlink(tmp)
        result["tmp"] = None
        result["problem"] = (
            "no decodable frames" if not segments else "shorter than 2 frames after decoding"
        )
        return result
    if len(kept) < len(segments):
        result["notes"].append(f"{len(segments) - len(kept)} pieces under 2 frames left out")
    result["segments"] = [tuple(seg) for seg in kept]
    result["actions"] = _aligned_actions(path, segments, source_index, report, result["notes"])
    return result


def _is_scene_cut(diff: float, recent: list[float], threshold: float) -> bool:
    """A hard cut: a jump above `threshold` (mean |Δ| in 0..255) and far above recent motion."""
    window = recent[-30:]
    typical = float(np.median(window)) if window else 0.0
    return diff > threshold and diff > 3 * typical


def _aligned_actions(path, segments, source_index, report, notes) -> np.ndarray | None:
    """Per kept frame, the true action from it to the next kept frame; -1 after each piece.

    When frames were subsampled, the transition keeps the first action of those it spans.
    """
    sidecar = path.with_name(path.name.rsplit(".", 1)[0] + SIDECAR_SUFFIX)
    if not sidecar.exists():
        return None
    try:
        actions = np.load(sidecar)
    except (ValueError, OSError) as e:
        notes.append(f"sidecar {sidecar.name} unreadable ({e}): actions ignored")
        return None
    expected = report.source_frames - 1
    complete = not (report.errors or report.truncated)
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer) or (
        len(actions) != expected if complete else len(actions) < max(source_index)
    ):
        notes.append(
            f"sidecar {sidecar.name} holds {actions.shape} actions for {report.source_frames} "
            "frames (expected one per transition): actions ignored"
        )
        return None
    out = np.full(len(source_index), -1, np.int16)
    for start, length in segments:
        rows = np.arange(start, start + length - 1)
        out[rows] = actions[np.asarray(source_index)[rows]]
    return out
