"""720p camera frames reach the segmentation node's image subscription from another process (issue 13).

A camera stand-in (this module run as `python -m tests.ros.test_transport`) publishes 1280x720
rgb8 sensor_msgs/Image at 15 Hz with rclpy's sensor-data QoS (best effort, keep last 5,
volatile), the QoS camera drivers commonly offer; a reliable driver publisher reaches a
best-effort subscription best effort too, so the transport sees the same traffic. This process
subscribes with exactly the node's image QoS (contract SENSOR) and counts the distinct frames.

Fast DDS sends from the SENDER's shared-memory segment, 512 KiB by default: a 2.7 MB frame does
not fit and most frames are lost (README "Transport"). The stand-in runs with the shipped
config/fastdds.xml, as a camera driver on the robot must. Event-driven: the stand-in sends only
once both ends have matched and reports when it has sent everything; the subscription then
drains (all frames in, or nothing more arriving for QUIET_S) and the stand-in exits.

Run without the profile (measurement, not a test):
    python -m tests.ros.test_transport --measure [--no-profile] [--width 640 --height 480]
"""
from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "fastdds.xml"
# Fast DDS 3.x (Kilted on) reads the first, 2.x (Humble, Jazzy) the second.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
CAMERA = "cam_top"
WIDTH, HEIGHT = 1280, 720
FRAMES = 45
RATE_HZ = 15.0
MIN_RECEIVED = 0.95
# Ends the wait for frames lost in transport (they never come); never decides a pass.
QUIET_S = 1.0
TIMEOUT_S = 30.0
VIEWS, DEPTH = 4, 5  # what the profile's segment is sized for
FRAGMENT_BYTES = 65_500  # largest RTPS message: UDPv4's limit caps shared memory's too


@dataclass
class Outcome:
    sent: int
    received: set[int]
    malformed: int
    publisher_report: str
    seconds: float

    @property
    def missing(self) -> list[int]:
        return sorted(set(range(self.sent)) - self.received)

    def __str__(self) -> str:
        missing = self.missing
        shown = missing if len(missing) <= 10 else f"{len(missing)} frames"
        return (f"received {len(self.received)}/{self.sent}, malformed {self.malformed}, missing {shown}, "
                f"{self.seconds:.1f} s; stand-in: {self.publisher_report}")


def profile_env(profile: Path | None) -> dict[str, str | None]:
    """Environment entries that make a process use `profile` (None: Fast DDS defaults)."""
    return {name: (str(profile) if profile else None) for name in PROFILE_VARIABLES}


# --- camera stand-in (the other process) ---------------------------------------------------------

def publish_frames(topic: str, width: int, height: int, frames: int, rate_hz: float) -> int:
    """Wait for a subscriber, print READY, wait for GO on stdin, publish `frames` at `rate_hz`."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from segmentation_node.ros.messages import stamp_of

    rclpy.init()
    node = rclpy.create_node("camera_stand_in")
    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    try:
        while publisher.get_subscription_count() < 1:
            rclpy.spin_once(node, timeout_sec=0.05)
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "GO":
            return 2
        start = time.monotonic()
        late = 0
        for sequence in range(frames):
            due = start + sequence / rate_hz
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)  # pacing like a camera, not a correctness condition
            elif now - due > 0.5 / rate_hz:
                late += 1
            pixels[0, 0, 0] = sequence % 256  # with the size, tells a whole frame from a torn one
            publisher.publish(Image(
                header=Header(stamp=stamp_of(time.time_ns()), frame_id=str(sequence)), height=height,
                width=width, encoding="rgb8", is_bigendian=0, step=width * 3, data=pixels.tobytes()))
        print(f"sent {frames} in {time.monotonic() - start:.2f} s, {late} late", flush=True)
        # Stay up, as a camera driver does, until the test has drained: a writer that leaves
        # can be dropped by the reader before its last frame is read.
        sys.stdin.readline()
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# --- the node's side (this process) ----------------------------------------------------------------

def stream(node, width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES, rate_hz: float = RATE_HZ,
           profile: Path | None = PROFILE, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run the camera stand-in (with `profile`) against a subscription of `node` at the node's image QoS."""
    import rclpy
    from sensor_msgs.msg import Image

    from segmentation_node.contract import SEGMENTATION_NODE
    from segmentation_node.ros.messages import endpoint_qos

    topic = f"transport_{width}x{height}/{CAMERA}/image_raw"
    received: set[int] = set()
    malformed = [0]

    def on_image(message: Image) -> None:
        sequence = int(message.header.frame_id)
        if (message.width, message.height, len(message.data)) != (width, height, width * height * 3) \
                or message.data[0] != sequence % 256:
            malformed[0] += 1
        received.add(sequence)

    subscription = node.create_subscription(Image, topic, on_image,
                                            endpoint_qos(SEGMENTATION_NODE, "{camera}/image_raw"))
    env = {**os.environ, **profile_env(profile)}
    env = {name: value for name, value in env.items() if value is not None}
    command = [sys.executable, "-m", "tests.ros.test_transport", "--topic", topic, "--width", str(width),
               "--height", str(height), "--frames", str(frames), "--rate", str(rate_hz)]
    log = tempfile.TemporaryFile(mode="w+")  # the stand-in's ROS log, shown on failure
    process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()
    start = time.monotonic()
    deadline = start + timeout_s

    def failure(what: str) -> str:
        log.seek(0)
        return f"{what}; stand-in exit code {process.poll()}, its output:\n{log.read()}"

    def spin_while(condition, what: str) -> None:
        while condition():
            assert time.monotonic() < deadline, failure(f"timed out waiting for {what}")
            rclpy.spin_once(node, timeout_sec=0.05)

    try:
        # READY: the stand-in matched our subscription. GO once we matched it: no frame is sent
        # before both ends know each other.
        spin_while(lines.empty, "the stand-in to match the subscription")
        assert lines.get() == "READY", failure("camera stand-in did not start")
        spin_while(lambda: subscription.get_publisher_count() < 1, "the subscription to match the stand-in")
        process.stdin.write("GO\n")
        process.stdin.flush()
        spin_while(lambda: lines.empty() and process.poll() is None, "the stand-in to send its frames")
        report = lines.get() if not lines.empty() else ""
        assert report.startswith("sent"), failure("camera stand-in failed")
        # Everything it wrote is in shared memory or a socket now: drain until every frame is in
        # or nothing more arrives for QUIET_S. Then let it exit.
        quiet_until = time.monotonic() + QUIET_S
        while len(received) < frames and time.monotonic() < quiet_until:
            before = len(received)
            rclpy.spin_once(node, timeout_sec=0.05)
            if len(received) > before:
                quiet_until = time.monotonic() + QUIET_S
        process.stdin.close()
        spin_while(lambda: process.poll() is None, "the stand-in to exit")
        assert process.returncode == 0, failure("camera stand-in failed")
        return Outcome(frames, received, malformed[0], report, time.monotonic() - start)
    finally:
        node.destroy_subscription(subscription)
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


