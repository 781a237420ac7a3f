"""Fine-tune checkpoints: exact round trip, self-naming model_version, and clear refusals of
missing, corrupt or foreign files (small model at 112 px, CPU, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segmentation_node.sam3_backend.builder import build_small_sam3
from segmentation_node.sam3_backend.checkpoint import (CheckpointError, is_finetune_checkpoint,
                                                       load_checkpoint, read_checkpoint,
                                                       save_checkpoint, small_builder,
                                                       weights_sha256)
from segmentation_node.sam3_backend.predictor import Sam3Predictor
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

IMAGE_SIZE = 112
BUILDER = small_builder(image_size=IMAGE_SIZE, seed=0)


def _perturbed_model():
    """Weights that differ from what the builder's seed gives, so a passing round trip proves
    the weights were loaded, not rebuilt."""
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    with torch.no_grad():
        for module in (model.detector.segmentation_head, model.tracker.sam_mask_decoder):
            for parameter in module.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return _perturbed_model()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    version = save_checkpoint(model, path, BUILDER, extra={"note": "test"})
    return path, version


def test_round_trip_gives_identical_outputs(model, saved):
    path, version = saved
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.model_version == version
    assert version.startswith(model.model_version + "-ft-")
    assert version.endswith(weights_sha256(model)[:12])
    for part in ("detector", "tracker"):
        ours, theirs = getattr(model, part).state_dict(), getattr(loaded, part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    image = render_frame_set(generate_clip(ClipConfig(seed=3, views=2, width=128, height=96,
                                                      frames=1)), 0)[0].image
    prompts = ["metal disc", "plastic bin"]
    before = Sam3Predictor(model, score_threshold=0.0, max_detections=5).predict(image, prompts)
    after = Sam3Predictor(loaded, score_threshold=0.0, max_detections=5).predict(image, prompts)
    for a, b in zip(before, after):
        np.testing.assert_array_equal([m.to_array() for m in a.masks], [m.to_array() for m in b.masks])
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_header_and_versioning(model, saved, tmp_path):
    path, version = saved
    header = read_checkpoint(path)
    assert header["builder"] == BUILDER and header["image_size"] == IMAGE_SIZE
    assert header["extra"] == {"note": "test"}
    assert is_finetune_checkpoint(path)
    # Same weights, same name; a fine-tune of a fine-tune is named after the original base.
    loaded = load_checkpoint(path, device="cpu")
    assert save_checkpoint(loaded, tmp_path / "again.pt", BUILDER) == version
    with torch.no_grad():
        next(loaded.tracker.parameters()).add_(1.0)
    changed = save_checkpoint(loaded, tmp_path / "changed.pt", BUILDER)
    assert changed != version and changed.count("-ft-") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.pt", "changed.pt"]  # no temp left


def test_missing_empty_foreign_and_corrupt_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    assert not is_finetune_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a .* checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    path, _ = saved
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["tracker"]))
    payload["tracker"][name] = payload["tracker"][name] + 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "tampered.pt")
    payload = torch.load(path, weights_only=True)
    payload["detector"].pop(next(iter(payload["detector"])))
    torch.save(payload, tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "truncated.pt")


def test_builder_must_describe_the_model(model, tmp_path):
    with pytest.raises(CheckpointError, match="224px"):
        save_checkpoint(model, tmp_path / "x.pt", small_builder(image_size=224))
    with pytest.raises(CheckpointError, match="kind"):
        save_checkpoint(model, tmp_path / "x.pt", {"kind": "tiny"})
    with pytest.raises(ValueError, match="not build_small_sam3"):
        small_builder(image_size=IMAGE_SIZE, device="cpu")


@pytest.mark.slow
def test_full_size_round_trip(tmp_path):
    from segmentation_node.sam3_backend.builder import build_full_size_sam3_random

    model = build_full_size_sam3_random(seed=0)
    version = save_checkpoint(model, tmp_path / "full.pt", {"kind": "full"})
    loaded = load_checkpoint(tmp_path / "full.pt", device="cpu")
    assert loaded.model_version == version and loaded.image_size == model.image_size
    assert weights_sha256(loaded) == weights_sha256(model)
