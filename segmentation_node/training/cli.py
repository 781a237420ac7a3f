"""workcell_finetune: fine-tune SAM3 on workcell data; writes the best checkpoint and a report.

One process, or data-parallel under torchrun (training/distributed.py): the same command after
`torchrun --nproc-per-node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
-m segmentation_node.training.cli`. --batch-size is then the batch of all ranks together; every
rank logs with its rank in the prefix, only rank 0 writes the checkpoint and the report."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.perception.ontology import OntologyError, load_ontology
from segmentation_node.sam3_backend.builder import Sam3Model, build_sam3, build_small_sam3
from segmentation_node.sam3_backend.checkpoint import (CheckpointError, is_finetune_checkpoint,
                                                       load_checkpoint, read_checkpoint,
                                                       save_checkpoint, small_builder)
from segmentation_node.training.data import SPLIT_KINDS, DataError, load_training_data, split_frames
from segmentation_node.training.distributed import Workers, start, stop
from segmentation_node.training.loop import StageReport, run_stage
from segmentation_node.training.resume import ResumeError, StageResume
from segmentation_node.training.stage1 import DetectorTrainer
from segmentation_node.training.stage2 import TrackerTrainer

STAGES = {"1": (1,), "2": (2,), "both": (1, 2)}
# Arguments a resumed run may change: how it is run, not what it trains.
RUN_INDEPENDENT_ARGUMENTS = ("resume", "no_progress", "checkpoint_every", "device")
DEFAULT_SMALL_IMAGE_SIZE = 224


class UsageError(ValueError):
    """Arguments that contradict each other or the base model."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workcell_finetune",
        description="Fine-tune SAM3 on workcell COCO data. Stage 1: detector + segmentation head "
                    "(ViT trunk and text encoder frozen). Stage 2: tracker on consecutive frames "
                    "(perception encoder frozen). Held-out data are whole runs, cameras, SKUs or "
                    "the latest stretch of time, never random frames. Writes the checkpoint of the "
                    "best held-out loss and a JSON report next to it.")
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="COCO directories, or directories of them (flywheel shards)")
    parser.add_argument("--allow-unaudited", action="store_true",
                        help="also train on directories without audit.json (synthetic ground truth)")
    parser.add_argument("--base", default="small",
                        help="'small' (random-init small model) or a checkpoint: a fine-tune "
                             "checkpoint or the original sam3.pt")
    parser.add_argument("--stage", choices=sorted(STAGES), default="both")
    parser.add_argument("--steps", type=int, default=200, help="training steps per stage")
    parser.add_argument("--eval-every", type=int, default=20, help="held-out evaluation interval")
    parser.add_argument("--patience", type=int, default=5,
                        help="stop after this many evaluations without a better held-out loss "
                             "(0: never)")
    parser.add_argument("--split-by", choices=SPLIT_KINDS, default="run")
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--held-out-samples", type=int, default=32,
                        help="held-out frames (stage 1) / clips (stage 2) per evaluation")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"input size of a 'small' base (default {DEFAULT_SMALL_IMAGE_SIZE}); "
                             "a checkpoint keeps its own")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="images (stage 1) / clips (stage 2) per step, over all ranks under torchrun")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--backbone-lr-scale", type=float, default=0.0,
                        help="stage 1: train the ViT trunk and text encoder at this fraction of "
                             "--lr (0: frozen)")
    parser.add_argument("--clip-length", type=int, default=4, help="stage 2: frames per clip")
    parser.add_argument("--max-objects", type=int, default=8, help="stage 2: tracks per clip")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPUs)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if "
                                                       "available)")
    parser.add_argument("--ontology", type=Path, default=None,
                        help="ontology YAML (default: the package's config/ontology.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="save the stage's state every N steps to OUT.resume/ (0: at stage ends only)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT.resume/ when it holds this run's state (else start); "
                             "keep it in a torchrun --max-restarts command so a restart continues")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def report_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".report.json")