# --- tests ------------------------------------------------------------------------------------------

def test_profile_segment_holds_the_views_in_flight():
    """The shipped profile replaces the built-in transports by a large SHM segment plus UDPv4."""
    root = ElementTree.parse(PROFILE).getroot()
    for element in root.iter():
        element.tag = element.tag.split("}")[-1]  # drop the eProsima namespace
    descriptors = {d.findtext("transport_id"): d for d in root.iter("transport_descriptor")}
    by_type = {d.findtext("type"): d for d in descriptors.values()}
    assert set(by_type) == {"SHM", "UDPv4"}
    segment_size = int(by_type["SHM"].findtext("segment_size"))
    assert segment_size >= 1.15 * VIEWS * DEPTH * WIDTH * HEIGHT * 3
    # The receiving port's queue can reference every fragment a full segment holds.
    assert int(by_type["SHM"].findtext("port_queue_capacity")) >= segment_size // FRAGMENT_BYTES

    (participant,) = root.iter("participant")
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext("rtps/useBuiltinTransports") == "false"
    assert sorted(t.text for t in participant.iterfind("rtps/userTransports/transport_id")) == sorted(descriptors)


def test_720p_frames_reach_the_node_qos_subscription():
    import rclpy

    rclpy.init()
    try:
        node = rclpy.create_node("transport_test")
        try:
            outcome = stream(node)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    print(outcome)  # shown with pytest -rP
    assert outcome.malformed == 0, str(outcome)
    assert len(outcome.received) >= MIN_RECEIVED * outcome.sent, str(outcome)


# --- entry point: the stand-in, or a measurement -----------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="camera stand-in and measurement for tests/ros/test_transport.py")
    parser.add_argument("--topic", help="run as the camera stand-in publishing on this topic")
    parser.add_argument("--measure", type=int, nargs="?", const=3, metavar="RUNS",
                        help="subscribe here and run the stand-in RUNS times (default 3)")
    parser.add_argument("--no-profile", action="store_true", help="measure: stand-in without config/fastdds.xml")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rate", type=float, default=RATE_HZ)
    args = parser.parse_args(argv)
    if args.topic:
        return publish_frames(args.topic, args.width, args.height, args.frames, args.rate)
    if not args.measure:
        parser.error("give --topic (stand-in) or --measure")
    import rclpy

    # A domain of its own, as tests/conftest.py picks for a test run; the stand-in inherits it.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    rclpy.init()
    node = rclpy.create_node("transport_measure")
    profile = None if args.no_profile else PROFILE
    for _ in range(args.measure):
        outcome = stream(node, args.width, args.height, args.frames, args.rate, profile=profile)
        print(f"{args.width}x{args.height} profile={profile or 'none'}: {outcome}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
