"""Test stand-in: the real segmentation node whose real backend is wrapped to inject faults.

    WORKCELL_FAULT_RAISE_AT=3,4   process() calls (1-based) that raise
    WORKCELL_FAULT_DELAY_S=0.6    seconds every process() call takes on top of the real work
"""
import os
import sys
import time


from segmentation_node.ros.runner import run_node
from segmentation_node.ros.segmentation import SegmentationNode


class FaultInjectingBackend:
    def __init__(self, inner, raise_at: set[int], delay_s: float):
        self.inner, self.raise_at, self.delay_s, self.calls = inner, raise_at, delay_s, 0
        self.name, self.model_version = inner.name, f"{inner.model_version}+faults"

    def process(self, views, prompts, keyframe):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.calls in self.raise_at:
            raise RuntimeError(f"injected backend fault at call {self.calls}")
        return self.inner.process(views, prompts, keyframe)

    def reset(self):
        self.inner.reset()


class FaultySegmentationNode(SegmentationNode):
    def _build_backend(self):
        backend, commissioning = super()._build_backend()
        raise_at = {int(v) for v in os.environ.get("WORKCELL_FAULT_RAISE_AT", "").split(",") if v}
        return FaultInjectingBackend(backend, raise_at, float(os.environ.get("WORKCELL_FAULT_DELAY_S", "0"))), \
            commissioning


if __name__ == "__main__":
    sys.exit(run_node("segmentation", __doc__, FaultySegmentationNode, None))
