"""A segmentation backend by name, as the node's `backend` parameter and the offline tools
(`workcell_regression record`) choose it. ROS-free: the node and the tools build the same thing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segmentation_node.perception.commissioning import Commissioning
from segmentation_node.perception.types import SegmentationBackend
from segmentation_node.sam3_backend.input_size import check_image_size

BACKENDS = ("classical", "sam3", "sam3_trt", "sam3_small")
CHECKPOINT_BACKENDS = ("sam3", "sam3_trt")  # served from a checkpoint or a model registry
PRECISIONS = ("fp16", "fp32", "int8", "fp8")


@dataclass(frozen=True)
class BackendSpec:
    name: str
    checkpoint: str = ""
    model_registry: str = ""
    model_version: str = ""  # empty: the registry's promoted version
    engine_cache: str = ""
    precision: str = "fp16"
    calibration_images: str = ""
    views: int = 1  # TensorRT engines are built for this many views
    image_size: int = 0  # square model input in px; 0: the model's own (1008 full size)
    max_objects: int = 16  # tracked objects per view

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got '{self.name}'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got '{self.precision}'")
        if self.image_size:  # 0: the model's own
            check_image_size(self.image_size, "image_size")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1; got {self.max_objects}")
        if self.model_registry and self.name not in CHECKPOINT_BACKENDS:
            raise ValueError(f"a model registry serves {' or '.join(CHECKPOINT_BACKENDS)}; the backend is '{self.name}'")
        if self.name in CHECKPOINT_BACKENDS and not self.model_registry \
                and not Path(self.checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"backend '{self.name}' needs a model registry or an existing checkpoint "
                                    f"file; got '{self.checkpoint}' (weights are never downloaded)")

    def build(self, commissioning: Commissioning | None) -> tuple[SegmentationBackend, str]:
        """(backend, registry version it serves or "")."""
        if self.name == "classical":
            if commissioning is None:
                raise ValueError("backend 'classical' needs a commissioning file (see workcell_commission)")
            return commissioning.classical_backend(), ""
        from segmentation_node.sam3_backend.builder import build_sam3, build_small_sam3

        if self.name == "sam3_trt":  # before loading gigabytes of weights
            from segmentation_node.sam3_backend.trt_engine import require_tensorrt_and_gpu

            require_tensorrt_and_gpu()
        if self.name == "sam3_small":
            return self.wrap(build_small_sam3()), ""
        if self.model_registry:
            from segmentation_node.registry import ModelRegistry, load_registered_model

            entry, model = load_registered_model(ModelRegistry(self.model_registry), self.model_version)
            return self.wrap(model), entry.version
        return self.wrap(build_sam3(Path(self.checkpoint).expanduser())), ""

    def wrap(self, model) -> SegmentationBackend:
        """A SAM3 model behind the backend interface at the configured input size: torch, or
        TensorRT engines (built or reused; their cache key holds the size)."""
        if self.image_size and self.image_size != model.image_size:
            from segmentation_node.sam3_backend.builder import resize_input

            resize_input(model, self.image_size)
        if self.name == "sam3_trt":
            from segmentation_node.sam3_backend.trt_backend import build_trt_backend

            return build_trt_backend(model, Path(self.engine_cache).expanduser(), self.precision,
                                     views=self.views, calibration_images=self.calibration_images or None,
                                     max_objects=self.max_objects)
        from segmentation_node.sam3_backend.backend import Sam3Backend

        return Sam3Backend(model, max_objects=self.max_objects)
