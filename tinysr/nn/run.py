"""One training run from settled settings: :class:`TrainingRun` checks the data, builds the model,
optimiser and patches, restores a checkpoint, and runs :func:`~tinysr.nn.training.fit` with the
run's callbacks (evaluation, checkpoint, ``best.npz``, log).

The shape of BasicSR's ``SRModel`` beside its storyboard ``train.py`` and of Real-ESRGAN's
``RealESRGANer`` beside its thin script: the command (:mod:`tinysr.cli.train`) parses the command
line, settles the recipe (:func:`tinysr.nn.recipe.settle`), claims the run folder and gives this
object ``say`` (its lines), ``guard`` (its signal deferral: a context manager yielding
``check()``, e.g. :func:`tinysr.cli.entry.signals_deferred`) and the progress bars; it never
reaches into the loop otherwise. ``settings`` is the settled namespace (:mod:`tinysr.nn.recipe`'s
names as attributes); ``dist`` this process's place in a data-parallel job (``SOLO`` or
:mod:`tinysr.distributed.mpi`'s, duck-typed: this module does not import it). Messages name the
flags of ``tinysr train``.

Files, written on rank 0 only: ``OUT/last.npz`` (the checkpoint, after every epoch),
``OUT/best.npz`` (weights with the best evaluation PSNR), ``OUT/log.jsonl`` (the log's records,
one JSON object per epoch, rewritten from the checkpoint's).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinysr.atomic import atomic_write
from tinysr.image.inference import restore_y
from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.parallel import SOLO
from tinysr.nn import recipe
from tinysr.nn.recipe import NOT_RECORDED_SETTINGS, effective_path
from tinysr.nn.serialization import restore, save_checkpoint, save_model
from tinysr.nn.training import fit, make_optimizer
from tinysr.ops.backend import to_device, to_numpy
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace
from tinysr.protocol.data import (cache_settings, default_cache_path, load_or_build_cache, source_files,
                                  without_flag_advice)
from tinysr.protocol.evaluation import evaluate_dir, list_images, prepare_pair, read_y_uint8
from tinysr.protocol.paths import ENV_VAR
from tinysr.weights import load_weights

INPUT_SIZE = 33  # the patches' input side; the labels are what the valid convolutions leave (21 for 9-1-5)


@contextlib.contextmanager
def _unguarded():
    yield lambda: None


def log_records(log_path: Path, upto_epoch: int) -> list[dict]:
    """Records of an existing log for epochs <= ``upto_epoch`` (for a checkpoint that does not carry its log)."""
    if not log_path.is_file():
        return []
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
            if record["epoch"] <= upto_epoch:
                keep.append(record)
        except (ValueError, KeyError, TypeError):
            break
    return keep


def write_log(log_path: Path, records: list[dict]) -> None:
    """``log.jsonl``: one JSON object per record, written atomically."""
    atomic_write(log_path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def check_images(folder: Path, flag: str, shared: str, more: str = "") -> None:
    """Fail up front, naming the flag and TINYSR_SHARED, when ``folder`` holds no usable image."""
    try:
        list_images(folder)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{exc} (give the images with {flag} DIR, or set {ENV_VAR} to the folder holding "
                         f"data/{shared}{more})") from None


def check_eval_images(folder: Path, scale: int) -> None:
    """Read every evaluation image once before training: an unreadable one is found now, not
    after the first epoch's work."""
    for path in list_images(folder):
        try:
            prepare_pair(read_y_uint8(path), scale)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--eval-dir {folder}: {without_flag_advice(str(exc))} (remove it, or train with "
                             f"--eval-every 0)") from None


def check_same_data(recorded, now: dict, ckpt, allowed: bool, say) -> None:
    """Refuse to resume on other training images than the run's (``recorded``: the checkpoint's
    ``meta["train_data"]``, ``now``: the same for the images there now) unless ``allowed``
    (``--allow-changed-data``), which continues with a line saying what changed."""
    if isinstance(recorded, dict) and isinstance(recorded.get("files"), dict):
        old, new = recorded["files"], now["files"]
        changes = [f"{name} {what}" for name, what in sorted(
            [(n, "added") for n in new if n not in old] + [(n, "removed") for n in old if n not in new]
            + [(n, "replaced") for n in new if n in old and new[n] != old[n]])]
        if not changes:
            return
        problem = (f"the training images in {now['dir']} are not those the run trained on "
                   f"({len(changes)} changed: {', '.join(changes[:10])}{', ...' if len(changes) > 10 else ''})")
    else:
        problem = f"records no fingerprint of its training images, so it cannot tell whether {now['dir']} changed"
    if allowed:
        say(f"{ckpt}: {problem}; continuing on them (--allow-changed-data)")
        return
    raise ValueError(f"{ckpt}: {problem}; restore them, or continue on the images there now with "
                     f"--allow-changed-data")


