"""workcell_regression: guard every model or code change with recorded bags.

    workcell_regression record --bag cell_bag --commissioning cell.npz --out golden_bag
        [--backend classical|sam3|sam3_trt|sam3_small] [--checkpoint sam3.pt | --model-registry DIR]
    workcell_regression live --bag cell_bag --cameras cam_top,cam_left --out run_bag [--rate 0.5]
    workcell_regression compare golden_bag candidate_bag [--min-iou 0.9]

`record` runs a recording's camera images through the ROS-free pipeline (the offline mode: no
DDS, same code as the node: its synchronizer and slop, the chosen backend and the intrusion
monitor of the commissioned cell) and writes the frame-set results to a bag. `live` replays the
recording to the running segmentation node over DDS at the recorded pace times `--rate` and
records the node's results (segmentation_node/ros/replay.py; start that node with
`gate_node:=regression_replay`: the replay stands in for the gate). `compare` checks two
result bags frame set by frame set: the same decisions (actionable, reason codes), a consistent
one-to-one track id mapping, and mask IoU of every matched instance at least `min_iou`. It reads
any bag with FrameSetResult messages, so results recorded from a live node with
`ros2 bag record` compare the same way.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from rosbags.rosbag2 import StoragePlugin, Writer

from segmentation_node.backends import BACKENDS, BackendSpec
from segmentation_node.bag_records import (FrameSetRecord, InstanceRecord, ViewRecord, from_message, header_ns,
                                           read_messages, ros2_typestore, to_message)
from segmentation_node.contract import PACKAGE
from segmentation_node.perception.actionability import Conditions
from segmentation_node.image_codec import to_rgb
from segmentation_node.perception.commissioning import Commissioning
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.masks import greedy_match
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.perception.pipeline import PerceptionPipeline
from segmentation_node.perception.types import CameraFrame
from segmentation_node.sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S, ApproximateSync

RESULT_TOPIC = "/frame_set"


def recorded_images(bag: Path, cameras: list[str]) -> Iterator[tuple[int, str, object]]:
    """(receive time ns, camera, rosbags Image) of the recording's camera topics, in bag order;
    ValueError naming a camera topic the recording lacks."""
    topics = {f"/{camera}/image_raw": camera for camera in cameras}
    for timestamp, topic, message in read_messages(bag, topics, "the cameras"):
        yield timestamp, topics[topic], message


def synchronized(recorded: Iterable[tuple[int, str, object]], cameras: list[str], slop_s: float = DEFAULT_SLOP_S,
                 queue_size: int = DEFAULT_QUEUE_SIZE) -> Iterator[list[object]]:
    """Frame sets of recorded images (messages, in `cameras` order) as the node assembles them:
    the same approximate-time synchronizer, slop and queue, in recording order."""
    index = {camera: position for position, camera in enumerate(cameras)}
    ready: list[list[object]] = []
    sync = ApproximateSync(len(cameras), queue_size, slop_s, lambda *messages: ready.append(list(messages)))
    for _, camera, message in recorded:
        sync.add(index[camera], header_ns(message.header), message)
        while ready:
            yield ready.pop(0)


def frame_set_stamp(messages: list[object]) -> int:
    """A frame set's stamp, as the node publishes it: its newest view's."""
    return max(header_ns(m.header) for m in messages)


def camera_frame_sets(bag: Path, cameras: list[str], slop_s: float = DEFAULT_SLOP_S
                      ) -> Iterator[tuple[int, list[CameraFrame]]]:
    """(stamp, views) of the recording, as the node assembles and stamps them."""
    for messages in synchronized(recorded_images(bag, cameras), cameras, slop_s):
        yield frame_set_stamp(messages), [CameraFrame(camera, header_ns(m.header), to_rgb(m), m.header.frame_id)
                                          for camera, m in zip(cameras, messages)]


def run_offline(bag: Path, commissioning: Commissioning, intent_text: str,
                backend: BackendSpec = BackendSpec("classical")) -> list[FrameSetRecord]:
    """The recording's frame sets through the pipeline the node runs: the chosen backend with the
    intrusion monitor of the commissioned cell beside it."""
    ontology = load_ontology()
    pipeline = PerceptionPipeline(backend.build(commissioning)[0], ontology, commissioning.geometry(),
                                  intrusion=commissioning.intrusion_monitor())
    pipeline.set_intent(resolve_intent(intent_text, ontology))
    records = []
    for sequence, (stamp, frames) in enumerate(camera_frame_sets(bag, list(commissioning.cameras)), start=1):
        outcome = pipeline.process(frames, Conditions.offline())
        views = tuple(ViewRecord(
            f.camera, f.frame_id, f.stamp_ns, f.image.shape[0], f.image.shape[1],
            tuple(InstanceRecord(i.track_id, i.label, i.role, i.score, i.mask, i.attributes, i.source, i.stability,
                                 i.prompt) for i in outcome.views[f.camera])) for f in frames)
        records.append(FrameSetRecord(stamp, views, outcome.verdict.actionable, outcome.verdict.reasons,
                                      outcome.verdict.confidence, sequence, pipeline.backend.model_version,
                                      ontology.version, outcome.inference_ms))
    return records


def write_records(records: list[FrameSetRecord], out: Path, topic: str = RESULT_TOPIC) -> Path:
    """A bag of FrameSetResult messages, moved into place only once complete."""
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another output or remove it")
    scratch = out.with_name(f".{out.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    typestore = ros2_typestore()
    with Writer(scratch / out.name, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, f"{PACKAGE}/msg/FrameSetResult", typestore=typestore)
        for record in records:
            writer.write(connection, record.stamp_ns, typestore.serialize_cdr(to_message(record, typestore),
                                                                              connection.msgtype))
    (scratch / out.name).rename(out)
    scratch.rmdir()
    return out


def read_records(bag: Path, topic: str = RESULT_TOPIC) -> list[FrameSetRecord]:
    return [from_message(message) for _, _, message in read_messages(bag, [topic], "frame-set results")]


@dataclass
class Comparison:
    min_iou: float
    compared: int = 0
    missing: list[int] = field(default_factory=list)   # golden stamps without a candidate result
    problems: list[str] = field(default_factory=list)
    worst_iou: float = 1.0
    instances: int = 0

    @property
    def passed(self) -> bool:
        return self.compared > 0 and not self.missing and not self.problems

    def report(self) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'}: {self.compared} frame sets compared, "
                 f"{self.instances} instances, worst mask IoU {self.worst_iou:.3f} (min {self.min_iou:.2f}), "
                 f"{len(self.missing)} missing, {len(self.problems)} problems"]
        lines += [f"  missing candidate result for stamp {stamp}" for stamp in self.missing[:20]]
        lines += [f"  {problem}" for problem in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


def compare(golden: list[FrameSetRecord], candidate: list[FrameSetRecord], min_iou: float = 0.9) -> Comparison:
    result = Comparison(min_iou)
    by_stamp = {record.stamp_ns: record for record in candidate}
    id_map: dict[int, int] = {}
    reverse: dict[int, int] = {}
    for gold in golden:
        other = by_stamp.get(gold.stamp_ns)
        if other is None:
            result.missing.append(gold.stamp_ns)
            continue
        result.compared += 1
        where = f"frame set {gold.stamp_ns}"
        if gold.actionable != other.actionable:
            result.problems.append(f"{where}: actionable {gold.actionable} -> {other.actionable}")
        if {c for c, _ in gold.reasons} != {c for c, _ in other.reasons}:
            result.problems.append(f"{where}: reasons {sorted(c.name for c, _ in gold.reasons)} -> "
                                   f"{sorted(c.name for c, _ in other.reasons)}")
        views = {view.camera: view for view in other.views}
        for view in gold.views:
            theirs = views.get(view.camera)
            if theirs is None:
                result.problems.append(f"{where}: view {view.camera} missing")
                continue
            _compare_view(view, theirs, f"{where} {view.camera}", result, id_map, reverse)
    return result


def _compare_view(gold: ViewRecord, other: ViewRecord, where: str, result: Comparison,
                  id_map: dict[int, int], reverse: dict[int, int]) -> None:
    for label in sorted({i.label for i in gold.instances} | {i.label for i in other.instances}):
        mine = [i for i in gold.instances if i.label == label]
        theirs = [i for i in other.instances if i.label == label]
        matches = greedy_match([i.mask for i in mine], [i.mask for i in theirs], min_iou=0.01)
        matched_mine = {i for i, _, _ in matches}
        matched_theirs = {j for _, j, _ in matches}
        result.instances += len(mine)
        for i, j, iou in matches:
            result.worst_iou = min(result.worst_iou, iou)
            a, b = mine[i], theirs[j]
            if iou < result.min_iou:
                result.problems.append(f"{where}: {label}#{a.track_id} mask IoU {iou:.3f}")
            if a.role != b.role:
                result.problems.append(f"{where}: {label}#{a.track_id} role {a.role.name} -> {b.role.name}")
            if a.track_id and (id_map.setdefault(a.track_id, b.track_id) != b.track_id
                               or reverse.setdefault(b.track_id, a.track_id) != a.track_id):
                result.problems.append(f"{where}: {label}#{a.track_id} is #{b.track_id} here, "
                                       f"#{id_map[a.track_id]} before (id mapping changed)")
        if len(matched_mine) < len(mine):
            result.worst_iou = 0.0
        result.problems += [f"{where}: {label}#{mine[i].track_id} not found" for i in range(len(mine))
                            if i not in matched_mine]
        result.problems += [f"{where}: extra {label}#{theirs[j].track_id}" for j in range(len(theirs))
                            if j not in matched_theirs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_regression", description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="run a recording through the pipeline, write the results")
    record.add_argument("--bag", type=Path, required=True, help="recording with <camera>/image_raw topics")
    record.add_argument("--commissioning", type=Path, required=True)
    record.add_argument("--intent", default="pick everything")
    record.add_argument("--backend", choices=BACKENDS, default="classical")
    record.add_argument("--checkpoint", default="", help="SAM3 checkpoint (backends sam3, sam3_trt)")
    record.add_argument("--model-registry", default="", help="registry serving the SAM3 model instead")
    record.add_argument("--model-version", default="", help="registry version (default: the promoted one)")
    record.add_argument("--out", type=Path, required=True)
    live = commands.add_parser("live", help="replay a recording to the running node (started with "
                                           "gate_node:=regression_replay), record its results")
    live.add_argument("--bag", type=Path, required=True, help="recording with <camera>/image_raw topics")
    live.add_argument("--cameras", required=True, help="comma-separated camera names, as the node has them")
    live.add_argument("--intent", default="pick everything")
    live.add_argument("--rate", type=float, default=1.0, help="replay speed factor (0.5: half speed)")
    live.add_argument("--namespace", default="", help="namespace of the segmentation node")
    live.add_argument("--out", type=Path, required=True)
    check = commands.add_parser("compare", help="compare candidate results with golden ones")
    check.add_argument("golden", type=Path)
    check.add_argument("candidate", type=Path)
    check.add_argument("--topic", default=RESULT_TOPIC, help="FrameSetResult topic (both bags)")
    check.add_argument("--min-iou", type=float, default=0.9)
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            commissioning = Commissioning.load(args.commissioning)
            backend = BackendSpec(args.backend, args.checkpoint, args.model_registry, args.model_version,
                                  views=len(commissioning.cameras))
            records = run_offline(args.bag, commissioning, args.intent, backend)
            print(f"{len(records)} frame sets -> {write_records(records, args.out)}")
            return 0
        if args.command == "live":
            from segmentation_node.ros.replay import replay_bag

            if args.out.exists():
                raise FileExistsError(f"{args.out} exists; choose another output or remove it")
            outcome = replay_bag(args.bag, [c.strip() for c in args.cameras.split(",")], args.intent, args.rate,
                                 args.namespace)
            dropped = outcome.frame_sets_sent - len(outcome.records)
            print(f"replayed {outcome.frame_sets_sent} frame sets in {outcome.seconds:.1f} s at rate {args.rate:g}: "
                  f"{len(outcome.records)} results, {dropped} without a result (dropped by a slower node: "
                  f"lower --rate) -> {write_records(outcome.records, args.out)}")
            return 0
        comparison = compare(read_records(args.golden, args.topic), read_records(args.candidate, args.topic),
                             args.min_iou)
        print(comparison.report())
        return 0 if comparison.passed else 1
    except (FileNotFoundError, FileExistsError, ValueError, TimeoutError) as error:
        print(f"workcell_regression: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
