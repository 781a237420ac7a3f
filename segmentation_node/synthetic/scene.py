"""A seeded, 3D-consistent workcell clip: bin, parts of two SKUs (some defective), fixtures, a
tool, and a hand that enters, reaches and leaves; parts get picked and their neighbours shift.

Everything here is geometry and time; `render` turns a frame into images and ground truth.
One physical object has one track id for the whole clip and in every camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segmentation_node.contract import Role
from segmentation_node.synthetic.camera import PinholeCamera, camera_rig
from segmentation_node.synthetic.geometry import Box, Capsule, Cylinder, yaw_rotation

DEFECTIVE = "defective"
DEFAULT_ROLES = {"part_a": Role.TARGET, "part_b": Role.TARGET, "hand": Role.FORBIDDEN,
                 "tool": Role.FORBIDDEN, "fixture": Role.FORBIDDEN, "bin": Role.IGNORE}


@dataclass(frozen=True)
class Material:
    color: tuple[float, float, float]  # linear RGB in [0, 1]
    specular: float = 0.1
    shininess: float = 10.0


TABLE = Material((0.55, 0.47, 0.38), 0.05, 5.0)
STEEL = Material((0.70, 0.72, 0.76), 0.9, 60.0)
BLUE_PLASTIC = Material((0.14, 0.33, 0.74), 0.25, 14.0)
BIN_PLASTIC = Material((0.30, 0.40, 0.34), 0.05, 6.0)
FIXTURE_PAINT = Material((0.95, 0.66, 0.10), 0.3, 20.0)
TOOL_HANDLE = Material((0.80, 0.10, 0.12), 0.3, 20.0)
SKIN = Material((0.86, 0.62, 0.50), 0.08, 8.0)
DEFECT_COLOR = (0.10, 0.07, 0.05)


@dataclass(frozen=True)
class DefectMark:
    """A dark scratch on the top face of a solid, in that solid's local frame (metres)."""

    offset_y: float
    half_length: float
    half_width: float = 0.0025