def settings(given: dict, d: dict | None = None, ckpt=None) -> dict:
    """The run's settings (:func:`tinysr.nn.recipe.settle`) from the command line's ``given`` values (``None``: not given) and, on resume, the checkpoint
    ``d`` read from ``ckpt`` (:func:`~tinysr.nn.serialization.read_npz`), whose recorded recipe
    they continue; a model file without optimiser state is refused."""
    if d is None:
        return recipe.settle(given)
    if d["state"] is None or d["optim_state"] is None:
        raise ValueError(f"{ckpt}: a model file, not a training checkpoint (no optimiser state)")
    stored = d["meta"].get("recipe") if isinstance(d["meta"], dict) else None
    return recipe.settle(given, stored if isinstance(stored, dict) else {}, ckpt)


class TrainingRun:
    """A run of ``settings`` into ``out`` (``None`` on ranks other than 0 of a new run) on the
    array module ``xp``, continuing ``ckpt`` (its path) whose contents are ``d``
    (:func:`~tinysr.nn.serialization.read_npz`'s dict; both ``None`` for a new run).

    :meth:`setup` does every check and build before the first epoch; :meth:`fit` trains. After
    each epoch the checkpoint is written under ``guard`` and ``on_saved(path)`` called inside it;
    ``best``, ``seconds`` (this process's training time) and ``start_epoch`` are kept for the
    epoch's line.
    """

    def __init__(self, settings, out: Path | None, xp, *, dist=SOLO, ckpt: Path | None = None, d: dict | None = None,
                 say: Callable[[str], None] = print, guard: Callable = _unguarded,
                 on_saved: Callable[[Path], None] | None = None):
        self.s, self.out, self.xp, self.dist, self.ckpt, self.d = settings, out, xp, dist, ckpt, d
        self.say, self.guard, self.on_saved = say, guard, on_saved
        # (null in a checkpoint of an older layout: the shared data's, as then)
        self.train_dir, self.eval_dir = (Path(effective_path(k, getattr(settings, k))) for k in ("train_dir", "eval_dir"))
        self.log_path = out / "log.jsonl" if out is not None else None
        self.start_epoch, self.best, self.elapsed, self.seconds = 0, -math.inf, 0.0, 0.0
        self.history: list[dict] = []  # the log's records; the checkpoint carries them, log.jsonl is written from them

    def setup(self, prepare_out: Callable[[], None] | None = None) -> None:
        """Check the images, build the model and optimiser, call ``prepare_out()`` (rank 0: the
        folder made ready for writing), load or build the patch cache, restore the checkpoint
        and, in a job of several ranks, send rank 0's weights to every rank."""
        s, dist, d, say = self.s, self.dist, self.d, self.say
        transport = dist.use_device(self.xp)  # before the model is built: picks this rank's GPU
        check_images(self.train_dir, "--train-dir", "T91")
        if s.eval_every and dist.is_root:  # before the first epoch, not after it
            check_images(self.eval_dir, "--eval-dir", "Set5", "; --eval-every 0 trains without evaluating")
            check_eval_images(self.eval_dir, s.scale)
        self.train_data = None
        if dist.is_root:
            self.train_data = {"dir": str(self.train_dir), "files": source_files(self.train_dir)}
            if d is not None:
                check_same_data(d["meta"].get("train_data"), self.train_data, self.ckpt, s.allow_changed_data, say)
        self._build()
        if dist.is_root and prepare_out is not None:
            prepare_out()
        self._load_patches()
        self.base_lr = dict(self.opt.lr)
        self.rng = np.random.default_rng(s.seed)
        if d is not None:
            st = restore(self.model, self.opt, self.rng, d)
            self.start_epoch, self.best, self.elapsed = st["epoch"], st["best_psnr"], st["elapsed"]
            self.history = (st["log"] if isinstance(st.get("log"), list)
                            else log_records(self.log_path, self.start_epoch))
            say(f"resumed from {self.ckpt} at epoch {self.start_epoch}")
        if dist.size > 1:  # every rank starts from rank 0's weights
            self.model.set_params(dist.bcast({k: to_numpy(v) for k, v in self.model.params.items()},
                                             "sending the weights"))
            say(f"distributed: {dist.size} ranks, global batch {s.batch_size} ({s.batch_size // dist.size} "
                f"per rank), gradients averaged by {transport}")
        if dist.is_root:
            with self.guard():  # the log as the checkpoint has it (repairs one cut between the two writes)
                write_log(self.log_path, self.history)

    def _build(self) -> None:
        """The model (``--arch``, ``--init``, ``--seed``, or ``--init-from``'s weights) and its optimiser."""
        s, d = self.s, self.d
        try:
            self.model = model = SRCNN.from_arch(s.arch, init=s.init, seed=s.seed, xp=self.xp)
        except ValueError as exc:
            raise ValueError(f"--arch {s.arch}: {exc}") from None
        self.label_size = INPUT_SIZE - 2 * model.shrink
        self.cache = Path(s.cache) if s.cache else default_cache_path(self.train_dir, cache_settings(
            s.scale, INPUT_SIZE, self.label_size, degrade=s.degrade, seed=s.seed))
        if s.init_from and d is None:
            start = load_weights(s.init_from)
            if start.config != model.config:
                raise ValueError(f"{s.init_from}: holds {start.config}, this run trains {model.config}")
            model.set_params(start.params)
        self.opt = opt = make_optimizer(s.optimizer, model.params, s.lr, s.momentum)
        if d is not None and (d["config"] != model.config or d["optim"]["type"] != type(opt).__name__):
            raise ValueError(f"{self.ckpt}: was trained with {d['config']} / {d['optim']['type']}, "
                             f"this run asks for {model.config} / {type(opt).__name__}")

    def _load_patches(self) -> None:
        """The patch cache, built by rank 0 first (no deadline: it may take long), then read by
        the others; the patches then live on the training device for the whole run (x3 on T91:
        21,884 patches, 133 MB in float32), so a step reads its batch there."""
        s, dist = self.s, self.dist
        if not dist.is_root:
            dist.barrier("waiting for rank 0's patch cache", patient=True)
        with self.guard() as check:  # a signal ends the cache build between images, never inside h5py
            inputs, labels, _ = load_or_build_cache(
                self.train_dir, s.scale, self.cache, input_size=INPUT_SIZE, label_size=self.label_size, check=check,
                on_build=lambda: self.say(f"building the patch cache {self.cache} from {self.train_dir}"),
                degrade=s.degrade, seed=s.seed)
        if dist.is_root:
            dist.barrier("waiting for the other ranks' patch caches", patient=True)
        n = inputs.shape[0]
        self.inputs, self.labels = to_device(inputs, self.xp), to_device(labels, self.xp)
        if n < s.batch_size:
            raise ValueError(f"{n} training patches is fewer than one batch of {s.batch_size}")

    def evaluate(self, model) -> dict:
        """Mean PSNR and SSIM (dB; Y channel, the paper's protocol) of ``model`` on the evaluation images."""
        rows = evaluate_dir(self.eval_dir, self.s.scale, lambda y: restore_y(model, y))
        return {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows]))}

    def save_epoch(self, record: dict, seconds: float, elapsed: float) -> None:
        """After epoch ``record["epoch"]``: ``best.npz`` when the PSNR improved, the checkpoint and
        the log, all under ``guard``."""
        epoch, model, out = record["epoch"], self.model, self.out
        self.seconds += seconds
        improved = "psnr" in record and record["psnr"] > self.best
        if improved:
            self.best = record["psnr"]
        state = {"epoch": epoch, "best_psnr": self.best, "elapsed": elapsed, "rng": self.rng.bit_generator.state,
                 "log": [*self.history, record]}
        with self.guard():  # checkpoint and log: both written, or the checkpoint alone (the log follows it)
            if improved:
                save_model(out / "best.npz", model, meta={**self.meta, "epoch": epoch, "set5_psnr": self.best})
            save_checkpoint(out / "last.npz", model, self.opt, state, meta={**self.meta, "epoch": epoch})
            if self.on_saved is not None:
                self.on_saved(out / "last.npz")
            self.history.append(record)
            write_log(self.log_path, self.history)

    def fit(self, *, check_stop=None, steps_bar: Callable | None = None,
            on_epoch: Callable | None = None) -> dict:
        """Train to ``settings.epochs`` (:func:`~tinysr.nn.training.fit`), saving after each epoch
        on rank 0 and then calling ``on_epoch(record, seconds, elapsed)`` (e.g. the epoch's line);
        returns the last epoch's record."""
        s, model = self.s, self.model
        # CPU threads over the batch; the steps' activations and gradients kept from one step to the next
        model.engine = Engine(workers=s.threads, workspace=Workspace())
        self.meta = {"scale": s.scale, "arch": s.arch, "recipe": {k: v for k, v in vars(s).items()
                                                                  if k not in NOT_RECORDED_SETTINGS},
                     "train_data": self.train_data}

        def epoch_done(record: dict, seconds: float, elapsed: float) -> None:
            self.save_epoch(record, seconds, elapsed)
            if on_epoch is not None:
                on_epoch(record, seconds, elapsed)
        return fit(model, MSELoss(), self.opt, self.inputs, self.labels, batch_size=s.batch_size, epochs=s.epochs,
                   rng=self.rng, schedule=s.schedule, base_lr=self.base_lr, start_epoch=self.start_epoch,
                   elapsed=self.elapsed, augment=s.augment, dist=self.dist, check_stop=check_stop,
                   steps_bar=steps_bar, evaluate=self.evaluate, eval_every=s.eval_every, on_epoch=epoch_done)


__all__ = ["TrainingRun", "settings", "check_eval_images", "check_images", "check_same_data", "log_records", "write_log"]
