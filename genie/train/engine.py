"""The one training engine for the tokenizer, the latent action model and the dynamics model.

A model only has to provide `forward(batch) -> (loss, logs)` (logs: detached scalars) and,
optionally, `sample_images(batch) -> (H, W, 3) uint8` for the pictures written to the run
folder. Devices, mixed precision, gradient accumulation, multi-process training and checkpoint
state are accelerate's; this file adds the loop around them: schedule, clipping, EMA, logging,
rotation of checkpoints, clean stops and the final export.

Run folder:
    RUN/run.json                 what was trained on what (checked again on --resume), and
                                 the settings a --resume goes on with
    RUN/checkpoints/step_0001000 accelerate state (model, optimizer, RNG, progress)
    RUN/logs/                    TensorBoard
    RUN/samples/step_0001000.png
    RUN/model/                   the export: config.json + safetensors (EMA weights if on)
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from genie.config import DataConfig, RunConfig, TrainConfig
from genie.data.files import write_json_atomic
from genie.errors import GenieError
from genie.train.compute import pick_device, pick_precision


class TrainingStopped(GenieError):
    """Training ended early on request (Ctrl-C, SIGTERM); a checkpoint was saved."""


class _Progress:
    """Where the run is; saved in every checkpoint through accelerate."""

    def __init__(self) -> None:
        self.step = self.epoch = self.batch = 0
        self.frames = 0  # video frames trained on, every process and session together
        self.seconds = 0.0
        # Of `seconds`, the time spent waiting for the loader's next batch: a loader that
        # keeps up costs a millisecond a step; more says the data pipeline is the bottleneck.
        self.data_seconds = 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def lr_lambda(train: TrainConfig, progress: _Progress | None = None):
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at the end of training.

    The end is whichever comes first: `train.steps`, or `train.max_minutes` of training time
    (`progress.seconds` says how much has passed). Without the second, a run stopped by its
    time budget never anneals (an annealed fine-tune of the tiny dynamics gained about 1 dB).
    """

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        done = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        if train.max_minutes and progress is not None:
            done = max(done, progress.seconds / (train.max_minutes * 60))
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return train.min_lr_ratio + (1 - train.min_lr_ratio) * cosine

    return factor