@dataclass(frozen=True, eq=False)
class Surface:
    solid: Box | Cylinder | Capsule
    material: Material
    defect: DefectMark | None = None


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One physical object at one instant."""

    track_id: int
    label: str
    surfaces: tuple[Surface, ...]
    center: np.ndarray  # world point inside the object, for projection checks
    attributes: tuple[str, ...] = ()

    @property
    def role(self) -> Role:
        return DEFAULT_ROLES[self.label]


@dataclass(frozen=True)
class Lighting:
    direction: np.ndarray  # unit vector towards the light
    intensity: float
    ambient: float


@dataclass(frozen=True, eq=False)
class FrameState:
    index: int
    stamp_ns: int
    objects: tuple[SceneObject, ...]
    lighting: Lighting
    events: tuple[str, ...] = ()  # what changed at this frame, for people and logs


@dataclass(frozen=True)
class ClipConfig:
    seed: int = 7
    views: int = 3
    width: int = 640
    height: int = 480
    frames: int = 40
    rate_hz: float = 10.0
    parts: int = 9
    picks: int = 2
    hand: bool = True
    tool: bool = True       # a screwdriver left beside the bin
    stacking: bool = True
    start_stamp_ns: int = 1_700_000_000_000_000_000

    def __post_init__(self):
        if not 2 <= self.views <= 4:
            raise ValueError(f"views must be 2..4, got {self.views}")
        if self.width < 64 or self.height < 48:
            raise ValueError(f"image size {self.width}x{self.height} is too small (min 64x48)")
        if self.frames < 1 or self.rate_hz <= 0:
            raise ValueError("frames must be >= 1 and rate_hz > 0")
        if not 0 <= self.picks <= self.parts <= 20:
            raise ValueError("need 0 <= picks <= parts <= 20")


@dataclass(frozen=True, eq=False)
class Clip:
    config: ClipConfig
    cameras: list[PinholeCamera]
    frames: list[FrameState] = field(repr=False)


# --- static furniture --------------------------------------------------------------------------
BIN_HALF = np.array([0.20, 0.15])
BIN_WALL_HEIGHT = 0.07
BIN_FLOOR_TOP = 0.006
_IDENTITY = np.eye(3)


def _bin() -> SceneObject:
    (hx, hy), wall, h = BIN_HALF, 0.008, BIN_WALL_HEIGHT
    boxes = [Box(np.array([0.0, 0.0, BIN_FLOOR_TOP / 2]), np.array([hx, hy, BIN_FLOOR_TOP / 2]), _IDENTITY)]
    for sign in (-1, 1):
        boxes.append(Box(np.array([sign * (hx - wall / 2), 0.0, h / 2]), np.array([wall / 2, hy, h / 2]), _IDENTITY))
        boxes.append(Box(np.array([0.0, sign * (hy - wall / 2), h / 2]), np.array([hx, wall / 2, h / 2]), _IDENTITY))
    return SceneObject(1, "bin", tuple(Surface(box, BIN_PLASTIC) for box in boxes), np.array([0.0, 0.0, 0.003]))


def _fixtures() -> list[SceneObject]:
    fixtures = []
    for track_id, (x, y) in ((2, (-0.20, 0.15)), (3, (0.20, -0.15))):
        center = np.array([x, y, BIN_WALL_HEIGHT + 0.02])
        clamp = Box(center, np.array([0.035, 0.025, 0.02]), _IDENTITY)
        fixtures.append(SceneObject(track_id, "fixture", (Surface(clamp, FIXTURE_PAINT),), center))
    return fixtures


def _tool() -> SceneObject:
    along_x = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> world x
    handle = Cylinder(np.array([0.08, -0.215, 0.015]), 0.015, 0.05, along_x)
    shaft = Cylinder(np.array([-0.02, -0.215, 0.015]), 0.004, 0.05, along_x)
    return SceneObject(4, "tool", (Surface(handle, TOOL_HANDLE), Surface(shaft, STEEL)), handle.center)


# --- parts -------------------------------------------------------------------------------------
@dataclass
class _Part:
    track_id: int
    sku: str
    defective: bool
    x: float
    y: float
    z: float  # centre height
    yaw: float
    defect_offset: float
    resting_on: int | None = None  # track id of the part below

    @property
    def footprint_radius(self) -> float:
        return 0.024 if self.sku == "part_a" else 0.033

    @property
    def half_height(self) -> float:
        return 0.007 if self.sku == "part_a" else 0.012

    def to_object(self) -> SceneObject:
        center, rotation = np.array([self.x, self.y, self.z]), yaw_rotation(self.yaw)
        defect = DefectMark(self.defect_offset, 0.016) if self.defective else None
        if self.sku == "part_a":
            surface = Surface(Cylinder(center, 0.024, self.half_height, rotation), STEEL, defect)
        else:
            surface = Surface(Box(center, np.array([0.028, 0.018, self.half_height]), rotation), BLUE_PLASTIC, defect)
        return SceneObject(self.track_id, self.sku, (surface,), center, (DEFECTIVE,) if self.defective else ())


def _place_parts(config: ClipConfig, rng: np.random.Generator) -> list[_Part]:
    parts: list[_Part] = []
    for index in range(config.parts):
        sku = "part_a" if rng.random() < 0.5 else "part_b"
        part = _Part(10 + index, sku, bool(rng.random() < 0.3), 0.0, 0.0, 0.0,
                     float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(-0.006, 0.006)))
        for _attempt in range(200):
            margin = part.footprint_radius + 0.012
            part.x = float(rng.uniform(-BIN_HALF[0] + margin, BIN_HALF[0] - margin))
            part.y = float(rng.uniform(-BIN_HALF[1] + margin, BIN_HALF[1] - margin))
            overlapping = [other for other in parts if np.hypot(other.x - part.x, other.y - part.y)
                           < other.footprint_radius + part.footprint_radius]
            if not overlapping:
                part.z = BIN_FLOOR_TOP + part.half_height
                break
            base = overlapping[0]
            free_base = (len(overlapping) == 1 and base.resting_on is None
                         and not any(p.resting_on == base.track_id for p in parts))
            if config.stacking and free_base and rng.random() < 0.5:
                # Partly on top of another part: occludes it from every view.
                part.resting_on = base.track_id
                part.z = base.z + base.half_height + part.half_height
                break
        else:
            raise ValueError(f"cannot fit {config.parts} parts in the bin; ask for fewer")
        parts.append(part)
    return parts


# --- the hand ----------------------------------------------------------------------------------
def _hand(wrist: np.ndarray, forward: np.ndarray) -> SceneObject:
    forward = forward / np.linalg.norm(forward)
    side = np.cross(np.array([0.0, 0.0, 1.0]), forward)
    side /= np.linalg.norm(side)
    up = np.cross(forward, side)
    palm_center = wrist + 0.05 * forward
    palm = Box(palm_center, np.array([0.05, 0.045, 0.014]), np.stack([forward, side, up], axis=1))
    solids = [Capsule(wrist - 0.32 * forward, wrist, 0.034), palm]
    for offset in (-0.032, -0.011, 0.011, 0.032):
        base = wrist + 0.095 * forward + offset * side
        solids.append(Capsule(base, base + 0.065 * forward - 0.02 * up, 0.009))
    thumb = wrist + 0.035 * forward + 0.048 * side
    solids.append(Capsule(thumb, thumb + 0.04 * forward + 0.03 * side, 0.010))
    return SceneObject(5, "hand", tuple(Surface(solid, SKIN) for solid in solids), palm_center)


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _hand_at(fraction: float, start: np.ndarray, reach: np.ndarray) -> SceneObject | None:
    """Enters at 35 % of the clip, reaches by 50 %, stays until 58 %, is gone by 72 %."""
    if fraction < 0.35 or fraction > 0.72:
        return None
    if fraction <= 0.5:
        progress = _ease((fraction - 0.35) / 0.15)
    elif fraction <= 0.58:
        progress = 1.0
    else:
        progress = 1.0 - _ease((fraction - 0.58) / 0.14)
    wrist = start + progress * (reach - start)
    return _hand(wrist, reach - start)


# --- the clip ----------------------------------------------------------------------------------
def generate_clip(config: ClipConfig) -> Clip:
    # Independent streams: the cell's lighting and the hand's path do not depend on how many
    # parts there are, so the empty cell recorded at commissioning matches the working cell.
    rng = np.random.default_rng([config.seed, 0])
    cell_rng = np.random.default_rng([config.seed, 1])
    parts = _place_parts(config, rng)
    static = [_bin(), *_fixtures()] + ([_tool()] if config.tool else [])

    # Picks: only parts with nothing on top, spread over the clip outside the hand's visit
    # (30-78 %: the robot does not pick while a person reaches in).
    pickable = [p for p in parts if not any(q.resting_on == p.track_id for q in parts)]
    order = rng.permutation(len(pickable))[:config.picks]
    slots = np.linspace(0.08, 0.47, config.picks + 2)[1:-1]
    pick_fractions = [f if f < 0.3 else f + 0.48 for f in slots]
    picks = {min(int(f * config.frames), config.frames - 1): pickable[i] for f, i in zip(pick_fractions, order)}

    hand_start = np.array([0.62, -0.50, 0.34])
    hand_reach = np.array([float(cell_rng.uniform(-0.05, 0.08)), float(cell_rng.uniform(-0.05, 0.05)), 0.11])
    light_azimuth = float(cell_rng.uniform(0, 2 * np.pi))

    frames = []
    period_ns = int(round(1e9 / config.rate_hz))
    hand_was_in, lights_were_dimmed = False, False
    for index in range(config.frames):
        fraction = index / max(config.frames - 1, 1)
        events = []
        if index in picks:
            picked = picks[index]
            parts.remove(picked)
            events.append(f"picked track {picked.track_id} ({picked.sku})")
            for neighbour in parts:
                if neighbour.resting_on is None and np.hypot(neighbour.x - picked.x, neighbour.y - picked.y) < 0.09:
                    # Neighbours settle a little; a part resting on one moves with it.
                    dx, dy, dyaw = rng.uniform(-0.004, 0.004), rng.uniform(-0.004, 0.004), rng.uniform(-0.06, 0.06)
                    for moved in [neighbour] + [p for p in parts if p.resting_on == neighbour.track_id]:
                        moved.x, moved.y, moved.yaw = moved.x + dx, moved.y + dy, moved.yaw + dyaw
                    events.append(f"track {neighbour.track_id} shifted")
        objects = list(static) + [part.to_object() for part in parts]
        hand = _hand_at(fraction, hand_start, hand_reach) if config.hand else None
        if hand is not None:
            objects.append(hand)
        if (hand is not None) != hand_was_in:
            hand_was_in = hand is not None
            events.append("hand enters the cell" if hand_was_in else "hand leaves the cell")
        if fraction >= 0.6 and not lights_were_dimmed:
            lights_were_dimmed = True
            events.append("cell lights dimmed")
        azimuth = light_azimuth + 0.6 * fraction
        elevation = np.radians(58.0)
        direction = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                              np.sin(elevation)])
        # Slow flicker plus one step: the cell lights are dimmed at 60 % of the clip.
        intensity = (1.0 + 0.08 * np.sin(2 * np.pi * 1.3 * fraction)) * (0.78 if lights_were_dimmed else 1.0)
        frames.append(FrameState(index, config.start_stamp_ns + index * period_ns, tuple(objects),
                                 Lighting(direction, float(intensity), 0.32), tuple(events)))
    return Clip(config, camera_rig(config.views, config.width, config.height), frames)
