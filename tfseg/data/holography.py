"""An independent interferogram renderer: an off-axis digital-holography forward model.

It exists to test models trained on `tfseg.data.synthetic` on frames that generator did not
make (the robustness scorecard, `tfseg.deploy.robustness`), so it shares none of its code or
modelling choices. Where the training generator paints I = A + B cos(phi) with a phase map of
Zernike terms and phase bumps, this one simulates the optics and the camera, per frame:

1. the object wave at the in-focus object plane: an illumination amplitude (a decentred
   super-Gaussian beam whose intensity falls by `falloff` at the farthest frame corner) times
   the transmission of the samples, refractive-index objects (spheres, ellipsoids, and blobs:
   unions of 2-4 ellipsoids) of index n_medium + `index_contrast` and a little absorption:
   phase 2 pi / lambda * (n_s - n_m) * projected thickness, amplitude exp(-2 pi / lambda *
   kappa * thickness);
2. the sample part of that wave propagated by the angular-spectrum method to the defocus plane
   (`defocus`), on a zero-padded, supersampled grid, so samples cut by the frame border
   diffract as they would; opaque dust particles on a plane `dust_distance` away (a window or cover
   glass), propagated likewise, give Fresnel rings;
3. the imaging system's parabolic (slightly astigmatic) wavefront curvature, `curvature`
   radians at the frame corner;
4. interference with a tilted plane reference wave whose angle gives `fringes` carrier fringes
   across the shorter side at `carrier_angle`, of `beam_ratio` times the object intensity, with
   a reference phase jitter between frames (`vibration`);
5. the camera: intensity integrated over each pixel's area (the supersampled grid averaged),
   pixel gain non-uniformity (`prnu`), exposure so the brightest background pixel collects
   `exposure` x `full_well` electrons (above 1: saturation), Poisson photon noise, read noise
   in electrons, the well clipped at `full_well`, quantised to `bit_depth` bits.

Labels: each visible sample's axis-aligned box (x, y, w, h) at the in-focus object plane, the
pixels its projected thickness covers (cv2.selectROI convention), so defocus blur and rings
outside the box are background, as a labeller drawing on the object would have it.

Deterministic for a given (spec, seed); numpy and OpenCV only. A 128x128 frame takes a few
milliseconds.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("sphere", "ellipsoid", "blob")


@dataclass(frozen=True)
class HolographySpec:
    """Parameters of an off-axis holography sequence; a (low, high) pair is drawn uniformly
    per sequence (per sample for the sample's own), a pair (v, v) fixes the value.

    Args:
        height, width: frame size in pixels (>= 16).
        frames_per_sequence: frames T (>= 1).
        samples: (low, high) integer count of samples per sequence.
        field_of_view: micrometres across the shorter side at the object plane (the pixel size
            is field_of_view / min(height, width)).
        wavelength: vacuum wavelength, micrometres.
        medium_index: refractive index of the medium around the samples.
        fringes: carrier fringes across the shorter side, at most min(height, width) / 4.
        carrier_angle: carrier direction, degrees from the x axis (rows grow downwards).
        curvature: parabolic wavefront phase at the frame corner, radians (>= 0).
        falloff: illumination intensity drop at the farthest frame corner, in [0, 0.95].
        beam_ratio: reference / mean object intensity (> 0).
        sample_diameter: longest in-plane diameter, micrometres.
        sample_aspect: shortest / longest in-plane diameter, in (0, 1] (spheres: 1).
        sample_thickness: thickness at the centre / shortest in-plane diameter, in (0, 1]
            (spheres: 1).
        index_contrast: n_sample - n_medium (> 0).
        absorption: imaginary part of the sample's index (>= 0).
        shapes: the kinds drawn from, of "sphere", "ellipsoid", "blob".
        speed: sample drift per frame, fraction of the shorter side (>= 0).
        defocus: distance from the object plane to the plane in focus, micrometres.
        dust: (low, high) integer count of opaque dust particles per sequence.
        dust_distance: distance of the dust plane from the object plane, micrometres.
        dust_diameter: dust particle diameter, micrometres.
        vibration: rms reference phase jitter between frames, radians (>= 0).
        exposure: electrons of the brightest background pixel / full_well (> 0; above 1
            the brightest fringes saturate).
        full_well: well capacity, electrons (>= 1).
        read_noise: read noise, electrons rms (>= 0).
        prnu: pixel gain non-uniformity, rms fraction, in [0, 0.5].
        bit_depth: 8 (uint8 frames) or 16 (uint16).
        supersample: sub-pixels per pixel side of the optical simulation (1..8).
    """

    height: int = 128
    width: int = 128
    frames_per_sequence: int = 16
    samples: tuple[int, int] = (0, 3)
    field_of_view: float = 50.0
    wavelength: float = 0.532
    medium_index: float = 1.337
    fringes: tuple[float, float] = (12.0, 20.0)
    carrier_angle: tuple[float, float] = (15.0, 75.0)
    curvature: tuple[float, float] = (0.0, 12.0)
    falloff: tuple[float, float] = (0.1, 0.5)
    beam_ratio: tuple[float, float] = (0.5, 2.0)
    sample_diameter: tuple[float, float] = (8.0, 16.0)
    sample_aspect: tuple[float, float] = (0.6, 1.0)
    sample_thickness: tuple[float, float] = (0.4, 0.8)
    index_contrast: tuple[float, float] = (0.02, 0.05)
    absorption: tuple[float, float] = (0.0, 3e-4)
    shapes: tuple[str, ...] = SHAPES
    speed: tuple[float, float] = (0.0, 0.04)
    defocus: tuple[float, float] = (-2.0, 2.0)
    dust: tuple[int, int] = (0, 4)
    dust_distance: tuple[float, float] = (30.0, 150.0)
    dust_diameter: tuple[float, float] = (1.0, 3.0)
    vibration: float = 0.1
    exposure: tuple[float, float] = (0.7, 0.95)
    full_well: float = 10000.0
    read_noise: float = 6.0
    prnu: float = 0.01
    bit_depth: int = 8
    supersample: int = 2

    def __post_init__(self):
        _integer("height", self.height, 16)
        _integer("width", self.width, 16)
        _integer("frames_per_sequence", self.frames_per_sequence, 1)
        _integer("supersample", self.supersample, 1, 8)
        short = min(self.height, self.width)
        _pair("samples", self.samples, 0, 1000, integer=True)
        _pair("dust", self.dust, 0, 1000, integer=True)
        _number("field_of_view", self.field_of_view, 1e-3, 1e6)
        _number("wavelength", self.wavelength, 0.1, 20.0)
        _number("medium_index", self.medium_index, 1.0, 3.0)
        _pair("fringes", self.fringes, 0.0, short / 4,
              " (min(height, width) / 4: a fringe must span at least 4 pixels)")
        _pair("carrier_angle", self.carrier_angle, -360.0, 360.0)
        _pair("curvature", self.curvature, 0.0, 1000.0)
        _pair("falloff", self.falloff, 0.0, 0.95)
        _pair("beam_ratio", self.beam_ratio, 1e-3, 1e3)
        _pair("sample_diameter", self.sample_diameter, 1e-3, 1e6)
        _pair("sample_aspect", self.sample_aspect, 1e-3, 1.0)
        _pair("sample_thickness", self.sample_thickness, 1e-3, 1.0)
        _pair("index_contrast", self.index_contrast, 1e-6, 2.0)
        _pair("absorption", self.absorption, 0.0, 1.0)
        _pair("speed", self.speed, 0.0, 1.0)
        _pair("defocus", self.defocus, -1e4, 1e4)
        _pair("dust_distance", self.dust_distance, -1e4, 1e4)
        _pair("dust_diameter", self.dust_diameter, 1e-3, 1e4)
        _number("vibration", self.vibration, 0.0, math.pi)
        _pair("exposure", self.exposure, 1e-3, 100.0)
        _number("full_well", self.full_well, 1.0, 1e12)
        _number("read_noise", self.read_noise, 0.0, 1e6)
        _number("prnu", self.prnu, 0.0, 0.5)
        if self.bit_depth not in (8, 16) or isinstance(self.bit_depth, bool):
            raise ValueError(f"HolographySpec.bit_depth must be 8 or 16, got "
                             f"{self.bit_depth!r}")
        if (isinstance(self.shapes, (str, bytes)) or not self.shapes
                or any(shape not in SHAPES for shape in self.shapes)):
            raise ValueError(f"HolographySpec.shapes must be a non-empty list of "
                             f"{', '.join(SHAPES)}, got {self.shapes!r}")
        # The reference wave's angle: sin(theta) = lambda x carrier frequency (object-plane
        # units, i.e. the magnification already applied) must be below 1.
        carrier = self.fringes[1] / self.field_of_view   # cycles per micrometre
        if self.wavelength * carrier >= 1:
            raise ValueError(f"HolographySpec.fringes {self.fringes[1]:g} across "
                             f"{self.field_of_view:g} um needs a reference beyond 90 degrees "
                             f"at wavelength {self.wavelength:g} um (lambda x fringes / "
                             f"field_of_view must be below 1)")

    @property
    def pixel_size(self):
        """Micrometres per pixel at the object plane."""
        return self.field_of_view / min(self.height, self.width)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool)


def _integer(name, value, minimum, maximum=None):
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"HolographySpec.{name} must be an integer {bound}, got {value!r}")


def _number(name, value, minimum, maximum):
    if not _is_number(value) or not minimum <= value <= maximum:   # also refuses NaN
        raise ValueError(f"HolographySpec.{name} must be a number in [{minimum:g}, "
                         f"{maximum:g}], got {value!r}")


def _pair(name, value, minimum, maximum, why="", integer=False):
    kind = "integers" if integer else "numbers"
    message = (f"HolographySpec.{name} must be a pair (low, high) of {kind} with "
               f"{minimum:g} <= low <= high <= {maximum:g}{why}, got {value!r}")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(message)
    low, high = value
    if not (_is_number(low) and _is_number(high)) or not minimum <= low <= high <= maximum:
        raise ValueError(message)
    if integer and not all(isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(message)


def propagator(shape, spacing, distance, wavelength, index):
    """Angular-spectrum transfer function (complex64, FFT layout) over `distance`
    micrometres in a medium of `index`, for a grid of `shape` with `spacing` micrometres,
    relative to a plane wave along the axis (so an unperturbed wave is unchanged);
    evanescent components are dropped."""
    fy = np.fft.fftfreq(shape[0], spacing).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(shape[1], spacing).astype(np.float32)[None, :]
    k = np.float32(index / wavelength)
    arg = k * k - fx * fx - fy * fy
    kz = np.sqrt(np.maximum(arg, 0))
    transfer = np.exp(np.complex64(2j * np.pi * distance) * (kz - k))
    transfer[arg <= 0] = 0
    return transfer


def propagate(field, transfer):
    """`field` (complex, the grid of `transfer`) propagated by `propagator`'s transfer
    function (OpenCV's DFT: an order of magnitude faster than numpy's here)."""
    pairs = np.ascontiguousarray(field, np.complex64).view(np.float32).reshape(
        *field.shape, 2)
    spectrum = cv2.dft(pairs, flags=cv2.DFT_COMPLEX_OUTPUT)
    spectrum = np.ascontiguousarray(spectrum).view(np.complex64)[..., 0] * transfer
    result = cv2.idft(spectrum.view(np.float32).reshape(*field.shape, 2),
                      flags=cv2.DFT_SCALE | cv2.DFT_COMPLEX_OUTPUT)
    return np.ascontiguousarray(result).view(np.complex64)[..., 0]


def _fft_size(n, multiple):
    """The smallest multiple of `multiple` >= n with no prime factor above 5 (fast FFTs)."""
    while True:
        n += -n % multiple
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class _Grid:
    """The supersampled, zero-padded simulation grid, in camera-pixel units: pixel (row i,
    column j) of the frame covers [j, j + 1) x [i, i + 1); the frame is the centre crop."""

    def __init__(self, spec):
        s = spec.supersample
        self.s, self.height, self.width = s, spec.height, spec.width
        pad = max(4, math.ceil(0.15 * min(spec.height, spec.width)))
        # Padding above and to the left `pad`; below and to the right at least `pad`, up to
        # a fast FFT size.
        self.pad_y = self.pad_x = pad
        self.shape = (_fft_size((spec.height + 2 * pad) * s, s),
                      _fft_size((spec.width + 2 * pad) * s, s))
        # Sub-pixel centres (pixels) and the frame's crop of the grid.
        self.x = ((np.arange(self.shape[1]) + 0.5) / s - self.pad_x).astype(np.float32)
        self.y = ((np.arange(self.shape[0]) + 0.5) / s - self.pad_y).astype(np.float32)
        self.crop = (slice(self.pad_y * s, (self.pad_y + spec.height) * s),
                     slice(self.pad_x * s, (self.pad_x + spec.width) * s))

    def patch(self, cx, cy, reach):
        """Grid slices of the square of half-side `reach` pixels around (cx, cy), or None."""
        s = self.s
        c0 = max(0, math.floor((cx - reach + self.pad_x) * s))
        c1 = min(self.shape[1], math.ceil((cx + reach + self.pad_x) * s) + 1)
        r0 = max(0, math.floor((cy - reach + self.pad_y) * s))
        r1 = min(self.shape[0], math.ceil((cy + reach + self.pad_y) * s) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def integrate(self, field):
        """Area average of a supersampled frame crop over each camera pixel: (H, W)."""
        s = self.s
        return field.reshape(self.height, s, self.width, s).mean(axis=(1, 3))


class _Sample:
    """A refractive-index object: one ellipsoid (a sphere when round) or a union of lobes."""

    def __init__(self, spec, rng):
        short = min(spec.height, spec.width)
        pixel = spec.pixel_size
        self.kind = spec.shapes[int(rng.integers(len(spec.shapes)))]
        semi_major = 0.5 * rng.uniform(*spec.sample_diameter) / pixel   # pixels
        if self.kind == "sphere":
            aspect, thickness = 1.0, 1.0
        else:
            aspect, thickness = rng.uniform(*spec.sample_aspect), rng.uniform(
                *spec.sample_thickness)
        # Lobes: (offset along, offset across (pixels), semi-axes a, b (pixels), half
        # thickness c (micrometres)); the main lobe first.
        self.lobes = [(0.0, 0.0, semi_major, semi_major * aspect,
                       thickness * semi_major * aspect * pixel)]
        if self.kind == "blob":
            for _ in range(int(rng.integers(1, 4))):
                scale = rng.uniform(0.5, 0.85)
                direction = rng.uniform(0, 2 * np.pi)
                distance = rng.uniform(0.3, 0.7) * semi_major
                a = semi_major * scale
                b = a * rng.uniform(spec.sample_aspect[0], 1.0)
                self.lobes.append((distance * math.cos(direction),
                                   distance * math.sin(direction), a, b,
                                   rng.uniform(*spec.sample_thickness) * b * pixel))
        self.reach = max(math.hypot(du, dv) + a for du, dv, a, _, _ in self.lobes) + 1.0
        self.index_contrast = rng.uniform(*spec.index_contrast)
        self.absorption = rng.uniform(*spec.absorption)
        self.angle = rng.uniform(0, np.pi)
        self.spin = rng.normal(0.0, 0.03)
        direction = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(*spec.speed) * short
        self.velocity = speed * np.array([math.cos(direction), math.sin(direction)])
        # Start anywhere from just outside the frame to its middle, so some samples enter,
        # cross or leave it during the sequence and some are cut by the border.
        self.start = rng.uniform(-0.1, 1.1, 2) * (spec.width, spec.height)

    def thickness(self, grid, t):
        """(grid slices, projected thickness in micrometres on them) at frame t, or None."""
        cx, cy = self.start + self.velocity * t
        region = grid.patch(cx, cy, self.reach)
        if region is None:
            return None
        x = grid.x[region[1]][None, :] - np.float32(cx)
        y = grid.y[region[0]][:, None] - np.float32(cy)
        angle = self.angle + self.spin * t
        cos, sin = math.cos(angle), math.sin(angle)
        along, across = x * cos + y * sin, y * cos - x * sin
        thickness = np.zeros((y.shape[0], x.shape[1]), np.float32)
        for du, dv, a, b, c in self.lobes:
            r2 = ((along - du) / a) ** 2 + ((across - dv) / b) ** 2
            # Union of the lobes: where they overlap, the thicker one.
            np.maximum(thickness, 2 * c * np.sqrt(np.clip(1 - r2, 0, None)), out=thickness)
        return region, thickness


class _Background:
    """What stays fixed over a sequence: carrier, curvature, illumination, dust, exposure."""

    def __init__(self, spec, grid, rng):
        h, w = spec.height, spec.width
        short = min(h, w)
        x, y = grid.x[None, :], grid.y[:, None]
        u, v = x - w / 2, y - h / 2
        corner2 = (h / 2) ** 2 + (w / 2) ** 2

        # Illumination: a decentred super-Gaussian beam; intensity at the farthest frame
        # corner is 1 - falloff of its peak.
        centre = rng.uniform(-0.15, 0.15, 2) * (w, h)
        order = rng.uniform(1.0, 2.5)
        falloff = rng.uniform(*spec.falloff)
        rho2 = (u - centre[0]) ** 2 + (v - centre[1]) ** 2
        far2 = (w / 2 + abs(centre[0])) ** 2 + (h / 2 + abs(centre[1])) ** 2
        if falloff > 0:
            waist2 = far2 / (-math.log1p(-falloff)) ** (1 / order)
            intensity = np.exp(-(rho2 / waist2) ** order)
        else:
            intensity = np.ones_like(rho2)
        self.illumination = np.sqrt(intensity).astype(np.float32)

        # The imaging system's parabolic wavefront, slightly astigmatic, on the frame crop.
        curvature = rng.uniform(*spec.curvature)
        ratio, axis = rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)
        cu, cv = u[:, grid.crop[1]], v[grid.crop[0], :]
        along = cu * math.cos(axis) + cv * math.sin(axis)
        across = cv * math.cos(axis) - cu * math.sin(axis)
        wavefront = curvature * (along**2 * ratio + across**2 / ratio) / corner2
        self.curvature = np.exp(1j * wavefront).astype(np.complex64)

        # Tilted plane reference wave: `fringes` cycles across the shorter side.
        fringes = rng.uniform(*spec.fringes)
        angle = math.radians(rng.uniform(*spec.carrier_angle))
        k = 2 * np.pi * fringes / short   # radians per pixel
        cx, cy = x[:, grid.crop[1]], y[grid.crop[0], :]
        mean_object = float(intensity[grid.crop].mean())
        amplitude = math.sqrt(rng.uniform(*spec.beam_ratio) * mean_object)
        self.reference = (amplitude * np.exp(1j * (k * math.cos(angle) * cx
                                                   + k * math.sin(angle) * cy))
                          ).astype(np.complex64)
        self.fringes, self.carrier_angle = fringes, math.degrees(angle)

        # The object wave without samples, at the camera: the illumination and the Fresnel
        # rings of opaque dust particles on a plane `dust_distance` away.
        spacing = spec.pixel_size / grid.s
        self.defocus = rng.uniform(*spec.defocus)
        field = self.illumination.astype(np.complex64)
        count = int(rng.integers(spec.dust[0], spec.dust[1] + 1))
        distance = rng.uniform(*spec.dust_distance)
        if count:
            discs = np.zeros(grid.shape, np.float32)
            for _ in range(count):
                px = rng.uniform(-grid.pad_x, grid.shape[1] / grid.s - grid.pad_x)
                py = rng.uniform(-grid.pad_y, grid.shape[0] / grid.s - grid.pad_y)
                radius = 0.5 * rng.uniform(*spec.dust_diameter) / spec.pixel_size
                discs[(x - px) ** 2 + (y - py) ** 2 <= radius**2] = 1
            field += propagate(-self.illumination * discs, propagator(
                grid.shape, spacing, distance + self.defocus, spec.wavelength,
                spec.medium_index))
        self.object_wave = field[grid.crop] * self.curvature
        self.transfer = (propagator(grid.shape, spacing, self.defocus, spec.wavelength,
                                    spec.medium_index) if self.defocus else None)

        # Exposure: the brightest pixel of the sample-free frame collects `exposure` x
        # full_well electrons (per-pixel gain aside).
        background = grid.integrate(np.abs(self.reference + self.object_wave) ** 2)
        self.electrons_per_unit = rng.uniform(*spec.exposure) * spec.full_well / float(
            background.max())
        self.gain = (1 + spec.prnu * rng.standard_normal((h, w))).astype(np.float32)
        self.jitter = spec.vibration * rng.standard_normal(spec.frames_per_sequence)
        self.jitter += rng.uniform(0, 2 * np.pi)


def render_sequence(spec, seed, *, phase=False):
    """Renders one sequence of off-axis holograms and its per-frame sample boxes.

    The background (optics, dust, camera), the samples and the noise draw from independent
    random streams of `seed`, so the same seed with `samples=(0, 0)` gives the same frames
    without samples.

    Args:
        spec: `HolographySpec`.
        seed: non-negative integer; the same (spec, seed) always gives identical output.
        phase: also return the samples' phase at the object plane, float32 (T, H, W)
            radians, averaged over each pixel.

    Returns:
        (frames, boxes[, phases]): frames (T, H, W) uint8 (bit_depth 8) or uint16;
        boxes[t] the (x, y, w, h) boxes of the samples visible in frame t.
    """
    if not isinstance(spec, HolographySpec):
        raise ValueError(f"spec must be a HolographySpec, got {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    background_rng, sample_rng, noise_rng = np.random.default_rng(seed).spawn(3)
    grid = _Grid(spec)
    background = _Background(spec, grid, background_rng)
    samples = [_Sample(spec, sample_rng) for _ in range(
        int(sample_rng.integers(spec.samples[0], spec.samples[1] + 1)))]
    k0 = np.float32(2 * np.pi / spec.wavelength)
    full_scale = 2**spec.bit_depth - 1
    dtype = np.uint8 if spec.bit_depth == 8 else np.uint16
    frames = np.empty((spec.frames_per_sequence, spec.height, spec.width), dtype)
    phases = np.zeros(frames.shape, np.float32) if phase else None
    all_boxes = []
    for t in range(spec.frames_per_sequence):
        hits = [(sample, found) for sample in samples
                if (found := sample.thickness(grid, t)) is not None]
        boxes = [box for _, (region, thickness) in hits
                 if (box := _box(grid, region, thickness > 0)) is not None]
        all_boxes.append(boxes)
        wave = background.object_wave
        if hits:
            # The samples' wave perturbation, on the grid block that holds them.
            block = tuple(slice(min(found[0][axis].start for _, found in hits),
                                max(found[0][axis].stop for _, found in hits))
                          for axis in (0, 1))
            shape = (block[0].stop - block[0].start, block[1].stop - block[1].start)
            optical_path = np.zeros(shape, np.float32)   # (n_s - n_m) x thickness, um
            attenuation = np.zeros(shape, np.float32)    # kappa x thickness, um
            for sample, (region, thickness) in hits:
                local = tuple(slice(r.start - b.start, r.stop - b.start)
                              for r, b in zip(region, block))
                optical_path[local] += np.float32(sample.index_contrast) * thickness
                attenuation[local] += np.float32(sample.absorption) * thickness
            perturbation = np.zeros(grid.shape, np.complex64)
            perturbation[block] = background.illumination[block] * (
                np.exp(k0 * (1j * optical_path - attenuation)) - 1)
            if background.transfer is not None:
                perturbation = propagate(perturbation, background.transfer)
            wave = wave + perturbation[grid.crop] * background.curvature
            if phase:
                path = np.zeros(grid.shape, np.float32)
                path[block] = optical_path
                phases[t] = grid.integrate(k0 * path[grid.crop])
        reference = background.reference * np.complex64(np.exp(1j * background.jitter[t]))
        field = reference + wave
        intensity = grid.integrate(field.real**2 + field.imag**2)
        electrons = intensity * background.gain * np.float32(background.electrons_per_unit)
        electrons = noise_rng.poisson(np.maximum(electrons, 0)).astype(np.float32)
        if spec.read_noise:
            electrons += np.float32(spec.read_noise) * noise_rng.standard_normal(
                electrons.shape, np.float32)
        np.clip(electrons, 0, spec.full_well, out=electrons)
        frames[t] = np.clip(np.rint(electrons * np.float32(full_scale / spec.full_well)), 0,
                            full_scale)
    return (frames, all_boxes, phases) if phase else (frames, all_boxes)


def _box(grid, region, support):
    """The frame pixels (x, y, w, h) that `support` (a boolean patch at `region` of the grid)
    touches, or None when none is in the frame."""
    r0 = region[0].start - grid.crop[0].start
    c0 = region[1].start - grid.crop[1].start
    inside = support[max(0, -r0):max(0, grid.height * grid.s - r0),
                     max(0, -c0):max(0, grid.width * grid.s - c0)]
    if not inside.any():
        return None
    rows = np.flatnonzero(inside.any(axis=1)) + max(0, r0)
    cols = np.flatnonzero(inside.any(axis=0)) + max(0, c0)
    y0, y1 = rows[0] // grid.s, rows[-1] // grid.s
    x0, x1 = cols[0] // grid.s, cols[-1] // grid.s
    return (int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1))
