"""What a cell is commissioned with, in one file the segmentation node loads: per camera the
calibration (intrinsics, pose in the workcell frame), the empty-cell background, the pick zone
and the largest area a part covers; and the classical channel's colour classifier (untrained for
a cell commissioned from a recording: the classical backend then names nothing, the intrusion
monitor works all the same)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.perception.classical import BackgroundModel, ClassicalBackend, ColorClassifier
from segmentation_node.perception.intrusion import IntrusionMonitor, ZoneView
from segmentation_node.perception.tracking import ViewGeometry


@dataclass(frozen=True, eq=False)
class CameraCommissioning:
    geometry: ViewGeometry
    background: BackgroundModel
    zone: np.ndarray  # H x W bool
    max_part_area: int  # pixels; a changed region three times larger is not a part


@dataclass(frozen=True, eq=False)
class Commissioning:
    cameras: dict[str, CameraCommissioning]
    classifier: ColorClassifier
    part_classes: tuple[str, ...]
    static_classes: tuple[str, ...]  # in the empty-cell background (fixtures)

    def geometry(self) -> dict[str, ViewGeometry]:
        return {name: camera.geometry for name, camera in self.cameras.items()}

    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """(rows, columns) each camera was commissioned at; other sizes are bad input."""
        return {name: camera.zone.shape for name, camera in self.cameras.items()}

    def classical_backend(self) -> ClassicalBackend:
        backgrounds = {name: camera.background for name, camera in self.cameras.items()}
        return ClassicalBackend(self.classifier, backgrounds, self.part_classes, self.static_classes)

    def intrusion_monitor(self) -> IntrusionMonitor:
        """Runs beside any backend."""
        return IntrusionMonitor({name: ZoneView(camera.background, camera.zone, camera.max_part_area)
                                 for name, camera in self.cameras.items()})

    def save(self, path: Path) -> None:
        arrays = {"classes": np.array(self.classifier.classes), "table": self.classifier.table,
                  "confidence": self.classifier.confidence}
        for name, camera in self.cameras.items():
            arrays[f"{name}/intrinsics"] = camera.geometry.intrinsics
            arrays[f"{name}/world_from_camera"] = camera.geometry.world_from_camera
            arrays[f"{name}/median"] = camera.background.median
            arrays[f"{name}/spread"] = camera.background.spread
            arrays[f"{name}/zone"] = camera.zone
        meta = {"cameras": list(self.cameras), "part_classes": list(self.part_classes),
                "static_classes": list(self.static_classes),
                "typical_area": self.classifier.typical_area,
                "defect_bands": {label: list(band) for label, band in self.classifier.defect_bands.items()},
                "thresholds": {n: c.background.threshold for n, c in self.cameras.items()},
                "max_part_area": {n: c.max_part_area for n, c in self.cameras.items()}}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta)), **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "Commissioning":
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                classifier = ColorClassifier(tuple(str(c) for c in data["classes"]), data["table"],
                                             data["confidence"], meta["typical_area"],
                                             {label: tuple(band) for label, band in meta.get("defect_bands", {}).items()})
                cameras = {name: CameraCommissioning(
                    ViewGeometry(data[f"{name}/intrinsics"], data[f"{name}/world_from_camera"]),
                    BackgroundModel(data[f"{name}/median"], data[f"{name}/spread"], meta["thresholds"][name]),
                    data[f"{name}/zone"], int(meta["max_part_area"][name])) for name in meta["cameras"]}
        except FileNotFoundError:
            raise FileNotFoundError(f"commissioning file not found: {path}") from None
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(f"{path} is not a commissioning file of this version (missing or bad {error}); "
                             "run workcell_commission again") from None
        return cls(cameras, classifier, tuple(meta["part_classes"]), tuple(meta["static_classes"]))
