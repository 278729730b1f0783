"""The embedded benchmark: procedurally generated driving scenes in five domains, with Cityscapes train IDs.

Every scene is a perspective street (sky, buildings, road with lane marks, sidewalks, terrain, vegetation, walls,
fences, poles with signs and traffic lights, cars, trucks, buses, trams, people, riders on bicycles and motorcycles).
The five domains differ

- globally: illumination, colour cast, sensor noise, fog, blur;
- locally: particular classes are restyled, and the restyle spills over class boundaries as real shifts do (glare,
  halos, spray, reflections on a wet road, leaf litter, shadows); the generator returns a `shift_mask` marking
  exactly the pixels these *local shifts* altered, as ground truth for transferability estimation;
- in geometry: horizon height, object scale, road width;
- in class frequency and co-occurrence.

Generation is deterministic for a seed and vectorised with NumPy (no per-pixel Python loops).
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

(
    ROAD,
    SIDEWALK,
    BUILDING,
    WALL,
    FENCE,
    POLE,
    LIGHT,
    SIGN,
    VEGETATION,
    TERRAIN,
    SKY,
    PERSON,
    RIDER,
    CAR,
    TRUCK,
    BUS,
    TRAIN,
    MOTORCYCLE,
    BICYCLE,
) = range(19)
IGNORE_INDEX = 255

# Base colours (RGB, 0-1) of the clear domain, with a per-class texture amplitude.
BASE_COLOURS = np.array(
    [
        (0.42, 0.40, 0.42),
        (0.62, 0.58, 0.55),
        (0.55, 0.40, 0.33),
        (0.60, 0.57, 0.48),
        (0.45, 0.38, 0.28),
        (0.35, 0.35, 0.38),
        (0.20, 0.20, 0.15),
        (0.85, 0.75, 0.10),
        (0.22, 0.50, 0.18),
        (0.50, 0.55, 0.30),
        (0.50, 0.70, 0.92),
        (0.70, 0.25, 0.25),
        (0.25, 0.30, 0.70),
        (0.15, 0.25, 0.55),
        (0.60, 0.60, 0.62),
        (0.85, 0.55, 0.15),
        (0.40, 0.55, 0.45),
        (0.55, 0.10, 0.45),
        (0.10, 0.50, 0.55),
    ],
    dtype=np.float32,
)
# Vehicles take a paint colour per instance, so that colour alone does not give the class away.
VEHICLE_PAINTS = np.array(
    [
        (0.15, 0.25, 0.55),
        (0.65, 0.12, 0.10),
        (0.85, 0.85, 0.85),
        (0.10, 0.10, 0.12),
        (0.50, 0.52, 0.55),
        (0.20, 0.40, 0.25),
        (0.80, 0.70, 0.20),
    ],
    dtype=np.float32,
)
TEXTURE = np.array(
    [0.05, 0.06, 0.10, 0.08, 0.12, 0.03, 0.03, 0.03, 0.18, 0.12, 0.02, 0.08, 0.08, 0.05, 0.05, 0.05, 0.05, 0.06, 0.06],
    dtype=np.float32,
)


@dataclass(frozen=True)
class DomainStyle:
    """How one generated domain looks: global appearance, geometry, class frequencies and restyled classes."""

    name: str
    brightness: float = 1.0
    colour_cast: tuple = (1.0, 1.0, 1.0)
    noise: float = 0.015
    fog: float = 0.0
    blur: float = 0.0
    horizon: float = 0.42
    object_scale: float = 1.0
    road_width: float = 1.0
    # Multipliers of the expected number of instances per scene.
    frequency: dict = field(default_factory=dict)
    # Classes whose appearance this domain's local shifts alter.
    restyled: tuple = ()
    # The local shifts, by name (see `local_shifts`).
    local_shifts: tuple = ()


VEHICLES = (CAR, TRUCK, BUS, TRAIN)
DOMAINS = {
    "clear": DomainStyle("clear"),
    "night": DomainStyle(
        "night",
        brightness=0.38,
        colour_cast=(0.80, 0.85, 1.20),
        noise=0.05,
        horizon=0.46,
        object_scale=1.15,
        frequency={"person": 0.5, "car": 1.3, "bus": 0.5, "vegetation": 0.8},
        restyled=(*VEHICLES, LIGHT),
        local_shifts=("dark_vehicles", "lit_traffic_lights"),
    ),
    "fog": DomainStyle(
        "fog",
        brightness=0.95,
        colour_cast=(0.95, 0.98, 1.02),
        fog=0.65,
        blur=1.0,
        horizon=0.38,
        object_scale=0.85,
        road_width=1.2,
        frequency={"building": 1.4, "truck": 2.0, "vegetation": 0.6},
        restyled=(BUILDING, *VEHICLES, LIGHT),
        local_shifts=("stucco_facades", "fog_lamps"),
    ),
    "rain": DomainStyle(
        "rain",
        brightness=0.70,
        colour_cast=(0.92, 0.95, 1.05),
        noise=0.03,
        blur=0.8,
        horizon=0.44,
        frequency={"person": 0.7, "car": 1.4, "rider": 0.3, "bus": 1.5},
        restyled=(ROAD, SIDEWALK, *VEHICLES),
        local_shifts=("tyre_spray", "wet_ground"),
    ),
    "autumn": DomainStyle(
        "autumn",
        brightness=1.05,
        colour_cast=(1.10, 1.00, 0.82),
        horizon=0.36,
        object_scale=1.05,
        road_width=0.85,
        frequency={"vegetation": 1.8, "car": 0.7, "person": 1.3, "train": 2.0},
        restyled=(VEGETATION, TERRAIN, *VEHICLES),
        local_shifts=("foliage", "leaf_litter", "low_sun"),
    ),
}
LOCAL_SHIFTS = (
    "dark_vehicles",
    "lit_traffic_lights",
    "fog_lamps",
    "stucco_facades",
    "tyre_spray",
    "wet_ground",
    "foliage",
    "leaf_litter",
    "low_sun",
)
# Bumped whenever a scene's pixels change for a given seed (3: local shifts that spill over class boundaries; 4: rain,
# fog and autumn also restyle vehicles. Clear and night scenes are the same as in 3).
GENERATOR_VERSION = 4
# The restyled classes of earlier versions, so that the tables of their runs still rebuild (runs record the version;
# one that does not predates 4).
EARLIER_RESTYLED = {
    3: {
        "clear": (),
        "night": (*VEHICLES, LIGHT),
        "fog": (BUILDING,),
        "rain": (ROAD, SIDEWALK),
        "autumn": (VEGETATION, TERRAIN),
    }
}
# Disjoint seed ranges per split, so that train, validation and test never share a seed.
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1_000_000, "test": 2_000_000}
DOMAIN_SEED_OFFSETS = {name: 10_000_000 * (index + 1) for index, name in enumerate(DOMAINS)}


class Canvas:
    """Label, instance-colour and restyle layers that shapes are painted into, back to front."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.height, self.width, self.rng = height, width, rng
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.tint = np.ones((height, width, 3), dtype=np.float32)

    def paint(self, mask: np.ndarray, cls: int, jitter: float = 0.08) -> None:
        """Paints `mask` with class `cls` and one random colour tint for the instance."""
        self.label[mask] = cls
        self.tint[mask] = 1.0 + self.rng.uniform(-jitter, jitter, size=3).astype(np.float32)

    def box(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise in [-1, 1]: random values on a coarse grid, bilinearly upsampled."""
    coarse = rng.uniform(-1, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((width + 2 * cell, height + 2 * cell), Image.BILINEAR)
    return np.asarray(image)[cell : cell + height, cell : cell + width]


def _count(rng, mean: float, style: DomainStyle, key: str) -> int:
    return int(rng.poisson(mean * style.frequency.get(key, 1.0)))


def generate_scene(seed: int, domain: str = "clear", height: int = 256, width: int = 512) -> dict:
    """
    Generates one scene of `domain` from `seed`.

    Returns a dict with `image` (H, W, 3) uint8, `label` (H, W) uint8 Cityscapes train IDs and `shift_mask` (H, W)
    bool: the pixels altered by the domain's local shifts.
    """
    if domain not in DOMAINS:
        raise ValueError(f"Unknown synthetic domain {domain!r}; expected one of {sorted(DOMAINS)}")
    style = DOMAINS[domain]
    rng = np.random.default_rng(seed)
    canvas = Canvas(height, width, rng)
    yy, xx = canvas.yy, canvas.xx

    horizon = height * (style.horizon + rng.uniform(-0.05, 0.05))
    vanish_x = width * rng.uniform(0.4, 0.6)
    depth = np.clip((yy - horizon) / (height - horizon), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom
    scale = style.object_scale * height / 256

    # Road and sidewalks: a trapezoid from the vanishing point, sidewalk bands outside it, terrain beyond.
    half_road = (yy - horizon) * rng.uniform(0.9, 1.3) * style.road_width
    sidewalk = (yy - horizon) * rng.uniform(0.35, 0.6)
    below = yy > horizon
    canvas.label[below] = TERRAIN
    left_edge, right_edge = vanish_x - half_road, vanish_x + half_road
    canvas.label[below & (xx > left_edge - sidewalk) & (xx < right_edge + sidewalk)] = SIDEWALK
    canvas.label[below & (xx >= left_edge) & (xx <= right_edge)] = ROAD

    # Buildings along both sides, standing on the far edge of the sidewalks.
    for _ in range(_count(rng, 7, style, "building")):
        side = rng.choice([-1, 1])
        x0 = vanish_x + side * rng.uniform(0.08, 0.9) * width / 2 - rng.uniform(20, 90) * scale * (side < 0)
        x1 = x0 + rng.uniform(30, 110) * scale
        top = horizon - rng.uniform(25, 120) * scale
        bottom = horizon + abs((x0 + x1) / 2 - vanish_x) * 0.12
        mask = canvas.box(x0, top, x1, bottom) & (canvas.label != ROAD)
        canvas.paint(mask, BUILDING, 0.15)
        windows = mask & ((xx - x0) % (10 * scale + 4) < 5 * scale) & ((yy - top) % (14 * scale + 4) < 6 * scale)
        canvas.tint[windows] *= 0.6  # windows stay "building"

    # Walls and fences along the outer sidewalk edges.
    for cls, key, mean in ((WALL, "wall", 1.2), (FENCE, "fence", 1.5)):
        for _ in range(_count(rng, mean, style, key)):
            side = rng.choice([-1, 1])
            y_contact = horizon + rng.uniform(0.15, 0.8) * (height - horizon)
            s = (y_contact - horizon) / (height - horizon)
            edge = vanish_x + side * ((y_contact - horizon) * 1.6 + 5)
            length, tall = rng.uniform(40, 150) * s * scale, rng.uniform(12, 30) * s * scale + 3
            x0 = edge if side > 0 else edge - length
            mask = canvas.box(x0, y_contact - tall, x0 + length, y_contact) & (canvas.label != ROAD)
            if cls == FENCE:
                mask &= ((xx - x0) % 6 < 3) | ((yy - y_contact) % 8 < 2)
            canvas.paint(mask, cls)

    # Vegetation: tree canopies and hedges.
    for _ in range(_count(rng, 5, style, "vegetation")):
        side = rng.choice([-1, 1])
        y_contact = horizon + rng.uniform(0.0, 0.6) * (height - horizon)
        s = max((y_contact - horizon) / (height - horizon), 0.1)
        cx = vanish_x + side * ((y_contact - horizon) * 1.7 + rng.uniform(10, 60) * scale)
        rx, ry = rng.uniform(18, 45) * s * scale + 6, rng.uniform(20, 50) * s * scale + 6
        canopy = canvas.ellipse(cx, y_contact - 2.2 * ry, rx, ry) | canvas.ellipse(
            cx + rx * 0.5, y_contact - 2.6 * ry, rx * 0.7, ry * 0.8
        )
        canvas.paint(canopy & (canvas.label != ROAD), VEGETATION, 0.15)
        trunk = canvas.box(cx - 2 * s * scale - 1, y_contact - 1.4 * ry, cx + 2 * s * scale + 1, y_contact)
        canvas.paint(trunk & (canvas.label != ROAD), VEGETATION)  # Cityscapes labels trunks as vegetation

    # Poles, with traffic signs and traffic lights.
    for _ in range(_count(rng, 3, style, "pole")):
        side = rng.choice([-1, 1])
        y_contact = horizon + rng.uniform(0.1, 0.9) * (height - horizon)
        s = (y_contact - horizon) / (height - horizon)
        px = vanish_x + side * ((y_contact - horizon) * 1.45 + 3)
        tall, thick = (60 + 90 * s) * scale, max(1.5, 5 * s * scale)
        canvas.paint(canvas.box(px - thick / 2, y_contact - tall, px + thick / 2, y_contact), POLE)
        if rng.random() < 0.6:
            r = max(3.0, 11 * s * scale)
            canvas.paint(canvas.ellipse(px, y_contact - tall, r, r), SIGN, 0.1)
        if rng.random() < 0.5:
            w, h = max(2.5, 7 * s * scale), max(6.0, 20 * s * scale)
            canvas.paint(canvas.box(px - w / 2, y_contact - tall * 0.8 - h, px + w / 2, y_contact - tall * 0.8), LIGHT)

    # A tram, rarely, across the far road.
    if rng.random() < 0.08 * style.frequency.get("train", 1.0):
        y_contact = horizon + rng.uniform(0.1, 0.3) * (height - horizon)
        s = (y_contact - horizon) / (height - horizon)
        x0 = rng.uniform(0, width * 0.5)
        canvas.paint(
            canvas.box(x0, y_contact - 60 * s * scale - 10, x0 + rng.uniform(0.3, 0.5) * width, y_contact), TRAIN
        )

    # Vehicles on the road and people on the sidewalks, far to near so that near objects occlude.
    objects = []
    for key, cls, mean in (
        ("car", CAR, 4),
        ("truck", TRUCK, 0.5),
        ("bus", BUS, 0.35),
        ("person", PERSON, 3),
        ("rider", RIDER, 0.8),
    ):
        objects += [(rng.uniform(0.05, 1.0), cls) for _ in range(_count(rng, mean, style, key))]
    for s, cls in sorted(objects):
        y_contact = horizon + s * (height - horizon)
        road_half = (y_contact - horizon) * 1.1 * style.road_width
        if cls in (CAR, TRUCK, BUS):
            w = {CAR: 120, TRUCK: 150, BUS: 170}[cls] * s * scale * rng.uniform(0.85, 1.15) + 4
            h = w * {CAR: 0.55, TRUCK: 0.95, BUS: 0.85}[cls]
            cx = vanish_x + rng.uniform(-0.8, 0.8) * road_half
            body = canvas.box(cx - w / 2, y_contact - h, cx + w / 2, y_contact - 0.15 * h)
            if cls == CAR:
                body |= canvas.box(cx - w * 0.3, y_contact - 1.35 * h, cx + w * 0.3, y_contact - h)
            wheels = canvas.ellipse(cx - w * 0.3, y_contact - 0.15 * h, w * 0.1, 0.15 * h) | canvas.ellipse(
                cx + w * 0.3, y_contact - 0.15 * h, w * 0.1, 0.15 * h
            )
            canvas.paint(body | wheels, cls, 0.1)
            if cls == CAR:
                canvas.tint[body] = VEHICLE_PAINTS[rng.integers(len(VEHICLE_PAINTS))] / BASE_COLOURS[CAR]
        elif cls == PERSON:
            h = (30 + 70 * s) * scale * rng.uniform(0.85, 1.15)
            cx = vanish_x + rng.choice([-1, 1]) * (road_half + (y_contact - horizon) * 0.25)
            canvas.paint(
                canvas.ellipse(cx, y_contact - 0.55 * h, 0.15 * h, 0.45 * h)
                | canvas.ellipse(cx, y_contact - 0.92 * h, 0.09 * h, 0.09 * h),
                PERSON,
                0.2,
            )
        else:
            h = (30 + 70 * s) * scale
            cx = vanish_x + rng.choice([-1, 1]) * road_half * rng.uniform(0.6, 0.95)
            vehicle = MOTORCYCLE if rng.random() < 0.4 else BICYCLE
            frame = canvas.ellipse(cx - 0.3 * h, y_contact - 0.15 * h, 0.15 * h, 0.15 * h) | canvas.ellipse(
                cx + 0.3 * h, y_contact - 0.15 * h, 0.15 * h, 0.15 * h
            )
            frame |= canvas.box(cx - 0.3 * h, y_contact - 0.35 * h, cx + 0.3 * h, y_contact - 0.22 * h)
            canvas.paint(frame, vehicle, 0.2)
            canvas.paint(
                canvas.ellipse(cx, y_contact - 0.65 * h, 0.13 * h, 0.3 * h)
                | canvas.ellipse(cx, y_contact - 1.0 * h, 0.08 * h, 0.08 * h),
                RIDER,
                0.2,
            )

    return render(canvas, style, rng, horizon, vanish_x, depth)


def render(canvas: Canvas, style: DomainStyle, rng: np.random.Generator, horizon, vanish_x, depth) -> dict:
    """Colours the label layout, applies the domain's local restyles (recording `shift_mask`) and global effects."""
    height, width = canvas.height, canvas.width
    yy, xx, label = canvas.yy, canvas.xx, canvas.label
    texture = smooth_noise(rng, height, width, 8) * 0.6 + smooth_noise(rng, height, width, 3) * 0.4
    colours = BASE_COLOURS[label] * canvas.tint
    colours *= 1.0 + TEXTURE[label][..., None] * texture[..., None] * 2
    sky = label == SKY
    colours[sky] *= (0.85 + 0.3 * (yy[sky] / max(horizon, 1.0)))[:, None]  # sky gradient
    lane = (
        (label == ROAD)
        & (np.abs(xx - vanish_x) < 1 + 0.02 * (yy - horizon))
        & ((yy * 0.15 + 5 * np.log1p(depth * 40)) % 6 < 3)
    )
    colours[lane] = (0.92, 0.92, 0.88)

    colours, shift_mask = local_shifts(style, colours, label, rng, texture)

    # Global shifts: fog by depth, illumination and colour cast, blur, sensor noise.
    if style.fog > 0:
        haze = style.fog * (1.0 - 0.75 * depth)
        haze[sky] = style.fog
        colours = colours * (1 - haze[..., None]) + haze[..., None] * np.float32(0.78)
    colours = colours * style.brightness * np.asarray(style.colour_cast, dtype=np.float32)
    image = Image.fromarray((np.clip(colours, 0, 1) * 255).astype(np.uint8))
    if style.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    pixels = np.asarray(image).astype(np.float32) / 255
    pixels = pixels + rng.normal(0, style.noise, size=pixels.shape).astype(np.float32)
    image = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    return {"image": image, "label": label.copy(), "shift_mask": shift_mask}


def local_shifts(style: DomainStyle, colours: np.ndarray, label: np.ndarray, rng, texture) -> tuple:
    """
    The domain's local shifts, each imitating a real one that changes texture and blurs class boundaries.

    - `dark_vehicles` (night): vehicle bodies sink into the dark road; their lamps show, buses and trams show a band of
      lit windows, and lamps and windows throw a glare halo over their surroundings;
    - `lit_traffic_lights` (night): traffic lights glow, with the same glare;
    - `fog_lamps` (fog): vehicles fade into grey silhouettes behind their lit lamps, and the light of lamps and traffic
      lights scatters into wide halos that veil their outlines;
    - `stucco_facades` (fog): pale stucco facades;
    - `tyre_spray` (rain): wet vehicles, darkened, with lit lamps, throw up spray that veils their lower half and the
      road around their wheels;
    - `wet_ground` (rain): the wet road and the puddles on the sidewalk mirror what stands above them, rippled and
      darkened, so a car's reflection lies on the road below it;
    - `foliage` (autumn): orange foliage;
    - `leaf_litter` (autumn): leaf litter that covers the terrain and spills over the sidewalk and the road's edge,
      hiding the boundary between them;
    - `low_sun` (autumn): the low sun lights vehicles warm and flashes on their upper parts (glass, roofs) with glare,
      and vehicles and people cast long shadows across the ground beside them.

    Returns the new colours and `shift_mask`: every pixel whose appearance a local shift altered, halos, spray,
    reflections, litter and shadows on other classes included.
    """
    unknown = set(style.local_shifts) - set(LOCAL_SHIFTS)
    if unknown:
        raise ValueError(f"Unknown local shifts {sorted(unknown)}; expected some of {list(LOCAL_SHIFTS)}")
    height, width = label.shape
    shifts = set(style.local_shifts)
    colours = colours.copy()
    shift_mask = np.zeros((height, width), dtype=bool)
    t = texture[..., None]
    vehicles = np.isin(label, VEHICLES)
    glowing = np.zeros((height, width), dtype=bool)
    if "dark_vehicles" in shifts and vehicles.any():
        lamps = vehicles & (np.abs(texture) > 0.55)
        windows = np.isin(label, (BUS, TRAIN)) & lit_window_band(label)
        colours[vehicles] = np.float32(BASE_COLOURS[ROAD] * 0.63) + colours[vehicles] * 0.25 + 0.03 * t[vehicles]
        colours[lamps] = np.array([1.0, 0.95, 0.6], np.float32) * 2.4
        colours[windows] = np.array([1.0, 0.85, 0.5], np.float32) * 1.6
        glowing |= lamps | windows
        shift_mask |= vehicles
    if "lit_traffic_lights" in shifts:
        light = label == LIGHT
        colours[light] = np.array([0.2, 1.0, 0.4], np.float32) * 2.5
        glowing |= light
        shift_mask |= light
    if glowing.any():
        glare = blur(glowing, 6) * 3.0
        colours += np.clip(glare, 0, 1)[..., None] * np.array([0.9, 0.85, 0.6], np.float32)
        shift_mask |= glare > 0.05
    if "fog_lamps" in shifts:
        light = label == LIGHT
        lamps = vehicles & (np.abs(texture) > 0.55) & (run_depth(label) > 0.3)
        colours[vehicles] = colours[vehicles] * 0.3 + np.float32(0.62) + 0.03 * t[vehicles]
        colours[lamps] = np.array([1.0, 0.95, 0.8], np.float32) * 2.0
        colours[light] = np.array([1.0, 0.55, 0.2], np.float32) * 2.0
        halo = np.clip(blur(lamps | light, 12) * 5.0, 0, 1)
        colours += halo[..., None] * np.array([0.85, 0.85, 0.8], np.float32)
        shift_mask |= vehicles | light | (halo > 0.05)
    if "stucco_facades" in shifts:
        building = label == BUILDING
        colours[building] = np.array([0.80, 0.82, 0.90], np.float32) + 0.25 * t[building] * np.array(
            [-1.0, -0.6, 1.0], np.float32
        )
        shift_mask |= building
    if "tyre_spray" in shifts and vehicles.any():
        depth = run_depth(label)
        lamps = vehicles & (depth > 0.35) & (depth < 0.6) & (np.abs(texture) > 0.5)
        colours[vehicles] = colours[vehicles] * 0.5 + 0.12 * np.clip(t[vehicles], 0, 1)
        colours[lamps] = np.array([1.0, 0.9, 0.7], np.float32) * 1.8
        spray = np.clip(blur(vehicles & (depth > 0.6), 4) * 1.8, 0, 1) * (
            0.75 + 0.25 * smooth_noise(rng, height, width, 3)
        )
        colours = colours * (1 - 0.85 * spray[..., None]) + 0.85 * spray[..., None] * np.array(
            [0.7, 0.72, 0.76], np.float32
        )
        shift_mask |= vehicles | (spray > 0.05)
    if "wet_ground" in shifts:
        mirrored, distance = mirror_above(colours, label, rng)
        wet = (label == ROAD) | ((label == SIDEWALK) & (smooth_noise(rng, height, width, 6) > 0.0))
        strength = (0.75 * np.exp(-distance / (0.25 * height)))[..., None]
        dull = colours * 0.4 + 0.04 * t
        colours = np.where(wet[..., None], dull * (1 - strength) + mirrored * strength * 0.8, colours)
        shift_mask |= wet
    if "foliage" in shifts:
        vegetation = label == VEGETATION
        hue = (t[vegetation] + 1) / 2
        colours[vegetation] = np.concatenate([0.75 + 0.2 * hue, 0.25 + 0.45 * hue, 0.05 + 0.1 * hue], axis=1)
        shift_mask |= vegetation
    if "leaf_litter" in shifts:
        ground = np.isin(label, (TERRAIN, SIDEWALK, ROAD))
        near_terrain = blur(label == TERRAIN, 10)
        litter = ground & (1.4 * near_terrain + 0.5 * smooth_noise(rng, height, width, 4) > 0.75)
        leaves = (t[litter] + 1) / 2
        colours[litter] = np.concatenate([0.45 + 0.3 * leaves, 0.28 + 0.2 * leaves, 0.12 + 0.05 * leaves], axis=1)
        shift_mask |= litter
    if "low_sun" in shifts:
        casters = np.isin(label, (*VEHICLES, PERSON, RIDER))
        shadow = np.zeros_like(casters)
        for step in range(1, 5):  # smeared sideways and a little down, so that each shadow stays attached
            dx, dy = step * width // 40, step * height // 120
            shadow[dy:, dx:] |= casters[: height - dy, : width - dx]
        shadow &= np.isin(label, (ROAD, SIDEWALK, TERRAIN))
        colours[shadow] *= 0.4
        flash = vehicles & (run_depth(label) < 0.45) & (texture > 0.2)
        colours[vehicles] *= np.array([1.3, 1.0, 0.65], np.float32)
        colours[flash] = np.array([1.0, 0.96, 0.88], np.float32) * 2.0
        glare = np.clip(blur(flash, 5) * 2.5, 0, 1)
        colours += glare[..., None] * np.array([0.9, 0.8, 0.6], np.float32)
        shift_mask |= vehicles | shadow | (glare > 0.05)
    return colours, shift_mask


def blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a boolean (H, W) mask, as floats in [0, 1]."""
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.float32) / 255


def run_starts(label: np.ndarray) -> np.ndarray:
    """For every pixel, the first row of the vertical run of its class that it belongs to (same column)."""
    rows = np.arange(label.shape[0])[:, None]
    starts = np.ones_like(label, dtype=bool)
    starts[1:] = label[1:] != label[:-1]
    return np.maximum.accumulate(np.where(starts, rows, 0), axis=0)


def run_depth(label: np.ndarray) -> np.ndarray:
    """For every pixel, how far down the vertical run of its class (same column) it lies: 0 at the top, < 1 at the
    bottom."""
    rows = np.arange(label.shape[0])[:, None]
    top = run_starts(label)
    bottom = label.shape[0] - 1 - run_starts(label[::-1])[::-1]
    return (rows - top) / np.maximum(bottom - top + 1, 1)


def lit_window_band(label: np.ndarray) -> np.ndarray:
    """Window panes in the upper part of every vertical run of one class: 15-50% down the run, 3 columns wide, 2 in 3 lit."""
    depth = run_depth(label)
    return (depth > 0.15) & (depth < 0.5) & ((np.arange(label.shape[1])[None, :] // 3) % 3 != 0)


def mirror_above(colours: np.ndarray, label: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """
    A wet surface's reflection: each pixel takes the colour mirrored about the nearest pixel above it (same column) of
    another class, with a horizontal ripple. Returns the mirrored colours and each pixel's distance to that edge.
    """
    height, width = label.shape
    rows = np.arange(height)[:, None]
    edge = run_starts(label)
    source_rows = np.clip(2 * edge - rows - 1, 0, height - 1)
    ripple = np.rint(2.5 * np.sin(rows * 0.8 + rng.uniform(0, 2 * np.pi))).astype(np.int64)
    source_cols = np.clip(np.arange(width)[None, :] + ripple, 0, width - 1)
    return colours[source_rows, source_cols], (rows - edge).astype(np.float32)


def generator_version_of(results: dict) -> int:
    """The generator version recorded in a `train.py` results.json (or a row built from one); runs made before
    version 4 did not record it and used version 3."""
    return results.get("generator_version", 3)


def restyled_classes(domain: str, generator_version: int = GENERATOR_VERSION) -> tuple:
    """The classes that `domain`'s local shifts alter in generator version `generator_version` (the current one or
    one of `EARLIER_RESTYLED`)."""
    if generator_version == GENERATOR_VERSION:
        return DOMAINS[domain].restyled
    if generator_version not in EARLIER_RESTYLED:
        raise ValueError(
            f"No record of generator version {generator_version}; expected one of "
            f"{sorted([GENERATOR_VERSION, *EARLIER_RESTYLED])}"
        )
    return EARLIER_RESTYLED[generator_version][domain]


def scene_seed(domain: str, split: str, index: int) -> int:
    """The seed of scene `index` of a domain's split; ranges never overlap across splits or domains."""
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"Unknown split {split!r}; expected one of {sorted(SPLIT_SEED_OFFSETS)}")
    if not 0 <= index < 1_000_000:
        raise ValueError(f"Scene index must lie in [0, 1000000), got {index}")
    return DOMAIN_SEED_OFFSETS[domain] + SPLIT_SEED_OFFSETS[split] + index