class Trainer:
    """Trains `model` on `dataset` into the run folder `out`."""

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: torch.utils.data.Dataset,
        *,
        train: TrainConfig,
        run: RunConfig,
        data: DataConfig,
        out: str | Path,
        device: str = "auto",
        resume: bool = False,
        describe: dict | None = None,
        origins: dict[str, str] | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, set_seed

        self.train_cfg, self.run_cfg = train, run
        self.out = Path(out)
        dev = pick_device(device)
        precision = pick_precision(run.precision, dev)
        self.accelerator = Accelerator(
            cpu=dev.type == "cpu",
            mixed_precision="bf16" if precision == "bf16" else "no",
            gradient_accumulation_steps=train.grad_accum,
            log_with="tensorboard",
            project_dir=str(self.out / "logs"),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                      data_seed=run.seed),
        )
        self.precision = precision
        set_seed(run.seed)
        _use_attention(model, run.attention, dev)  # before the run folder holds anything
        self._check_run_folder(model, resume, describe or {}, origins or {})
        if run.compile:
            model = torch.compile(model)
        self.raw_model = model
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            # One fused kernel per parameter instead of a dozen small ops: on 2 CPU cores the
            # optimizer step of the tiny LAM's 88 tensors took 1.0 ms fused, 5.3 ms looped.
            lr=train.lr, betas=train.betas, fused=dev.type in ("cuda", "cpu") or None,
        )
        loader = DataLoader(
            dataset, batch_size=train.batch_size, shuffle=True, drop_last=True,
            num_workers=data.num_workers, persistent_workers=data.num_workers > 0,
            pin_memory=dev.type == "cuda", generator=torch.Generator().manual_seed(run.seed),
            worker_init_fn=_ignore_stop_signals,
        )
        if len(loader) == 0:
            raise GenieError(
                f"the dataset has {len(dataset)} windows, fewer than one batch of "
                f"{train.batch_size}: lower batch_size or record more data"
            )
        self.model, self.optimizer, self.loader = self.accelerator.prepare(model, optimizer, loader)
        self.progress = _Progress()
        # Not a closure over self: that cycle would keep the loader's workers alive at exit.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_lambda(train, self.progress))
        self.accelerator.register_for_checkpointing(self.scheduler, self.progress)
        self.ema = None
        if train.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.accelerator.unwrap_model(self.model).parameters(),
                                decay=train.ema_decay)
            self.ema.to(self.accelerator.device)
            self.accelerator.register_for_checkpointing(self.ema)
        self.last_checkpoint: Path | None = None
        if resume:
            self._load_latest()
            self._keep_settings(describe or {})
        self._stop: str | None = None

    # ------------------------------------------------------------------------ run folder

    def _check_run_folder(self, model, resume: bool, describe: dict,
                          origins: dict[str, str]) -> None:
        run_json = self.out / "run.json"
        model_config = dict(getattr(model, "config", {}))
        if resume:
            if not run_json.exists():
                raise GenieError(f"nothing to resume in {self.out}: start it without --resume")
            run = json.loads(run_json.read_text())
            saved = run.get("model", {})
            changed = sorted(k for k in set(saved) | set(model_config)
                             if saved.get(k) != model_config.get(k) and not k.startswith("_"))
            if changed:
                raise GenieError(self._changed_model(run, model_config, changed, describe,
                                                     origins))
            # Checkpoints hold EMA weights or not; either way, the run goes on as it began.
            decay = run.get("train", {}).get("ema_decay", self.train_cfg.ema_decay)
            if (decay > 0) != (self.train_cfg.ema_decay > 0):
                key = f"{run['stage']}.train.ema_decay" if "stage" in run else "ema_decay"
                raise GenieError(
                    f"cannot resume {self.out} with {key}={self.train_cfg.ema_decay}: it was "
                    f"trained {'with' if decay > 0 else 'without'} EMA weights ({decay}): "
                    "resume without changing it, or train into a new --out"
                )
            return
        if (self.out / "checkpoints").exists() or (self.out / "model").exists():
            raise GenieError(
                f"{self.out} already holds a training run: add --resume to continue it, or "
                "choose a new --out (nothing was overwritten)"
            )
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            info = {"model": {k: v for k, v in model_config.items() if not k.startswith("_")},
                    "train": asdict(self.train_cfg), "run": asdict(self.run_cfg),
                    "precision": self.precision, "processes": self.accelerator.num_processes,
                    "device": str(self.accelerator.device),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **describe}
            write_json_atomic(run_json, json.loads(json.dumps(info, default=str)))

    def _changed_model(self, run: dict, now: dict, changed: list[str], describe: dict,
                       origins: dict[str, str]) -> str:
        """Why a resumed run cannot go on: what changed in its model, what set it (`origins`:
        the option or config key behind each model setting), and what to give instead."""
        diffs = ", ".join(f"{k} {run['model'].get(k)} -> {now.get(k)}" for k in changed)
        stage = run.get("stage")
        causes = list(dict.fromkeys(origins.get(k, f"{stage}.{k}" if stage else k)
                                    for k in changed))
        started, given = _options(run), _options(describe)
        named = [f"{c} ({given[c]})" if given.get(c) else c for c in causes]
        fixes = [f"resume with {c} {started[c]}, which it was trained with" if started.get(c)
                 else f"resume with the {c} it was trained with"
                 for c in causes if c.startswith("--")]
        keys = [c for c in causes if not c.startswith("--")]
        if keys:
            fixes.append(f"resume without changing {', '.join(keys)}")
        return (f"cannot resume {self.out}: the model changed ({diffs}), which comes from "
                f"{' and '.join(named)}: {' and '.join(fixes)}, or train into a new --out")

    def _keep_settings(self, describe: dict) -> None:
        """Record the settings a resumed run goes on with, so that the next --resume keeps
        them (steps extended once stay extended)."""
        if not self.accelerator.is_main_process:
            return
        run_json = self.out / "run.json"
        info = json.loads(run_json.read_text())
        info |= {"train": asdict(self.train_cfg), "run": asdict(self.run_cfg)}
        if "config" in describe:
            info["config"] = describe["config"]
        write_json_atomic(run_json, json.loads(json.dumps(info, default=str)))

    def _checkpoints(self) -> list[Path]:
        return sorted((self.out / "checkpoints").glob("step_[0-9]*[0-9]"))

    def _load_latest(self) -> None:
        found = self._checkpoints()
        if not found:
            raise GenieError(f"no checkpoint in {self.out / 'checkpoints'} to resume from")
        try:
            self.accelerator.load_state(str(found[-1]))
        except Exception as e:  # torch/safetensors raise many types for a damaged file
            raise GenieError(
                f"checkpoint {found[-1]} could not be loaded ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}): delete it to resume from the one before"
            ) from e
        self.last_checkpoint = found[-1]

    def save_checkpoint(self) -> Path:
        """Save the full training state; written under a temporary name, then renamed."""
        final = self.out / "checkpoints" / f"step_{self.progress.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self._checkpoints()[: -self.train_cfg.keep_checkpoints]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()
        self.last_checkpoint = final
        return final

    def export(self) -> Path:
        """save_pretrained into RUN/model (EMA weights when EMA is on), with training.json: the
        steps and frames, training time over every resumed session (and the part of it spent
        waiting for data), precision and processes that made it, which travel with the model
        into a world folder."""
        model = self.accelerator.unwrap_model(self.model)
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        target = self.out / "model"
        if self.accelerator.is_main_process:
            tmp = target.with_name("model.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            if self.ema is not None:
                self.ema.store(model.parameters())
                self.ema.copy_to(model.parameters())
            model.save_pretrained(str(tmp))
            write_json_atomic(tmp / "training.json", {
                "steps": self.progress.step, "frames": self.progress.frames,
                "seconds": round(self.progress.seconds, 1),
                "data_seconds": round(self.progress.data_seconds, 1),
                "precision": self.precision, "processes": self.accelerator.num_processes,
                "device": self.accelerator.device.type,
                "parameters": sum(p.numel() for p in model.parameters()),
            })
            if self.ema is not None:
                self.ema.restore(model.parameters())
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        self.accelerator.wait_for_everyone()
        return target

    # ------------------------------------------------------------------------ the loop

    def _batches(self):
        """Endless batches; resumes mid-epoch exactly where the checkpoint was taken.

        Closing it (or an error in the loader) stops the loader's workers.
        """
        loader = self.loader
        try:
            while True:
                self.loader.set_epoch(self.progress.epoch)
                loader = self.loader
                if self.progress.batch:
                    loader = self.accelerator.skip_first_batches(self.loader, self.progress.batch)
                for batch in loader:
                    self.progress.batch += 1
                    yield batch
                self.progress.epoch += 1
                self.progress.batch = 0
        finally:
            _stop_workers(loader)
            _stop_workers(self.loader)

    def _on_signal(self, signum, frame) -> None:
        self._stop = signal.Signals(signum).name

    def _should_stop(self) -> str | None:
        reason = self._stop
        if self.accelerator.num_processes > 1:
            # Every rank must stop at the same step, and anneal by the same clock.
            state = torch.tensor([float(reason is not None), self.progress.seconds],
                                 device=self.accelerator.device)
            stopped, self.progress.seconds = self.accelerator.reduce(state, "max").tolist()
            if stopped and reason is None:
                reason = "another process stopped"
        limit = self.train_cfg.max_minutes
        # progress.seconds already counts the earlier sessions of a resumed run.
        if reason is None and limit and self.progress.seconds >= limit * 60:
            reason = "time budget"
        return reason

    def fit(self) -> Path:
        """Train to `train.steps` (or the time budget); returns the exported model folder."""
        from tqdm import tqdm

        acc, cfg = self.accelerator, self.train_cfg
        acc.init_trackers("train")
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=cfg.steps, initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=not acc.is_main_process, desc=self.out.name)
        started = time.perf_counter()
        seconds_before = self.progress.seconds
        # The log window starts at this time, frame count and waiting total.
        window = (started, self.progress.frames, self.progress.data_seconds)
        batches = self._batches()
        try:
            while self.progress.step < cfg.steps:
                for _ in range(cfg.grad_accum):
                    asked = time.perf_counter()
                    batch = next(batches)
                    self.progress.data_seconds += time.perf_counter() - asked
                    self.progress.frames += _frames_in(batch) * acc.num_processes
                    with acc.accumulate(self.model):
                        loss, logs = self.model(batch)
                        acc.backward(loss)
                        if acc.sync_gradients:
                            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.step(acc.unwrap_model(self.model).parameters())
                self.progress.step += 1
                self.progress.seconds = seconds_before + time.perf_counter() - started
                reason = self._should_stop()  # first, as it syncs the clock the decay reads
                self.scheduler.step()
                # A sync point on GPU, but a NaN caught at once saves a run of wasted steps.
                if not math.isfinite(loss.item()):
                    raise GenieError(
                        f"loss became {loss.item()} at step {self.progress.step}: stopped. Last "
                        f"good checkpoint: {self.last_checkpoint or 'none yet'}; resume from it "
                        "with --resume, perhaps with a lower lr or grad_clip"
                    )
                step = self.progress.step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    elapsed = now - window[0]
                    scalars = {k: float(v) for k, v in logs.items()}
                    scalars |= {"lr": self.scheduler.get_last_lr()[0],
                                "grad_norm": float(grad_norm),
                                "frames_per_s": (self.progress.frames - window[1]) / elapsed,
                                "data_wait": (self.progress.data_seconds - window[2]) / elapsed}
                    acc.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                                    fps=f"{scalars['frames_per_s']:.0f}",
                                    data=f"{scalars['data_wait']:.0%}", refresh=False)
                    window = (now, self.progress.frames, self.progress.data_seconds)
                bar.update(1)
                if cfg.sample_every and step % cfg.sample_every == 0:
                    self._write_sample(batch, step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if reason == "time budget":
                    bar.write(f"time budget of {cfg.max_minutes} minutes reached at step {step}")
                    break
                if reason:
                    path = self.save_checkpoint()
                    raise TrainingStopped(
                        f"stopped by {reason} at step {step}: checkpoint saved in {path}; "
                        "continue with --resume"
                    )
            if self.last_checkpoint is None or \
                    self.last_checkpoint.name != f"step_{self.progress.step:07d}":
                self.save_checkpoint()  # unless the last step was just checkpointed
            return self.export()
        finally:
            batches.close()
            bar.close()
            acc.end_training()
            for s, h in handlers.items():
                signal.signal(s, h)

    def _write_sample(self, batch, step: int) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if not self.accelerator.is_main_process or not hasattr(model, "sample_images"):
            return
        from PIL import Image

        model.eval()
        with self.accelerator.autocast():
            image = model.sample_images(batch).cpu().numpy()
        model.train()
        folder = self.out / "samples"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"step_{step:07d}.png")
        tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
        tracker.add_image("samples", image, step, dataformats="HWC")


