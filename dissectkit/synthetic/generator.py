"""The synthetic mammogram generator: deterministic from (seed, index), vectorised numpy; findings
are painted in local patches, each with its own boolean mask."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from dissectkit.base.errors import did_you_mean
from dissectkit.base.types import ProbeItem
from dissectkit.synthetic import vocab

DEFAULT_SIZE = (320, 192)  # H x W, the 5:3 shape of Mammo-CLIP's 1520 x 912


@dataclass
class Finding:
    """One drawn finding: concept texts it stands for, its mask and its location phrase."""

    concepts: tuple[str, ...]
    mask: np.ndarray
    location: str


@dataclass
class Sample:
    """A generated image with everything known about it."""

    image: np.ndarray  # uint8 H x W
    masks: dict[str, np.ndarray]
    labels: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


@lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


@lru_cache(maxsize=32)
def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation (align corners) from ``n_in`` to ``n_out`` points: low, high, weight."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float64)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Unit-variance smooth random field: a coarse Gaussian grid, bilinearly upsampled (no BLAS)."""
    ch, cw = cells
    low = rng.standard_normal((ch, cw), dtype=np.float32)
    ylo, yhi, yf = _interp_index(h, ch)
    xlo, xhi, xf = _interp_index(w, cw)
    rows = low[ylo] * (1 - yf)[:, None] + low[yhi] * yf[:, None]
    field_ = rows[:, xlo] * (1 - xf) + rows[:, xhi] * xf
    return field_ / (field_[::4, ::4].std() + 1e-6)  # the std of a smooth field from every 4th pixel


def _patch(cx: float, cy: float, r: float, h: int, w: int):
    """Slices of a square patch around (cx, cy) of half-size r, clipped to the image, and its grid."""
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = pixel_grid(h, w)
    sl = (slice(y0, y1), slice(x0, x1))
    return sl, yy[sl], xx[sl]


