"""TensorRT engine cache: key digests, exact-match lookup, atomic and corruption-safe entries,
rebuild reasons. Pure Python: no TensorRT or GPU needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from segmentation_node.sam3_backend.engine_cache import (KEY_FILE, PLAN_FILE, EngineCache,
                                                         EngineKey)

BASE = dict(stage="backbone", onnx_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3",
            compute_capability="9.0", tensorrt_version="10.3.0", precision="fp16",
            input_shapes={"images": [2, 3, 1008, 1008]},
            builder_options={"workspace_mib": 4096, "calibration_sha256": None})
# One changed value per key field (builder options and shapes: a changed, an added entry).
CHANGES = {
    "stage": {"stage": "detector"},
    "onnx_sha256": {"onnx_sha256": "b" * 64},
    "gpu_name": {"gpu_name": "NVIDIA H200"},
    "compute_capability": {"compute_capability": "8.9"},
    "tensorrt_version": {"tensorrt_version": "10.4.0"},
    "precision": {"precision": "int8"},
    "input_shapes": {"input_shapes": {"images": [4, 3, 1008, 1008]}},
    "builder_options": {"builder_options": {"workspace_mib": 8192, "calibration_sha256": None}},
}


def key(**changes) -> EngineKey:
    return EngineKey.create(**{**BASE, **changes})


def test_same_key_same_digest_in_any_order_and_process():
    reordered = EngineKey.create(**{**BASE, "builder_options": {
        "calibration_sha256": None, "workspace_mib": 4096}})
    assert key().digest() == reordered.digest() == key().digest()
    assert len(key().digest()) == 64 and int(key().digest(), 16) >= 0
    # Stable across interpreters (no hash randomisation in the digest).
    script = ("import sys, json\n"
              "from segmentation_node.sam3_backend.engine_cache import EngineKey\n"
              "print(EngineKey.create(**json.loads(sys.argv[1])).digest())")
    other = subprocess.run([sys.executable, "-c", script, json.dumps(BASE)], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"})
    assert other.stdout.strip() == key().digest()


def test_every_field_changes_the_digest():
    assert set(CHANGES) == {field.name for field in fields(EngineKey)}  # no field left untested
    digests = {name: key(**change).digest() for name, change in CHANGES.items()}
    assert key().digest() not in digests.values()
    assert len(set(digests.values())) == len(CHANGES)
    added_option = key(builder_options={**BASE["builder_options"], "fp8": True})
    added_input = key(input_shapes={**BASE["input_shapes"], "mask": [2, 32]})
    assert len({key().digest(), added_option.digest(), added_input.digest()}) == 3


def test_key_round_trips_through_json_and_rejects_bad_values():
    assert EngineKey.from_json(json.loads(json.dumps(key().to_json()))) == key()
    with pytest.raises(ValueError, match="precision must be one of"):
        key(precision="bf16")
    with pytest.raises(ValueError, match="invalid stage"):
        key(stage="../escape")


def test_lookup_returns_only_an_exact_match(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.lookup(key()) is None
    plan = cache.store(key(), b"plan bytes")
    assert plan == tmp_path / "backbone" / key().digest() / PLAN_FILE
    assert cache.lookup(key()) == plan and plan.read_bytes() == b"plan bytes"
    for change in CHANGES.values():
        assert cache.lookup(key(**change)) is None
    record = json.loads((plan.parent / KEY_FILE).read_text())
    assert record["key"] == key().to_json() and record["plan_bytes"] == len(b"plan bytes")
    assert not [p for p in (tmp_path / "backbone").iterdir() if p.name.startswith(".")]


def test_get_or_build_builds_once_per_key(tmp_path):
    cache = EngineCache(tmp_path)
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"engine %d" % len(builds)

    first, built = cache.get_or_build(key(), build)
    again, built_again = cache.get_or_build(key(), build)
    assert (built, built_again, len(builds)) == (True, False, 1) and first == again
    other, built_other = cache.get_or_build(key(precision="fp32"), build)
    assert built_other and other != first and other.read_bytes() == b"engine 2"
    assert [entry.key for entry in cache.entries("backbone")] == [key(precision="fp32"), key()]


@pytest.mark.parametrize("damage", ["truncated plan", "flipped plan byte", "missing plan",
                                    "garbage key.json", "missing key.json",
                                    "key of another digest"])
def test_corrupt_or_half_written_entry_is_ignored_and_replaced(tmp_path, damage):
    cache = EngineCache(tmp_path)
    plan = cache.store(key(), b"0123456789")
    key_file = plan.parent / KEY_FILE
    if damage == "truncated plan":
        plan.write_bytes(b"01234")
    elif damage == "flipped plan byte":
        plan.write_bytes(b"0123456780")
    elif damage == "missing plan":
        plan.unlink()
    elif damage == "garbage key.json":
        key_file.write_text('{"format": 1, "key": ')
    elif damage == "missing key.json":
        key_file.unlink()
    else:
        record = json.loads(key_file.read_text())
        record["key"]["precision"] = "fp32"
        key_file.write_text(json.dumps(record))
    assert cache.lookup(key()) is None
    assert cache.entries("backbone") == []
    rebuilt, built = cache.get_or_build(key(), lambda: b"fresh plan")
    assert built and rebuilt == plan and rebuilt.read_bytes() == b"fresh plan"
    assert cache.lookup(key()) == plan


def test_leftover_temporary_folders_are_not_entries(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(key(), b"plan")
    stray = tmp_path / "backbone" / ".tmp-crashed"
    stray.mkdir()
    (stray / PLAN_FILE).write_bytes(b"half")
    assert [entry.key for entry in cache.entries("backbone")] == [key()]


def test_describe_names_the_changed_fields(tmp_path):
    cache = EngineCache(tmp_path)
    assert "no cached engine" in cache.describe(key())
    cache.store(key(), b"plan")
    assert "matches" in cache.describe(key())
    reason = cache.describe(key(precision="int8", tensorrt_version="10.4.0"))
    assert "rebuild" in reason and "precision fp16 -> int8" in reason
    assert "tensorrt_version 10.3.0 -> 10.4.0" in reason and "gpu_name" not in reason
    assert "onnx_sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb" in cache.describe(key(onnx_sha256="b" * 64))
    assert "input_shapes[images] 2x3x1008x1008 -> 4x3x1008x1008" in cache.describe(
        key(input_shapes={"images": [4, 3, 1008, 1008]}))
    assert "builder_options[fp8] unset -> True" in cache.describe(
        key(builder_options={**BASE["builder_options"], "fp8": True}))
    # Compared with the newest entry of the stage.
    cache.store(key(precision="fp32"), b"plan")
    assert "precision fp32 -> int8" in cache.describe(key(precision="int8"))
    assert "no cached engine" in cache.describe(key(stage="detector"))