def resume_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".resume")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 0 or args.eval_every < 1 or args.patience < 0 or args.batch_size < 1 or args.checkpoint_every < 0:
        parser.error("need --steps >= 0, --eval-every >= 1, --patience >= 0, --batch-size >= 1, "
                     "--checkpoint-every >= 0")
    if not 0.0 < args.held_out_fraction < 1.0:
        parser.error("--held-out-fraction must be in (0, 1)")
    workers = start(_device(args))
    logging.basicConfig(level=logging.INFO, format=f"workcell_finetune: {workers.prefix}%(message)s")
    try:
        return _finetune(args, workers)
    except (UsageError, DataError, CheckpointError, OntologyError, FileNotFoundError, ResumeError) as error:
        print(f"workcell_finetune: {workers.prefix}{error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a full or read-only disk: every write is atomic, nothing is torn
        # A failed write() names no file; every file this run writes lies beside --out.
        print(f"workcell_finetune: {workers.prefix}{error.filename or args.out.parent}: "
              f"{error.strerror or error}; what was written before is whole; free space and rerun "
              "(--resume continues from the last saved step, if any)", file=sys.stderr)
        return 1
    finally:
        stop(workers)


def _device(args: argparse.Namespace) -> torch.device:
    """--device, else each torchrun rank on its own GPU (LOCAL_RANK), else the CPU."""
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _finetune(args: argparse.Namespace, workers: Workers) -> int:
    started = time.time()
    if args.batch_size % workers.world:
        raise UsageError(f"--batch-size {args.batch_size} does not split over {workers.world} ranks")
    say = functools.partial(print, workers.prefix, sep="", flush=True)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    ontology = load_ontology(args.ontology)
    data = load_training_data(args.data, args.allow_unaudited, labels=ontology.classes)
    if not data.frames:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in data.skipped)
        raise DataError(f"no usable training data ({reasons or 'no frames'})")
    split = split_frames(data.frames, args.split_by, args.held_out_fraction, args.seed,
                         sku_labels=ontology.pickable)
    say(f"data: {len(data.frames)} frames from {len(data.shards)} director(ies), "
          f"{len(data.skipped)} skipped; split by {split.by}: {len(split.train)} train frames "
          f"({_listing(split.train_units)}), {len(split.held_out)} held-out "
          f"({_listing(split.held_out_units)})")
    model, builder = _base_model(args, _device(args))
    base_version = model.model_version
    say(f"base: {base_version} ({model.parameter_count / 1e6:.1f}M params, "
          f"{model.image_size}px, {model.device})")

    # Both trainers first: a split that cannot feed stage 2 fails before stage 1 spends hours.
    common = dict(lr=args.lr, held_out_limit=args.held_out_samples, seed=args.seed, bf16=args.bf16, workers=workers)
    trainers = []
    if 1 in STAGES[args.stage]:
        trainers.append(DetectorTrainer(model, split.train, split.held_out, ontology,
                                        batch_size=args.batch_size,
                                        backbone_lr_scale=args.backbone_lr_scale, **common))
    if 2 in STAGES[args.stage]:
        trainers.append(TrackerTrainer(model, split.train, split.held_out,
                                       clip_length=args.clip_length, max_objects=args.max_objects,
                                       clips_per_step=args.batch_size, **common))
    resume_dir = resume_path(args.out)
    if workers.main and not args.resume:
        shutil.rmtree(resume_dir, ignore_errors=True)  # a fresh run
    fingerprint = {k: v for k, v in _jsonable(vars(args)).items() if k not in RUN_INDEPENDENT_ARGUMENTS}
    reports: list[StageReport] = []
    for index, trainer in zip(STAGES[args.stage], trainers):
        resume = StageResume(resume_dir / f"stage{index}.pt", args.checkpoint_every, workers.main, fingerprint,
                             continue_saved=args.resume)
        reports.append(run_stage(trainer, args.steps, args.eval_every, args.patience,
                                 progress=not args.no_progress and workers.main, resume=resume))
        say(reports[-1].summary())

    report = {
        "base_model_version": base_version, "builder": builder, "image_size": model.image_size,
        "ontology_version": ontology.version, "arguments": _jsonable(vars(args)),
        "data": {"directories": data.shards, "frames": len(data.frames),
                 "skipped": [vars(s) for s in data.skipped], "unknown_labels": data.unknown_labels},
        "split": {"by": split.by, "train_frames": len(split.train),
                  "held_out_frames": len(split.held_out), "train_units": list(split.train_units),
                  "held_out_units": list(split.held_out_units)},
        "stages": [r.as_dict() for r in reports],
        "wall_seconds": round(time.time() - started, 1), "ranks": workers.world,
    }
    if not workers.main:
        return 0  # rank 0 writes; its weights are every rank's
    version = save_checkpoint(model, args.out, builder, extra=report)
    report["model_version"] = version
    report_file = report_path(args.out)
    atomic_write_bytes(report_file, json.dumps(report, indent=1).encode())
    shutil.rmtree(resume_dir, ignore_errors=True)  # done: nothing left to resume
    say(f"checkpoint: {args.out} (model_version {version})\nreport: {report_file}")
    return 0


def _base_model(args: argparse.Namespace, device: torch.device) -> tuple[Sam3Model, dict]:
    if args.base == "small":
        builder = small_builder(image_size=args.image_size or DEFAULT_SMALL_IMAGE_SIZE, seed=args.seed)
        return build_small_sam3(**builder["kwargs"], device=device), builder
    path = Path(args.base)
    if is_finetune_checkpoint(path):
        model, builder = load_checkpoint(path, device), read_checkpoint(path)["builder"]
    else:
        model, builder = build_sam3(path, device), {"kind": "full"}
    if args.image_size not in (None, model.image_size):
        raise UsageError(f"--image-size {args.image_size}: the base {path} is a "
                         f"{model.image_size}px model")
    return model, builder


def _listing(units: tuple[str, ...], limit: int = 6) -> str:
    return ", ".join(units) if len(units) <= limit else f"{len(units)} units"


def _jsonable(values: dict) -> dict:
    return {key: [str(v) for v in value] if isinstance(value, list) else
            str(value) if isinstance(value, Path) else value for key, value in values.items()}


if __name__ == "__main__":
    raise SystemExit(main())