def _segment_distance(px: np.ndarray, py: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Distance of every patch pixel to the nearest of ``seg`` ([n, 4]: x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (seg[:, i, None, None] for i in range(4))
    dx, dy = x1 - x0, y1 - y0
    t = ((px - x0) * dx + (py - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-6)
    t = np.clip(t, 0.0, 1.0)
    d = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))
    return d.min(axis=0)


class SynthMammoGenerator:
    """Draws synthetic mammograms. ``sample(index)`` depends only on (seed, index)."""

    def __init__(
        self,
        seed: int = 0,
        size: tuple[int, int] = DEFAULT_SIZE,
        frequencies: dict[str, float] | None = None,
        label_noise: float = 0.05,
    ) -> None:
        self.seed = int(seed)
        self.h, self.w = int(size[0]), int(size[1])
        if self.h < 32 or self.w < 24:
            raise ValueError(f"synthetic image size {size} is too small; use at least 32 x 24 (H x W).")
        freq = dict(vocab.DEFAULT_FREQUENCIES)
        for key, value in (frequencies or {}).items():
            if key not in freq:
                raise ValueError(
                    f"unknown finding {key!r} in frequencies.{did_you_mean(key, freq)} Known: {', '.join(freq)}."
                )
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"frequency of {key!r} must lie in [0, 1], got {value}.")
            freq[key] = float(value)
        self.frequencies = freq
        self.label_noise = float(label_noise)
        self.scale = self.w / 192.0  # sizes are given for the default width

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index), stream, 6620])

    def sample(self, index: int) -> Sample:
        rng = self.rng(index)
        h, w, s = self.h, self.w, self.scale
        yy, xx = pixel_grid(h, w)
        attrs: dict[str, Any] = {
            "laterality": "L" if rng.random() < 0.5 else "R",
            "view": "MLO" if rng.random() < 0.5 else "CC",
            "composition": int(rng.integers(0, 4)),
            "side_inner": bool(rng.random() < 0.5),
        }
        # breast silhouette: half ellipse against the chest wall at x = 0
        a = w * rng.uniform(0.66, 0.88)
        cy = h * rng.uniform(0.46, 0.54)
        b = h * rng.uniform(0.40, 0.47)
        attrs.update(a=a, b=b, cy=cy)
        ex, ey = xx / a, (yy - cy) / b
        rn = np.sqrt(ex * ex + ey * ey)
        inside = rn <= 1.0
        img = np.full((h, w), rng.uniform(0.02, 0.06), np.float32)

        # composition: fibroglandular tissue from filtered noise with class-dependent coverage
        comp = attrs["composition"]
        coverage = (0.07, 0.28, 0.58, 0.86)[comp] + rng.uniform(-0.04, 0.04)
        field_ = 0.75 * smooth_noise(rng, h, w, (9, 6)) + 0.45 * smooth_noise(rng, h, w, (24, 15))
        field_ = field_ + 0.9 * (0.55 - rn)  # denser centrally, fatty towards the skin
        thr = float(np.quantile(field_[::4, ::4][inside[::4, ::4]], 1.0 - coverage))
        dense = 1.0 / (1.0 + np.exp(-(field_ - thr) / 0.12))
        fat = rng.uniform(0.20, 0.30)
        d_amp = rng.uniform(0.14, 0.22) + 0.02 * comp
        tissue = fat + d_amp * dense + 0.025 * smooth_noise(rng, h, w, (60, 36))
        img = np.where(inside, tissue, img)
        masks: dict[str, np.ndarray] = {vocab.COMPOSITIONS[comp]: inside & (dense > 0.5)}

        # skin line
        skin_t = 2.2 * s / min(a, b) * 1.0
        img += np.where(inside & (rn > 1.0 - skin_t), 0.10, 0.0).astype(np.float32)

        # pectoral muscle (MLO)
        if attrs["view"] == "MLO":
            p0, ph = w * rng.uniform(0.22, 0.36), h * rng.uniform(0.32, 0.48)
            pect = xx < p0 * (1.0 - yy / ph)
            img = np.where(pect & inside, rng.uniform(0.5, 0.62) + 0.03 * smooth_noise(rng, h, w, (12, 8)), img)
            attrs["pectoral"] = (p0, ph)

        findings: list[Finding] = []
        present = {k: rng.random() < p for k, p in self.frequencies.items()}
        # fixed draw order keeps (seed, index) -> image stable when frequencies change
        if present["breast implant"]:
            findings.append(self._implant(rng, img, attrs))
        self._nipple(rng, img, attrs, retracted=present["nipple retraction"], findings=findings)
        if present["skin thickening"]:
            findings.append(self._skin_thickening(rng, img, attrs, rn))
        findings += [draw(rng, img, attrs) for key, draw in (
            ("focal asymmetry", self._focal_asymmetry),
            ("mass", self._mass),
            ("architectural distortion", self._distortion),
            ("intramammary lymph node", self._lymph_node),
            ("vascular calcifications", self._vascular),
            ("linear branching calcifications", self._linear_branching),
            ("fine pleomorphic calcifications", self._fine_pleomorphic),
            ("coarse popcorn calcifications", self._popcorn),
            ("surgical clip", self._clip),
        ) if present[key]]

        # acquisition: gain, gamma, noise
        img = np.clip(img, 0.0, 1.0) ** np.float32(rng.uniform(0.85, 1.15))
        img = img * np.float32(rng.uniform(0.9, 1.05)) + rng.standard_normal((h, w), dtype=np.float32) * np.float32(
            rng.uniform(0.008, 0.03)
        )
        img8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

        for f in findings:
            for c, m in finding_masks(f).items():
                masks[c] = masks[c] | m if c in masks else m
        if attrs["laterality"] == "L":
            img8 = img8[:, ::-1].copy()
            masks = {k: v[:, ::-1].copy() for k, v in masks.items()}
        labels = self._labels(rng, findings, comp, attrs)
        return Sample(img8, masks, labels, attrs, findings)

    def item(self, index: int) -> ProbeItem:
        smp = self.sample(index)
        report = make_report(smp, self.rng(index, stream=1))
        return ProbeItem(image=smp.image, id=f"synth-{self.seed}-{index:06d}", labels=smp.labels, masks=smp.masks, report=report)

    def _labels(self, rng: np.random.Generator, findings: list[Finding], comp: int, attrs: dict) -> dict[str, Any]:
        have = {c for f in findings for c in f.concepts}
        labels: dict[str, Any] = {c: int(c in have) for c in vocab.FINDINGS}
        labels["composition"] = vocab.COMPOSITION_LETTERS[comp]
        labels["density"] = vocab.COMPOSITIONS[comp]
        true_malignant = int(any(c in have for c in vocab.MALIGNANT_FINDINGS))
        flip = rng.random() < self.label_noise
        labels["malignancy_true"] = true_malignant
        labels["malignancy"] = 1 - true_malignant if flip else true_malignant
        labels["laterality"] = attrs["laterality"]
        labels["view"] = attrs["view"]
        return labels

    def _point(self, rng: np.random.Generator, attrs: dict, rmax: float = 0.72, rmin: float = 0.0, xmin: float = 0.12):
        """A point inside the breast (normalised radius in [rmin, rmax]), outside the pectoral."""
        a, b, cy = attrs["a"], attrs["b"], attrs["cy"]
        for _ in range(20):
            r = math.sqrt(rng.uniform(rmin**2, rmax**2))
            t = rng.uniform(-math.pi / 2, math.pi / 2)
            x, y = a * r * math.cos(t), cy + b * r * math.sin(t)
            if x < xmin * a:
                continue
            pect = attrs.get("pectoral")
            if pect and x < pect[0] * (1.0 - y / pect[1]) + 6 * self.scale:
                continue
            return x, y
        return a * 0.5, cy

    def location(self, x: float, y: float, attrs: dict, kind: str = "") -> str:
        a, cy = attrs["a"], attrs["cy"]
        side = "left" if attrs["laterality"] == "L" else "right"
        if x > 0.82 * a and abs(y - cy) < 0.16 * attrs["b"]:
            return f"retroareolar region of the {side} breast"
        vert = "upper" if y < cy else "lower"
        horiz = "inner" if attrs["side_inner"] else "outer"
        if kind == "node" and y < cy and x < 0.45 * a:
            return f"axillary tail of the {side} breast"
        depth = "posterior" if x < a / 3 else ("middle" if x < 2 * a / 3 else "anterior")
        return f"{vert} {horiz} quadrant of the {side} breast, {depth} third"

    def _implant(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        yy, xx = pixel_grid(h, w)
        a, b, cy = attrs["a"], attrs["b"], attrs["cy"]
        ia, ib = a * rng.uniform(0.40, 0.55), b * rng.uniform(0.45, 0.62)
        icx, icy = a * rng.uniform(0.0, 0.12), cy + b * rng.uniform(-0.1, 0.1)
        d = np.sqrt(((xx - icx) / ia) ** 2 + ((yy - icy) / ib) ** 2)
        body = np.clip((1.0 - d) / 0.05, 0.0, 1.0)
        level = rng.uniform(0.82, 0.93)
        np.maximum(img, level * body + img * (1 - body), out=img)
        mask = d < 1.0
        return Finding(("breast implant",), mask, self.location(icx + ia * 0.5, icy, attrs))

    def _nipple(self, rng, img, attrs, retracted: bool, findings: list[Finding]) -> None:
        h, w = img.shape
        s = self.scale
        a, cy = attrs["a"], attrs["cy"]
        r = 7.0 * s * rng.uniform(0.85, 1.2)
        p = _patch(a, cy, 5.0 * r, h, w)
        if p is None:
            return
        sl, py, px = p
        d = np.hypot(px - a, py - cy)
        if not retracted:
            bump = (d < r) & (px >= a - 1)
            img[sl] = np.where(bump, np.maximum(img[sl], rng.uniform(0.3, 0.4)), img[sl])
            return
        # retraction: the nipple is pulled in (a notch) with a bright retroareolar band behind it
        notch = (d < r * 1.6) & (px > a - r * 1.3)
        pull = (np.abs(py - cy) < r * 0.6) & (px > a - 4.5 * r) & (px <= a - r * 1.0)
        img[sl] = np.where(notch, rng.uniform(0.02, 0.06), img[sl])
        img[sl] = np.where(pull, img[sl] + rng.uniform(0.28, 0.36), img[sl])
        mask = np.zeros((h, w), bool)
        mask[sl] = (d < r * 4.5) & (px > a - 4.5 * r)
        findings.append(Finding(("nipple retraction",), mask, self.location(a, cy, attrs)))

    def _skin_thickening(self, rng, img, attrs, rn) -> Finding:
        h, w = img.shape
        yy, xx = pixel_grid(h, w)
        a, b, cy = attrs["a"], attrs["b"], attrs["cy"]
        theta = np.arctan2((yy - cy) / b, xx / a)
        t0 = rng.uniform(-1.2, 0.3)
        span = rng.uniform(0.7, 1.2)
        thick = 14.0 * self.scale * rng.uniform(0.9, 1.3) / min(a, b)
        band = (rn <= 1.0) & (rn > 1.0 - thick) & (theta > t0) & (theta < t0 + span)
        img += np.where(band, np.float32(rng.uniform(0.25, 0.32)), np.float32(0.0))
        tm = t0 + span / 2
        x, y = a * math.cos(tm), cy + b * math.sin(tm)
        return Finding(("skin thickening",), band, self.location(x, y, attrs))

    def _focal_asymmetry(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        x, y = self._point(rng, attrs, rmax=0.65)
        rx, ry = 28 * self.scale * rng.uniform(0.85, 1.2), 19 * self.scale * rng.uniform(0.85, 1.2)
        ang = rng.uniform(0, math.pi)
        p = _patch(x, y, max(rx, ry) * 1.6, h, w)
        sl, py, px = p
        u = (px - x) * math.cos(ang) + (py - y) * math.sin(ang)
        v = -(px - x) * math.sin(ang) + (py - y) * math.cos(ang)
        d2 = (u / rx) ** 2 + (v / ry) ** 2
        tex = 0.6 + 0.4 * np.cos(0.45 * u / self.scale + rng.uniform(0, 6.28))  # coarse bands along its axis
        img[sl] += (rng.uniform(0.40, 0.48) * np.exp(-1.5 * d2) * tex).astype(np.float32)
        mask = np.zeros((h, w), bool)
        mask[sl] = d2 < 1.0
        return Finding(("focal asymmetry",), mask, self.location(x, y, attrs))

    def _mass(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        shape = vocab.MASS_SHAPES[int(rng.integers(0, 3))]
        p_spic = 0.7 if shape == "irregular mass" else 0.3
        margin = vocab.MASS_MARGINS[int(rng.random() < p_spic)]
        x, y = self._point(rng, attrs, rmax=0.68)
        R = 20.0 * s * rng.uniform(0.85, 1.25)
        ang = rng.uniform(0, math.pi)
        p = _patch(x, y, 2.6 * R, h, w)
        sl, py, px = p
        dx, dy = px - x, py - y
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        if shape == "oval mass":
            el = rng.uniform(1.55, 1.9)
            rr = np.sqrt((u / (R * el)) ** 2 + (v * el / R) ** 2) * R
            radius = R
        else:
            rr = np.hypot(u, v)
            radius = R
            if shape == "irregular mass":
                th = np.arctan2(v, u)
                mod = np.zeros_like(th)
                for k in (3, 4, 5, 7):
                    mod += rng.uniform(0.10, 0.18) * np.cos(k * th + rng.uniform(0, 6.28))
                rr = rr / (1.0 + mod)
        edge = 0.8 * s if margin == "circumscribed margin" else 2.2 * s
        body = np.clip((radius - rr) / edge + 0.5, 0.0, 1.0)
        amp = rng.uniform(0.35, 0.45)
        img[sl] += (amp * body * (0.85 + 0.15 * np.clip(1 - rr / radius, 0, 1))).astype(np.float32)
        ring = np.abs(rr - radius) < max(2.5 * s, 0.25 * radius)
        margin_mask = ring
        if margin == "spiculated margin":
            n = int(rng.integers(9, 15))
            th = np.sort(rng.uniform(0, 2 * math.pi, n))
            ln = radius * rng.uniform(0.7, 1.4, n)
            r0 = radius * 0.85
            seg = np.stack(
                [x + r0 * np.cos(th), y + r0 * np.sin(th), x + (r0 + ln) * np.cos(th), y + (r0 + ln) * np.sin(th)], 1
            ).astype(np.float32)
            dist = _segment_distance(px, py, seg)
            spic = np.clip(2.4 * s - dist, 0.0, 1.0 * s) / s
            img[sl] += (amp * 1.0 * spic).astype(np.float32)
            margin_mask = ring | (dist < 2.4 * s)
        m_shape = np.zeros((h, w), bool)
        m_shape[sl] = rr < radius
        m_margin = np.zeros((h, w), bool)
        m_margin[sl] = margin_mask
        loc = self.location(x, y, attrs)
        # the margin mask is its own finding sharing the location; both are returned via one Finding each
        return MassFinding((shape, margin), m_shape, loc, m_margin)

    def _distortion(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        x, y = self._point(rng, attrs, rmax=0.65)
        L = 34 * s * rng.uniform(0.85, 1.2)
        n = int(rng.integers(10, 17))
        th = rng.uniform(0, 2 * math.pi, n)
        r0 = L * rng.uniform(0.12, 0.25, n)
        r1 = L * rng.uniform(0.7, 1.0, n)
        seg = np.stack([x + r0 * np.cos(th), y + r0 * np.sin(th), x + r1 * np.cos(th), y + r1 * np.sin(th)], 1)
        p = _patch(x, y, L + 3, h, w)
        sl, py, px = p
        dist = _segment_distance(px, py, seg.astype(np.float32))
        line = np.clip(1.0 - dist / (3.0 * s), 0.0, 1.0)
        img[sl] += (rng.uniform(0.3, 0.42) * line).astype(np.float32)
        mask = np.zeros((h, w), bool)
        mask[sl] = (dist < 3.2 * s) & (np.hypot(px - x, py - y) < L)
        return Finding(("architectural distortion",), mask, self.location(x, y, attrs))

    def _lymph_node(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        a, b, cy = attrs["a"], attrs["b"], attrs["cy"]
        x = a * rng.uniform(0.2, 0.55)
        y = cy - b * rng.uniform(0.25, 0.6)
        pect = attrs.get("pectoral")
        if pect:
            x = max(x, pect[0] * (1.0 - y / pect[1]) + 8 * s)
        R = 11.0 * s * rng.uniform(0.85, 1.2)
        el = rng.uniform(1.3, 1.6)
        ang = rng.uniform(0, math.pi)
        p = _patch(x, y, 2.2 * R, h, w)
        sl, py, px = p
        u = (px - x) * math.cos(ang) + (py - y) * math.sin(ang)
        v = -(px - x) * math.sin(ang) + (py - y) * math.cos(ang)
        d = np.sqrt((u / (R * el)) ** 2 + (v / R) ** 2)
        body = np.clip((1.0 - d) / 0.15, 0.0, 1.0)
        hilum = np.clip((0.55 - np.sqrt(((u - 0.6 * R * el) / (0.6 * R)) ** 2 + (v / (0.45 * R)) ** 2)) / 0.2, 0, 1)
        amp = rng.uniform(0.4, 0.5)
        img[sl] += (amp * body * (1.0 - hilum)).astype(np.float32)
        mask = np.zeros((h, w), bool)
        mask[sl] = d < 1.0
        return Finding(("intramammary lymph node",), mask, self.location(x, y, attrs, kind="node"))

    def _dots(self, img, sl, px, py, cx, cy, sig, amp) -> np.ndarray:
        """Paint Gaussian dots (vectors cx, cy, sig, amp) in a patch; return the dots' mask."""
        d2 = (px - cx[:, None, None]) ** 2 + (py - cy[:, None, None]) ** 2
        spots = amp[:, None, None] * np.exp(-d2 / (2 * sig[:, None, None] ** 2))
        img[sl] += spots.max(axis=0).astype(np.float32)
        return (d2 < (2.2 * sig[:, None, None] + 1.2 * self.scale) ** 2).any(axis=0)

    def _fine_pleomorphic(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        x, y = self._point(rng, attrs, rmax=0.7)
        Rc = 18 * s * rng.uniform(0.85, 1.2)
        n = int(rng.integers(26, 36))
        rr = Rc * np.sqrt(rng.uniform(0, 1, n))
        th = rng.uniform(0, 2 * math.pi, n)
        cx, cy = x + rr * np.cos(th), y + rr * np.sin(th)
        sig = s * rng.uniform(1.1, 1.6, n)
        amp = rng.uniform(0.6, 0.8, n)
        sl, py, px = _patch(x, y, Rc + 5 * s, h, w)
        mask = np.zeros((h, w), bool)
        mask[sl] = self._dots(img, sl, px, py, cx, cy, sig, amp)
        return Finding(("fine pleomorphic calcifications",), mask, self.location(x, y, attrs))

    def _popcorn(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        x, y = self._point(rng, attrs, rmax=0.7)
        k = int(rng.integers(1, 3))
        cx, cy, sig, amp = [], [], [], []
        for _ in range(k):
            bx, by = x + rng.uniform(-10, 10) * s, y + rng.uniform(-10, 10) * s
            m = int(rng.integers(4, 7))  # lumps of one popcorn
            cx += list(bx + rng.uniform(-4.5, 4.5, m) * s)
            cy += list(by + rng.uniform(-4.5, 4.5, m) * s)
            sig += list(s * rng.uniform(3.4, 4.2, m))
            amp += list(rng.uniform(0.6, 0.8, m))
        sl, py, px = _patch(x, y, 26 * s, h, w)
        mask = np.zeros((h, w), bool)
        mask[sl] = self._dots(img, sl, px, py, np.array(cx), np.array(cy), np.array(sig), np.array(amp))
        return Finding(("coarse popcorn calcifications",), mask, self.location(x, y, attrs))

    def _linear_branching(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        x, y = self._point(rng, attrs, rmax=0.65)
        ang = rng.uniform(0, 2 * math.pi)
        L = 42 * s * rng.uniform(0.85, 1.15)
        pts = [(x - L / 2 * math.cos(ang), y - L / 2 * math.sin(ang), x + L / 2 * math.cos(ang), y + L / 2 * math.sin(ang))]
        for _ in range(int(rng.integers(2, 4))):
            t = rng.uniform(0.2, 0.8)
            bx, by = pts[0][0] + t * (pts[0][2] - pts[0][0]), pts[0][1] + t * (pts[0][3] - pts[0][1])
            ba = ang + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
            bl = L * rng.uniform(0.3, 0.5)
            pts.append((bx, by, bx + bl * math.cos(ba), by + bl * math.sin(ba)))
        # dotted casts along the segments
        cx, cy = [], []
        for x0, y0, x1, y1 in pts:
            n = max(int(math.hypot(x1 - x0, y1 - y0) / (2.5 * s)), 2)
            t = np.linspace(0, 1, n) + rng.uniform(-0.02, 0.02, n)
            cx += list(x0 + t * (x1 - x0))
            cy += list(y0 + t * (y1 - y0))
        cx, cy = np.array(cx), np.array(cy)
        keep = rng.random(len(cx)) < 0.85
        cx, cy = cx[keep], cy[keep]
        sig = s * rng.uniform(1.6, 2.0, len(cx))
        amp = rng.uniform(0.55, 0.75, len(cx))
        sl, py, px = _patch(x, y, L * 0.75 + 4 * s, h, w)
        mask = np.zeros((h, w), bool)
        mask[sl] = self._dots(img, sl, px, py, cx, cy, sig, amp)
        return Finding(("linear branching calcifications",), mask, self.location(x, y, attrs))

    def _vascular(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        a, b, cy = attrs["a"], attrs["b"], attrs["cy"]
        y0 = cy + b * rng.uniform(-0.6, 0.6)
        p0 = np.array([a * 0.08, y0])
        p2 = np.array([a * rng.uniform(0.6, 0.8), cy + b * rng.uniform(-0.3, 0.3)])
        p1 = (p0 + p2) / 2 + np.array([0.0, b * rng.uniform(-0.25, 0.25)])
        t = np.linspace(0, 1, 14)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        tang = np.diff(curve, axis=0)
        nrm = np.stack([-tang[:, 1], tang[:, 0]], 1) / np.linalg.norm(tang, axis=1, keepdims=True)
        half = 3.2 * s
        segs = []
        for sign in (-1, 1):
            off = curve[:-1] + sign * half * nrm, curve[1:] + sign * half * nrm
            segs.append(np.concatenate([off[0], off[1]], 1))
        seg = np.concatenate(segs, 0)
        seg = seg[rng.random(len(seg)) < 0.85].astype(np.float32)  # interrupted tracks
        x_lo, x_hi = curve[:, 0].min() - 4, curve[:, 0].max() + 4
        y_lo, y_hi = curve[:, 1].min() - 4, curve[:, 1].max() + 4
        sl = (slice(max(int(y_lo), 0), min(int(y_hi) + 2, h)), slice(max(int(x_lo), 0), min(int(x_hi) + 2, w)))
        yy, xx = pixel_grid(h, w)
        py, px = yy[sl], xx[sl]
        dist = _segment_distance(px, py, seg)
        img[sl] += (rng.uniform(0.45, 0.6) * np.clip(1.0 - dist / (1.6 * s), 0, 1)).astype(np.float32)
        mask = np.zeros((h, w), bool)
        mask[sl] = dist < 2.0 * s
        mid = curve[len(curve) // 2]
        return Finding(("vascular calcifications",), mask, self.location(mid[0], mid[1], attrs))

    def _clip(self, rng, img, attrs) -> Finding:
        h, w = img.shape
        s = self.scale
        x, y = self._point(rng, attrs, rmax=0.7)
        ang = rng.uniform(0, math.pi)
        L = 19.0 * s * rng.uniform(0.9, 1.15)
        c, sn = math.cos(ang), math.sin(ang)
        # a "U"-shaped clip: two arms and a base
        arms = []
        for off in (-4.6 * s, 4.6 * s):
            ox, oy = -sn * off, c * off
            arms.append((x + ox - c * L / 2, y + oy - sn * L / 2, x + ox + c * L / 2, y + oy + sn * L / 2))
        arms.append((arms[0][0], arms[0][1], arms[1][0], arms[1][1]))
        sl, py, px = _patch(x, y, L + 3 * s, h, w)
        dist = _segment_distance(px, py, np.array(arms, np.float32))
        body = np.clip(1.4 - dist / (1.4 * s), 0, 1)
        img[sl] = np.maximum(img[sl], (rng.uniform(0.97, 1.0) * body).astype(np.float32))
        mask = np.zeros((h, w), bool)
        mask[sl] = dist < 2.4 * s
        return Finding(("surgical clip",), mask, self.location(x, y, attrs))


class MassFinding(Finding):
    """A mass: its shape concept owns ``mask`` and its margin concept owns ``margin_mask``."""

    def __init__(self, concepts, mask, location, margin_mask):
        super().__init__(concepts, mask, location)
        self.margin_mask = margin_mask


def finding_masks(f: Finding) -> dict[str, np.ndarray]:
    if isinstance(f, MassFinding):
        return {f.concepts[0]: f.mask, f.concepts[1]: f.margin_mask}
    return {c: f.mask for c in f.concepts}


def _word(rng: np.random.Generator, concept: str, p_canonical: float = 0.7) -> str:
    syns = vocab.SYNONYMS.get(concept, (concept,))
    if len(syns) == 1 or rng.random() < p_canonical:
        return syns[0]
    return syns[int(rng.integers(1, len(syns)))]


def _cap(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:]


def report_sentences(smp: Sample, rng: np.random.Generator, p_canonical: float = 0.7) -> list[tuple[str, frozenset[str]]]:
    """The sentences of a report with the concepts each one states (composition first, then the
    findings in random order; an optional view sentence states none)."""
    attrs = smp.attrs
    side = "left" if attrs["laterality"] == "L" else "right"
    comp = vocab.COMPOSITIONS[attrs["composition"]]
    c = _word(rng, comp, p_canonical)
    tpl = vocab.COMPOSITION_TEMPLATES[int(rng.integers(len(vocab.COMPOSITION_TEMPLATES)))]
    out = [(tpl.format(c=c, C=_cap(c)), frozenset([comp]))]
    body = []
    for f in smp.findings:
        if isinstance(f, MassFinding):
            shape, margin = _word(rng, f.concepts[0], p_canonical), _word(rng, f.concepts[1], p_canonical)
            tpl = vocab.MASS_TEMPLATES[int(rng.integers(len(vocab.MASS_TEMPLATES)))]
            art = vocab.article(shape)
            text = tpl.format(a=art, A=_cap(art), shape=shape, Shape=_cap(shape), margin=margin, loc=f.location, side=side)
        else:
            word = _word(rng, f.concepts[0], p_canonical)
            tpl = vocab.FINDING_TEMPLATES[int(rng.integers(len(vocab.FINDING_TEMPLATES)))]
            art = vocab.article(word)
            text = tpl.format(a=art, A=_cap(art) if art else "", f=word, F=_cap(word), loc=f.location, side=side,
                              be="are" if word.endswith("s") else "is")
        body.append((_cap(" ".join(text.split())), frozenset(f.concepts)))
    order = rng.permutation(len(body)) if body else []
    out += [body[i] for i in order]
    if not body:
        out.append((vocab.NORMAL_SENTENCES[int(rng.integers(len(vocab.NORMAL_SENTENCES)))], frozenset()))
    if rng.random() < 0.3:
        view = attrs["view"]
        tpl = vocab.VIEW_SENTENCES[int(rng.integers(len(vocab.VIEW_SENTENCES)))]
        out.append((_cap(tpl.format(side=side, view=view, View=view)), frozenset()))
    return out


def make_report(smp: Sample, rng: np.random.Generator, p_canonical: float = 0.7) -> str:
    """A short radiology-style report of a sample, worded at random from templates and synonyms."""
    return " ".join(text for text, _ in report_sentences(smp, rng, p_canonical))