def _ignore_stop_signals(worker_id: int) -> None:
    # Ctrl-C and `kill` of a process group (also schedulers like Slurm) signal the loader
    # workers too; a worker that dies first turns the clean checkpoint-and-exit into a crash.
    # The main process stops them itself once the checkpoint is saved.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _options(info: dict) -> dict[str, str | None]:
    """The paths a run.json (or a stage's description of a run) holds for the options that
    shape a model beside its config."""
    return {"--data": info.get("dataset", {}).get("path"), "--tokenizer": info.get("tokenizer"),
            "--lam": info.get("lam")}


def _stop_workers(loader) -> None:
    """Stop a loader's persistent workers now rather than when the loader is garbage.

    After an error the traceback keeps the trainer, and with it the loader, alive until the
    interpreter exits; there multiprocessing stops its children with SIGTERM, which the workers
    ignore (_ignore_stop_signals), then waits for them forever. Asked through the loader, they
    stop at once.
    """
    loader = getattr(loader, "base_dataloader", loader)  # under accelerate's wrapper
    iterator = getattr(loader, "_iterator", None)  # where torch keeps persistent workers
    if iterator is not None:
        iterator._shutdown_workers()
        loader._iterator = None


def _frames_in(batch) -> int:
    frames = batch[0] if isinstance(batch, list | tuple) else batch
    return frames.shape[0] * frames.shape[1]


def _use_attention(model: torch.nn.Module, backend: str, device: torch.device) -> None:
    """run.attention: xformers is a CUDA kernel from an optional package, so check both now,
    not at the first step."""
    from genie.nn import use_attention_backend

    if backend == "xformers":
        if device.type != "cuda":
            raise GenieError(f"run.attention=xformers needs a CUDA GPU and this run is on "
                             f"{device.type}: leave run.attention at sdpa")
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise GenieError("run.attention=xformers needs the xformers package: pip install "
                             "'genie[gpu]', or leave run.attention at sdpa") from None
    use_attention_backend(model, backend)
