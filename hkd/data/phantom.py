"""Synthetic contrast-enhanced abdominal CT phantom with BTCV organ labels.

The phantom is the workflow's default data source. Every case is drawn from a random but plausible
anatomy: an elliptic body with skin, subcutaneous fat and a muscle wall, a spine with discs, ribs,
paraspinal and psoas muscles, lung bases, bowel and colon clutter, unlabelled mesenteric and iliac
vessels, and the 13 BTCV organs as smooth, randomly warped shapes at plausible positions and HU.

Anatomy lives in a reference patient space (millimetres, RAS+: +x patient right, +y anterior, +z
superior) sized for an adult in a 400 mm field of view and a 300 mm abdominal scan length. In-plane
it is scaled to the case's field of view (size x spacing), as a scanner's reconstruction field is
fitted to the patient, and axially to the scanned length (slices x thickness), so that every grid
shows a complete abdomen. The 4x4 affine carries the true voxel spacing.

The two kidneys (and the two adrenals) share one appearance and one shape distribution, mirrored
about the midline: only their side of the body tells them apart. Liver and spleen have close HU.
Even case indices are stored in LPS voxel order, odd ones in RAS; the anatomy in world space does
not depend on the order.

Tumours (optional) are lesions inside the kidneys or the liver: one or several per case, smooth
ellipsoids of varied size, each hypo- or hyperdense against its organ, labelled :data:`TUMOUR_LABEL`.
They are drawn from their own random stream, so a case's anatomy is the same with or without them.
The dataset writer stores cases in the Synapse RawData layout, or in the KiTS19 (kidney tumours,
axial axis first with KiTS19's affine) or LiTS (liver tumours) layout with those datasets' labels,
under the file names the source registry gives each layout (:func:`hkd.data.sources.phantom_files`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from hkd.data.nnunet_files import DESCRIPTION, description
from hkd.data.sources import check_phantom_tumours, phantom_files
from hkd.io import atomic_path, write_json

LABEL_NAMES = {
    0: "background",
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_splenic_vein",
    11: "pancreas",
    12: "right_adrenal",
    13: "left_adrenal",
}

TUMOUR_LABEL = 14  # beside the 13 BTCV ids
#: Where each layout's tumours grow (BTCV ids) and its label ids: source id -> layout id (others: 0).
LAYOUT_LABELS = {
    "kits19": {"organs": (2, 3), "labels": {2: 1, 3: 1, TUMOUR_LABEL: 2}},  # 1 kidney, 2 tumour
    "lits": {"organs": (6,), "labels": {6: 1, TUMOUR_LABEL: 2}},  # 1 liver, 2 tumour
}
TUMOUR_DEFAULTS = {"count": (1, 3), "radius_mm": (8.0, 20.0), "contrast_hu": (30.0, 80.0)}

REF_FOV_MM = 400.0  # reference in-plane field of view
REF_LENGTH_MM = 300.0  # reference scan length (diaphragm dome to iliac crest)
HU_MIN, HU_MAX = -1024, 3071
SMOOTH_SIGMA = 0.6  # in-plane smoothing, voxels

_F32 = np.float32


# --------------------------------------------------------------------------------------------------
# Smooth random fields (low-frequency cosine series, evaluated separably)


def _coeffs(rng: np.random.Generator, n: int, amp: float, comps: int) -> np.ndarray:
    """Random cosine-series coefficients with decaying amplitude; no constant term."""
    m = np.arange(n)
    order = m[:, None, None] + m[None, :, None] + m[None, None, :]
    std = amp * 0.5 ** np.maximum(order - 1, 0)
    std[0, 0, 0] = 0.0
    return (rng.standard_normal((comps, n, n, n)) * std).astype(_F32)


def _basis(coord: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    u = (coord.astype(_F32) - _F32(lo)) / _F32(hi - lo)
    return np.cos(np.pi * u[:, None] * np.arange(n, dtype=_F32)[None, :]).astype(_F32)


def _field(coeffs: np.ndarray, lo, hi, xs, ys, zs) -> np.ndarray:
    """Evaluate ``coeffs`` (comps, n, n, n) on the grid xs x ys x zs -> (comps, X, Y, Z) float32."""
    n = coeffs.shape[1]
    bx, by, bz = (_basis(v, lo[k], hi[k], n) for k, v in enumerate((xs, ys, zs)))
    t = np.einsum("cijk,zk->cijz", coeffs, bz)
    t = np.einsum("cijz,yj->ciyz", t, by)
    return np.einsum("xi,ciyz->cxyz", bx, t)


# --------------------------------------------------------------------------------------------------
# Shape primitives: implicit functions f(p) < 1 inside, in reference millimetres


@dataclass
class _Ellipsoid:
    center: tuple
    semi: tuple
    angle: float = 0.0  # rotation about z, radians

    def extent(self):
        r = max(self.semi[0], self.semi[1])
        c = np.asarray(self.center, float)
        return c - (r, r, self.semi[2]), c + (r, r, self.semi[2])

    def local(self, p):
        cos, sin = _F32(np.cos(self.angle)), _F32(np.sin(self.angle))
        dx, dy = p[0] - _F32(self.center[0]), p[1] - _F32(self.center[1])
        return cos * dx + sin * dy, cos * dy - sin * dx, p[2] - _F32(self.center[2])

    def f(self, p):
        u = self.local(p)
        return sum((u[k] / _F32(self.semi[k])) ** 2 for k in range(3))


@dataclass
class _Tube:
    points: np.ndarray  # (k, 3) polyline
    radii: np.ndarray  # (k,)

    def extent(self):
        r = float(np.max(self.radii))
        return self.points.min(0) - r, self.points.max(0) + r

    def f(self, p):
        out = None
        for a, b, ra, rb in zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:]):
            v = (b - a).astype(_F32)
            w = [p[k] - _F32(a[k]) for k in range(3)]
            t = np.clip((w[0] * v[0] + w[1] * v[1] + w[2] * v[2]) / _F32(max(v @ v, 1e-6)), 0, 1)
            d2 = sum((w[k] - t * v[k]) ** 2 for k in range(3))
            q = d2 / (_F32(ra) + t * _F32(rb - ra)) ** 2
            out = q if out is None else np.minimum(out, q)
        return out


def _tube(points, radii) -> _Tube:
    return _Tube(np.asarray(points, float), np.broadcast_to(np.asarray(radii, float), (len(points),)).copy())


def _union(prims, p):
    f = prims[0].f(p)
    for prim in prims[1:]:
        f = np.minimum(f, prim.f(p))
    return f


# --------------------------------------------------------------------------------------------------
# Canvas


@dataclass
class _Region:
    sl: tuple
    p: tuple  # warped reference coordinates, broadcastable 3D arrays
    lo: np.ndarray
    hi: np.ndarray


class _Canvas:
    """Working volume in RAS voxel order with reference coordinates along each axis."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x, self.y, self.z = (v.astype(_F32) for v in (x, y, z))
        shape = (len(x), len(y), len(z))
        self.image = np.full(shape, -1000.0, _F32)
        self.label = np.zeros(shape, np.uint8)
        self.cavity = np.zeros(shape, bool)

    def box(self, lo, hi):
        """Index slices of the voxels inside [lo, hi] (reference mm), or None when empty."""
        sl = []
        for ax, a, b in zip((self.x, self.y, self.z), lo, hi):
            i0, i1 = np.searchsorted(ax, a, "left"), np.searchsorted(ax, b, "right")
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        return tuple(sl)

    def grid(self, sl):
        return self.x[sl[0]][:, None, None], self.y[sl[1]][None, :, None], self.z[sl[2]][None, None, :]

    def paint(self, sl, mask, value, label=None, clip=True):
        """Set HU (scalar or box array) and optionally the label where ``mask``; later paint wins."""
        if clip:
            mask = mask & self.cavity[sl]
        img = self.image[sl]
        img[mask] = value[mask] if np.ndim(value) else value
        if label is not None:
            self.label[sl][mask] = label


def _warped(cv: _Canvas, rng, prims, amp: float) -> _Region | None:
    """Box around ``prims`` and its coordinates warped by a smooth random displacement (std ~ amp)."""
    coeffs = _coeffs(rng, 4, amp, 3)
    los, his = zip(*(pr.extent() for pr in prims))
    lo, hi = np.min(los, 0) - 4 * amp - 1, np.max(his, 0) + 4 * amp + 1
    sl = cv.box(lo, hi)
    if sl is None:
        return None
    xs, ys, zs = cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]]
    d = _field(coeffs, lo, hi, xs, ys, zs)
    p = (xs[:, None, None] + d[0], ys[None, :, None] + d[1], zs[None, None, :] + d[2])
    return _Region(sl, p, lo, hi)


def _texture(cv: _Canvas, rng, region: _Region | None, amp: float, n: int = 4):
    """Smooth random intensity variation over a region (std ~ amp HU); always consumes the rng."""
    coeffs = _coeffs(rng, n, amp, 1)
    if region is None:
        return None
    sl = region.sl
    return _field(coeffs, region.lo, region.hi, cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]])[0]


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------------------------------
# Case-level appearance


def _draw_hu(rng) -> dict:
    """Per-case tissue HU (contrast phase and scanner variation)."""
    liver = _u(rng, 90, 115)
    cortex = _u(rng, 140, 180)
    return {
        "skin": _u(rng, 30, 50), "fat": _u(rng, -115, -90), "visceral": _u(rng, -105, -80),
        "muscle": _u(rng, 40, 60), "bone": _u(rng, 650, 950), "cancellous": _u(rng, 200, 350),
        "rib": _u(rng, 350, 600), "disc": _u(rng, 70, 100), "csf": _u(rng, 10, 30),
        "table": _u(rng, 50, 200), "lung": _u(rng, -870, -820), "heart": _u(rng, 90, 140),
        "gas": _u(rng, -950, -880),
        "liver": liver, "spleen": liver + _u(rng, 0, 12),
        "cortex": cortex, "medulla": cortex - _u(rng, 45, 70), "pelvis": _u(rng, 0, 25),
        "aorta": _u(rng, 170, 250), "ivc": _u(rng, 110, 150), "portal": _u(rng, 130, 170),
        "pancreas": _u(rng, 75, 105), "bile": _u(rng, 0, 20), "stomach_wall": _u(rng, 50, 80),
        "stomach_fluid": _u(rng, 5, 30), "esophagus": _u(rng, 35, 55), "adrenal": _u(rng, 40, 70),
        "bowel_wall": _u(rng, 70, 110), "bowel_fluid": _u(rng, 5, 30), "oral": _u(rng, 200, 350),
    }


# --------------------------------------------------------------------------------------------------
# Body wall, spine, ribs, table, lungs


def _paint_body(cv: _Canvas, rng, hu) -> dict:
    a, b_ant, b_post = _u(rng, 145, 170), _u(rng, 100, 125), _u(rng, 95, 110)
    harm, phase = rng.normal(0, 0.012, 4), rng.uniform(0, 2 * np.pi, 4)
    gz_amp, gz_phase = _u(rng, 0.0, 0.05), _u(rng, 0, 2 * np.pi)
    skin, fat, fat_ant, wall = 2.5, _u(rng, 8, 30), _u(rng, 0.1, 0.6), _u(rng, 9, 14)

    x2, y2 = cv.x[:, None], cv.y[None, :]
    theta = np.arctan2(y2, x2).astype(_F32)
    wobble = 1 + sum(harm[k] * np.cos((k + 2) * theta + phase[k]) for k in range(4))
    rho = np.sqrt((x2 / a) ** 2 + (y2 / np.where(y2 >= 0, b_ant, b_post)) ** 2) / wobble
    g = 1 + gz_amp * np.sin(2 * np.pi * cv.z / 400 + gz_phase)
    r_mean = 0.5 * (a + 0.5 * (b_ant + b_post))
    depth = ((g[None, None, :] - rho[:, :, None].astype(_F32)) * _F32(r_mean)).astype(_F32)

    inner_fat = (skin + fat * (1 + fat_ant * np.sin(theta))).astype(_F32)[:, :, None]
    img = cv.image
    img[depth >= 0] = hu["skin"]
    img[depth >= skin] = hu["fat"]
    inside_fat = depth >= inner_fat
    img[inside_fat] = hu["muscle"]
    cv.cavity = depth >= inner_fat + _F32(wall)
    img[cv.cavity] = hu["visceral"]
    rows = np.nonzero((rho < float(g.max())).any(axis=0))[0]
    back = float(cv.y[rows[0]]) if len(rows) else float(cv.y[0])
    return {"theta": theta, "depth": depth, "inner_fat": inner_fat, "wall": wall,
            "inside_fat": inside_fat, "back": back}


def _paint_spine(cv: _Canvas, rng, hu, body) -> dict:
    vy, vsx, vsy = _u(rng, -32, -24), _u(rng, 19, 23), _u(rng, 15, 19)
    canal_r = _u(rng, 7, 9)
    canal_y = vy - vsy - canal_r - _u(rng, 1, 3)
    arch_w, spin_w, spin_len = _u(rng, 4, 6), _u(rng, 3, 5), _u(rng, 25, 35)
    cortex = _u(rng, 1.5, 2.5)
    period, disc_h, disc_phase = _u(rng, 30, 36), _u(rng, 6, 9), _u(rng, 0, 36)
    es_x, es_dy, es_sx, es_sy = _u(rng, 28, 36), _u(rng, 8, 18), _u(rng, 26, 34), _u(rng, 18, 24)
    ps_r, ps_top, ps_dy = _u(rng, 18, 26), _u(rng, 165, 200), _u(rng, 0, 6)

    x2, y2 = cv.x[:, None], cv.y[None, :]
    vq = np.sqrt((x2 / vsx) ** 2 + ((y2 - vy) / vsy) ** 2)
    body2 = vq < 1
    core2 = vq < 1 - cortex / min(vsx, vsy)
    cd2 = np.sqrt(x2**2 + (y2 - canal_y) ** 2)
    canal2 = cd2 < canal_r
    arch2 = (cd2 < canal_r + arch_w) & ~canal2 & (y2 < canal_y + 0.6 * canal_r)
    spin2 = (np.abs(x2) < spin_w) & (y2 < canal_y) & (y2 > canal_y - canal_r - spin_len)
    level = (cv.z - disc_phase) % period
    disc = level < disc_h
    spin_z = (level >= disc_h) & (level < 0.75 * period)

    img = cv.image
    e = lambda m2, mz: m2[:, :, None] & mz[None, None, :]  # noqa: E731
    alls = np.ones_like(disc)
    muscles2 = np.zeros_like(body2)
    for side in (1, -1):
        muscles2 |= ((x2 - side * es_x) / es_sx) ** 2 + ((y2 - canal_y + es_dy) / es_sy) ** 2 < 1
    muscles = e(muscles2, alls) & body["inside_fat"]
    # psoas: grows from its origin downwards
    r_z = ps_r * np.clip((ps_top - cv.z) / ps_top, 0, 1) ** 0.6
    psoas = np.zeros_like(muscles)
    for side in (1, -1):
        cx = side * (vsx + 0.7 * r_z + 3)
        psoas |= (x2[:, :, None] - cx) ** 2 + ((y2 - vy - ps_dy) ** 2)[:, :, None] < (r_z**2)[None, None, :]
    img[muscles | psoas] = hu["muscle"]
    img[e(body2, disc)] = hu["disc"]
    img[e(body2, ~disc)] = hu["bone"]
    img[e(core2, ~disc)] = hu["cancellous"]
    img[e(arch2, alls) | e(spin2, spin_z)] = hu["bone"]
    img[e(canal2, alls)] = hu["csf"]
    spine = e(body2 | canal2 | arch2 | spin2, alls) | muscles | psoas
    cv.cavity &= ~spine
    return {"front": vy + vsy}


def _paint_ribs(cv: _Canvas, rng, hu, body) -> None:
    n_ribs, pitch, phase = int(rng.integers(8, 11)), _u(rng, 35, 45), _u(rng, 0, 2 * np.pi)
    z_post, z_ant, width = _u(rng, 140, 170), _u(rng, 200, 230), _u(rng, 0.91, 0.94)
    k0 = int(np.searchsorted(cv.z, min(z_post, z_ant)))
    if k0 >= len(cv.z):
        return
    z = cv.z[k0:]
    theta = body["theta"]
    ang_ok = (np.abs(theta + np.pi / 2) > 0.45) & (np.abs(theta - np.pi / 2) > 0.5)
    z_lo = z_post + (z_ant - z_post) * (np.sin(theta) + 1) / 2
    pattern = np.cos(n_ribs * theta[:, :, None] - 2 * np.pi * z[None, None, :] / pitch + phase) > width
    depth = body["depth"][:, :, k0:]
    shell = (depth >= body["inner_fat"]) & (depth < body["inner_fat"] + body["wall"] + 1)
    ribs = shell & pattern & ang_ok[:, :, None] & (z[None, None, :] > z_lo[:, :, None])
    cv.image[:, :, k0:][ribs] = hu["rib"]
    cv.cavity[:, :, k0:] &= ~ribs


def _paint_table(cv: _Canvas, rng, hu, body) -> None:
    gap, thick, curve = _u(rng, 3, 12), _u(rng, 3, 6), _u(rng, 0.0004, 0.001)
    x2, y2 = cv.x[:, None], cv.y[None, :]
    top = body["back"] - gap + curve * x2**2
    plate = (y2 < top) & (y2 > top - thick) & (np.abs(x2) < 190)
    outside = cv.image < -900
    cv.image[plate[:, :, None] & outside] = hu["table"]


# --------------------------------------------------------------------------------------------------
# Unlabelled clutter: bowel, colon, mesenteric and iliac vessels


def _bowel_content(cv, rng, reg, f, r_mean, kind, hu):
    """HU inside a bowel segment of the given content kind."""
    wall = np.sqrt(f) > 1 - 3.0 / r_mean
    wall_hu = hu["bowel_wall"] if kind != "air" else hu["muscle"]
    if kind == "fluid":
        lumen = hu["bowel_fluid"]
    elif kind == "air":
        lumen = hu["gas"]
    elif kind == "collapsed":
        lumen = wall_hu = hu["muscle"] + 10
    elif kind == "oral":
        lumen = hu["oral"]
    else:  # feces: mottled gas and soft matter
        mottle = _texture(cv, rng, reg, 1.0, n=7)
        lumen = np.where(mottle > 0.6, hu["gas"], -40 + 60 * mottle).astype(_F32)
    out = np.broadcast_to(np.asarray(lumen, _F32), f.shape).copy()
    out[wall] = wall_hu
    return out


def _paint_segment(cv, rng, hu, prim: _Tube, amp, kind):
    """One unlabelled bowel segment with the given content."""
    reg = _warped(cv, rng, [prim], amp)
    mot = rng.integers(0, 2**31)  # separate stream keeps the draw count fixed
    if reg is None:
        return
    f = prim.f(reg.p)
    values = _bowel_content(cv, np.random.default_rng(mot), reg, f, float(np.mean(prim.radii)), kind, hu)
    cv.paint(reg.sl, f < 1, values, label=0)


def _paint_clutter(cv: _Canvas, rng, hu, z_lo: float) -> None:
    # colon frame: ascending (right), transverse (anterior), descending (left)
    colon = [(_u(rng, 95, 115), _u(rng, -15, 10), z_lo - 20), (_u(rng, 95, 115), _u(rng, -5, 15), 130),
             (_u(rng, 80, 100), _u(rng, 30, 50), _u(rng, 160, 175)), (0, _u(rng, 60, 80), _u(rng, 140, 175)),
             (-_u(rng, 80, 100), _u(rng, 30, 50), _u(rng, 175, 195)), (-_u(rng, 95, 115), _u(rng, -10, 10), 140),
             (-_u(rng, 95, 115), _u(rng, -15, 10), z_lo - 20)]
    colon_r = _u(rng, 16, 24)
    for a, b in zip(colon[:-1], colon[1:]):
        kind = ("air", "feces")[int(rng.integers(0, 2))]
        _paint_segment(cv, rng, hu, _tube([a, b], colon_r * _u(rng, 0.8, 1.1)), 4.0, kind)
    # duodenal C-loop around the pancreatic head
    duo = [(_u(rng, 40, 55), _u(rng, 0, 15), _u(rng, 190, 200)), (_u(rng, 55, 65), _u(rng, 15, 25), 170),
           (_u(rng, 40, 50), _u(rng, 25, 35), _u(rng, 148, 156)), (_u(rng, 5, 15), _u(rng, 25, 35), 150),
           (-_u(rng, 15, 25), _u(rng, 20, 30), _u(rng, 155, 165))]
    _paint_segment(cv, rng, hu, _tube(duo, _u(rng, 9, 13)), 3.0, ("fluid", "air", "collapsed")[int(rng.integers(0, 3))])
    # small bowel loops, mostly anterior and caudal
    kinds = ("fluid", "collapsed", "fluid", "collapsed", "air", "feces", "oral", "oral")
    n_kinds = 8 if rng.random() < 0.25 else 6  # some cases have positive oral contrast
    for _ in range(int(rng.integers(55, 75))):
        start = np.array([_u(rng, -105, 105), _u(rng, -15, 95), _u(rng, z_lo - 10, 175)])
        pts = [start]
        for _ in range(2):
            pts.append(pts[-1] + rng.normal(0, 1, 3) * (18, 18, 12))
        kind = kinds[int(rng.integers(0, n_kinds))]
        _paint_segment(cv, rng, hu, _tube(pts, _u(rng, 9, 16)), 3.0, kind)


def _paint_unlabelled_vessels(cv: _Canvas, rng, hu, v: dict) -> None:
    ax, ay, zb = v["aorta_x"], v["aorta_y"], v["bif_z"]
    conf = v["confluence"]
    tubes = [
        (_tube([(ax, ay, zb + 5), (ax + 35, ay - 5, zb - 60)], 6.5), hu["aorta"]),  # iliac arteries
        (_tube([(ax, ay, zb + 5), (ax - 30, ay - 5, zb - 60)], 6.5), hu["aorta"]),
        (_tube([(v["ivc_x"], v["ivc_y"], zb - 5), (v["ivc_x"] + 25, ay - 10, zb - 70)], 8.0), hu["ivc"]),
        (_tube([(v["ivc_x"], v["ivc_y"], zb - 5), (v["ivc_x"] - 45, ay - 12, zb - 70)], 8.0), hu["ivc"]),
        (_tube([(ax, ay + 8, conf[2] - 5), (ax + 3, ay + _u(rng, 18, 25), conf[2] - 40),
                (ax + _u(rng, 2, 10), ay + _u(rng, 20, 30), conf[2] - 120)], 3.5), hu["aorta"]),  # SMA
        (_tube([conf + (2, 2, -5), conf + (_u(rng, 0, 10), _u(rng, 0, 10), -120)], 5.0), hu["portal"]),  # SMV
    ]
    for prim, value in tubes:
        reg = _warped(cv, rng, [prim], 1.5)
        if reg is not None:
            cv.paint(reg.sl, prim.f(reg.p) < 1, value, label=0)


# --------------------------------------------------------------------------------------------------
# Labelled organs


def _paint_simple(cv, rng, prims, amp, value, label, tex_amp=5.0):
    """Warped union of primitives, uniform HU plus a smooth texture."""
    reg = _warped(cv, rng, prims, amp)
    tex = _texture(cv, rng, reg, tex_amp)
    if reg is not None:
        cv.paint(reg.sl, _union(prims, reg.p) < 1, value + tex, label)


def _draw_upper_organs(rng) -> dict:
    """Geometry of liver, spleen and stomach, which also shape the diaphragm."""
    c = (_u(rng, 65, 85), _u(rng, -10, 5), _u(rng, 215, 235))
    liver = [_Ellipsoid(c, (_u(rng, 70, 85), _u(rng, 80, 95), _u(rng, 65, 80)), _u(rng, -0.2, 0.2)),
             _Ellipsoid((c[0] - _u(rng, 70, 85), _u(rng, 30, 50), c[2] + _u(rng, 10, 25)),
                        (_u(rng, 50, 65), _u(rng, 30, 42), _u(rng, 35, 45)), _u(rng, -0.3, 0.1))]
    spleen = _Ellipsoid((-_u(rng, 85, 100), -_u(rng, 35, 55), _u(rng, 225, 245)),
                        (_u(rng, 25, 32), _u(rng, 45, 60), _u(rng, 40, 55)), _u(rng, 0.6, 0.95))
    stomach = [_Ellipsoid((-_u(rng, 45, 60), _u(rng, 0, 15), _u(rng, 245, 260)),
                          (_u(rng, 35, 45), _u(rng, 35, 45), _u(rng, 30, 40))),
               _Ellipsoid((-_u(rng, 25, 40), _u(rng, 40, 55), _u(rng, 200, 215)),
                          (_u(rng, 40, 50), _u(rng, 25, 32), _u(rng, 35, 45)), _u(rng, -0.5, -0.2)),
               _Ellipsoid((_u(rng, 0, 20), _u(rng, 50, 65), _u(rng, 185, 200)),
                          (_u(rng, 30, 40), _u(rng, 18, 24), _u(rng, 18, 24)), _u(rng, -0.3, 0.3))]
    return {"liver": liver, "spleen": spleen, "stomach": stomach}


def _paint_thorax_base(cv: _Canvas, rng, hu, upper: dict, z_top: float) -> None:
    """Lung bases above two diaphragm domes (fitted over liver and spleen/stomach), and the heart."""
    right = upper["liver"][0]
    spleen, fundus = upper["spleen"], upper["stomach"][0]
    left_top = max(spleen.center[2] + spleen.semi[2], fundus.center[2] + fundus.semi[2])
    # (centre x, centre y, dome base z, dome height, footprint semi-axes x, y)
    domes = [(right.center[0], right.center[1], right.center[2], right.semi[2] + _u(rng, 2, 8),
              1.25 * right.semi[0], 1.2 * right.semi[1]),
             (-_u(rng, 60, 80), -_u(rng, 0, 20), left_top - 60, 60 + _u(rng, 2, 8), _u(rng, 85, 100),
              _u(rng, 90, 110))]
    diaphragm = _u(rng, 3, 5)
    heart = _Ellipsoid((-_u(rng, 10, 30), _u(rng, 35, 50), z_top + _u(rng, 35, 60)),
                       (_u(rng, 55, 70), _u(rng, 45, 55), _u(rng, 55, 70)), _u(rng, -0.6, -0.2))
    heart_reg = _warped(cv, rng, [heart], 4.0)
    lung_tex = _coeffs(rng, 4, 15.0, 1)
    x2, y2 = cv.x[:, None], cv.y[None, :]
    z_d = np.full((len(cv.x), len(cv.y)), -np.inf, _F32)
    for cx, cy, cz, h, ax, ay in domes:
        q = np.clip(1 - ((x2 - cx) / ax) ** 2 - ((y2 - cy) / ay) ** 2, 0, 1)
        z_d = np.maximum(z_d, (cz + h * np.sqrt(q)).astype(_F32))
    k0 = int(np.searchsorted(cv.z, float(z_d.min()) - diaphragm))
    if k0 < len(cv.z):
        sl = (slice(None), slice(None), slice(k0, None))
        above = cv.z[None, None, k0:] - z_d[:, :, None]
        lung = above > 0
        lo, hi = (cv.x[0], cv.y[0], cv.z[k0]), (cv.x[-1], cv.y[-1], cv.z[-1] + 1)
        tex = _field(lung_tex, lo, hi, cv.x, cv.y, cv.z[k0:])[0]
        cv.paint(sl, lung, hu["lung"] + tex)
        cv.paint(sl, (above > -diaphragm) & ~lung, hu["muscle"])
    if heart_reg is not None:
        cv.paint(heart_reg.sl, heart.f(heart_reg.p) < 1, hu["heart"])


def _paint_liver(cv, rng, hu, v, prims) -> None:
    reg = _warped(cv, rng, prims, 6.0)
    tex = _texture(cv, rng, reg, 5.0)
    # hepatic veins fanning out from the IVC near the dome
    top = np.array([v["ivc_x"], v["ivc_y"] + 10, prims[0].center[2] + 40])
    veins = [_tube([top, top + (dx, dy, -_u(rng, 20, 40))], _u(rng, 3, 5))
             for dx, dy in ((_u(rng, 50, 70), _u(rng, -10, 10)), (_u(rng, 10, 25), _u(rng, 35, 50)),
                            (-_u(rng, 20, 40), _u(rng, 30, 45)))]
    if reg is not None:
        values = hu["liver"] + tex
        values[_union(veins, reg.p) < 1] = hu["ivc"] - 10
        cv.paint(reg.sl, _union(prims, reg.p) < 1, values, 6)


def _paint_stomach(cv, rng, hu, prims) -> None:
    body = prims[1]
    air_level = body.center[1] + _u(rng, 0.1, 0.5) * body.semi[1]
    wall = _u(rng, 4, 7)
    reg = _warped(cv, rng, prims, 5.0)
    tex = _texture(cv, rng, reg, 6.0)
    if reg is not None:
        f = _union(prims, reg.p)
        values = hu["stomach_fluid"] + tex
        values[np.sqrt(f) > 1 - wall / 35.0] = hu["stomach_wall"]
        interior = np.sqrt(f) < 1 - wall / 35.0
        air = interior & np.broadcast_to(cv.grid(reg.sl)[1] > air_level, f.shape)
        values[air] = hu["gas"]
        cv.paint(reg.sl, f < 1, values, 7)


def _paint_gallbladder(cv, rng, hu) -> None:
    prim = _Ellipsoid((_u(rng, 45, 60), _u(rng, 35, 55), _u(rng, 165, 185)),
                      (_u(rng, 13, 18), _u(rng, 15, 22), _u(rng, 28, 38)), _u(rng, -0.6, 0.0))
    wall = _u(rng, 1.5, 3)
    reg = _warped(cv, rng, [prim], 3.0)
    tex = _texture(cv, rng, reg, 3.0)
    if reg is not None:
        f = prim.f(reg.p)
        values = hu["bile"] + tex
        values[np.sqrt(f) > 1 - wall / 15.0] = hu["bile"] + 35
        cv.paint(reg.sl, f < 1, values, 4)


def _paint_pancreas(cv, rng, hu, v) -> None:
    conf = v["confluence"]
    pts = [(_u(rng, 30, 40), _u(rng, 18, 28), _u(rng, 168, 178)),
           (conf[0] - 5, conf[1] + _u(rng, 10, 14), conf[2] + _u(rng, -2, 4)),
           (-_u(rng, 30, 40), _u(rng, 12, 24), _u(rng, 186, 194)),
           (v["spleen"][0] + _u(rng, 20, 30), v["spleen"][1] + _u(rng, 30, 40), _u(rng, 195, 205))]
    radii = (_u(rng, 14, 19), _u(rng, 9, 12), _u(rng, 9, 12), _u(rng, 7, 10))
    prim = _tube(pts, radii)
    reg = _warped(cv, rng, [prim], 3.0)
    tex = _texture(cv, rng, reg, 8.0, n=6)  # lobulated texture
    if reg is not None:
        cv.paint(reg.sl, prim.f(reg.p) < 1, hu["pancreas"] + tex, 11)


def _draw_kidney(rng, side: int) -> dict:
    """One kidney's geometry; both sides use this same distribution, mirrored in x."""
    return {"center": (side * _u(rng, 60, 75), -_u(rng, 35, 50), _u(rng, 130, 160)),
            "semi": (_u(rng, 24, 30), _u(rng, 28, 36), _u(rng, 45, 60)),
            "angle": -side * _u(rng, 0.3, 0.6)}


def _paint_kidney(cv, rng, hu, geo, side, label, cortex_frac) -> None:
    prim = _Ellipsoid(geo["center"], geo["semi"], geo["angle"])
    rx, ry, rz = geo["semi"]
    notch = ((-side * rx, 0.0, 0.0), (0.45 * rx, 0.35 * ry, 0.45 * rz))
    pelvis = ((-side * 0.45 * rx, 0.0, 0.0), (0.45 * rx, 0.3 * ry, 0.35 * rz))
    reg = _warped(cv, rng, [prim], 3.0)
    tex = _texture(cv, rng, reg, 4.0)
    if reg is None:
        return
    u = prim.local(reg.p)
    q = lambda o, s: sum(((u[k] - _F32(o[k])) / _F32(s[k])) ** 2 for k in range(3))  # noqa: E731
    f = (u[0] / _F32(rx)) ** 2 + (u[1] / _F32(ry)) ** 2 + (u[2] / _F32(rz)) ** 2
    inside = (f < 1) & (q(*notch) > 1)
    values = hu["cortex"] + tex
    values[np.sqrt(f) < 1 - cortex_frac] = hu["medulla"]
    values[q(*pelvis) < 1] = hu["pelvis"]
    cv.paint(reg.sl, inside, values, label)


def _paint_adrenal(cv, rng, hu, kidney, side, label) -> None:
    kz = kidney["center"][2] + kidney["semi"][2]
    apex = np.array([side * _u(rng, 35, 45), -_u(rng, 20, 30), kz + _u(rng, 10, 20)])
    medial = apex + (-side * _u(rng, 3, 8), -_u(rng, 15, 25), -_u(rng, 10, 20))
    lateral = apex + (side * _u(rng, 10, 18), -_u(rng, 12, 20), -_u(rng, 10, 20))
    prim = _tube([medial, apex, lateral], _u(rng, 2.5, 3.5))
    _paint_simple(cv, rng, [prim], 1.0, hu["adrenal"], label, tex_amp=3.0)


def _paint_vessels(cv, rng, hu, v) -> None:
    """Portal/splenic vein (10), IVC (9), aorta (8); painted after the parenchymal organs."""
    conf, hilum = v["confluence"], v["spleen"]
    portal = _tube([conf, (_u(rng, 40, 55), _u(rng, 15, 30), _u(rng, 205, 220))], _u(rng, 6, 8))
    splenic = _tube([conf, (-_u(rng, 25, 35), conf[1] - _u(rng, 4, 10), conf[2] + _u(rng, 4, 10)),
                     (hilum[0] + 25, hilum[1] + 20, hilum[2] - 15)], _u(rng, 4, 6))
    zs = np.linspace(v["bif_z"], v["z_top"] + 40, 6)
    # the IVC bends forward into the liver near the dome
    ivc = _tube([(v["ivc_x"] + rng.normal(0, 2), v["ivc_y"] + 15 * max(0, (z - 230) / 70) + rng.normal(0, 2), z)
                 for z in zs], v["ivc_r"])
    aorta_r = v["aorta_r"] * np.linspace(0.85, 1.0, 6)
    aorta = _tube([(v["aorta_x"] + rng.normal(0, 2), v["aorta_y"] + rng.normal(0, 1.5), z) for z in zs], aorta_r)
    for prim, value, label in ((portal, hu["portal"], 10), (splenic, hu["portal"], 10),
                               (ivc, hu["ivc"], 9), (aorta, hu["aorta"], 8)):
        _paint_simple(cv, rng, [prim], 1.5, value, label, tex_amp=3.0)


def _paint_esophagus(cv, rng, hu, v, fundus: _Ellipsoid) -> None:
    gej = np.array(fundus.center) + (_u(rng, 20, 30), _u(rng, 10, 20), _u(rng, 0, 10))
    pts = [(v["aorta_x"] + _u(rng, 5, 15), v["aorta_y"] + _u(rng, 12, 20), v["z_top"] + 40),
           (-_u(rng, 10, 20), _u(rng, 25, 35), (v["z_top"] + gej[2]) / 2), gej]
    prim = _tube(pts, _u(rng, 6, 8))
    lumen = _tube(pts, 2.0) if rng.random() < 0.5 else None
    reg = _warped(cv, rng, [prim], 1.5)
    tex = _texture(cv, rng, reg, 3.0)
    if reg is not None:
        values = hu["esophagus"] + tex
        if lumen is not None:
            values[lumen.f(reg.p) < 1] = hu["gas"]
        cv.paint(reg.sl, prim.f(reg.p) < 1, values, 5)


# --------------------------------------------------------------------------------------------------
# Tumours


def _paint_tumours(cv: _Canvas, rng, hu, organs: tuple[int, ...], count, radius_mm, contrast_hu) -> int:
    """Paint ``count`` (a range) lesions inside the organs ``organs``; returns how many were placed.

    Each lesion is a randomly rotated ellipsoid of radius ``radius_mm`` (reference mm, a range, per axis
    within +-25%) around a voxel of the organ, kept inside the organ, of HU the organ's plus or minus
    ``contrast_hu`` (hypo- or hyperdense, drawn per lesion).
    """
    n = int(rng.integers(int(count[0]), int(count[1]) + 1))
    placed = 0
    for _ in range(n):
        organ_mask = np.isin(cv.label, organs)
        where = np.flatnonzero(organ_mask)
        if len(where) == 0:
            break
        i, j, k = np.unravel_index(where[rng.integers(len(where))], cv.label.shape)
        organ = int(cv.label[i, j, k])
        center = (float(cv.x[i]), float(cv.y[j]), float(cv.z[k]))
        r = _u(rng, *radius_mm)
        semi = tuple(r * _u(rng, 0.75, 1.25) for _ in range(3))
        prim = _Ellipsoid(center, semi, _u(rng, -np.pi, np.pi))
        base = hu["liver"] if organ == 6 else hu["cortex"]
        value = base + (1 if rng.random() < 0.5 else -1) * _u(rng, *contrast_hu)
        lo, hi = prim.extent()
        sl = cv.box(lo, hi)
        if sl is None:
            continue
        inside = (prim.f(cv.grid(sl)) < 1) & organ_mask[sl]
        tex = _coeffs(rng, 3, 6.0, 1)  # a little texture inside the lesion
        values = value + _field(tex, lo, hi, cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]])[0]
        cv.paint(sl, inside, values, TUMOUR_LABEL, clip=False)
        placed += bool(inside.any())
    return placed


# --------------------------------------------------------------------------------------------------
# Case generation


def orientation_for(index: int) -> str:
    """Voxel order of case ``index``: LPS for even indices, RAS for odd ones."""
    return "LPS" if index % 2 == 0 else "RAS"


def _affine(shape, spacing_xy, thickness, origin, orientation) -> np.ndarray:
    ras = np.diag([spacing_xy, spacing_xy, thickness, 1.0])
    ras[:3, 3] = origin
    if orientation == "RAS":
        return ras
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = (shape[0] - 1, shape[1] - 1)
    return ras @ flip


def _noise_and_smooth(image: np.ndarray, rng, sigma_hu: float, chunk: int = 16) -> None:
    """Add in-plane correlated Gaussian noise of std ``sigma_hu`` and smooth in-plane, in place."""
    k = ndimage.gaussian_filter1d(np.eye(1, 21, 10)[0], SMOOTH_SIGMA)
    gain = _F32(sigma_hu / float(np.sum(k**2)))  # noise std after two 1D passes equals sigma_hu
    for k0 in range(0, image.shape[2], chunk):
        part = image[:, :, k0:k0 + chunk]
        part += rng.standard_normal(part.shape, dtype=_F32) * gain
        tmp = ndimage.gaussian_filter1d(part, SMOOTH_SIGMA, axis=0)
        ndimage.gaussian_filter1d(tmp, SMOOTH_SIGMA, axis=1, output=part)


def generate_case(index: int, seed: int, size: int = 512, n_slices: int = 100, spacing_xy: float = 0.8,
                  slice_thickness: float = 3.0, orientation: str | None = None,
                  tumours: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom case: (image int16 HU, label uint8 BTCV ids, 4x4 affine), all (X, Y, Z).

    Deterministic for (index, seed). ``orientation`` ('LPS' or 'RAS') defaults to
    :func:`orientation_for` (index). ``tumours`` ({"organs": BTCV ids, and the ranges "count",
    "radius_mm", "contrast_hu"}) adds lesions labelled :data:`TUMOUR_LABEL` inside those organs.
    """
    if index < 0 or seed < 0:
        raise ValueError("index and seed must be non-negative")
    if size < 16 or n_slices < 4:
        raise ValueError("phantom needs size >= 16 and n_slices >= 4")
    orientation = orientation or orientation_for(index)
    if orientation not in ("LPS", "RAS"):
        raise ValueError(f"orientation must be 'LPS' or 'RAS', not {orientation!r}")
    rng = np.random.default_rng([int(seed), int(index)])

    # grid in reference space (RAS voxel order)
    off_x, off_y = _u(rng, -8, 8), _u(rng, -15, 5)
    z_lo, z_hi = _u(rng, -15, 15), REF_LENGTH_MM + _u(rng, -15, 15)
    origin = (_u(rng, -10, 10) - (size - 1) / 2 * spacing_xy, _u(rng, -30, 30) - (size - 1) / 2 * spacing_xy,
              round(_u(rng, -900, -100), 1))
    step = REF_FOV_MM / size
    idx = np.arange(size) - (size - 1) / 2
    z = z_lo + (np.arange(n_slices) + 0.5) * (z_hi - z_lo) / n_slices
    cv = _Canvas(idx * step - off_x, idx * step - off_y, z)
    hu = _draw_hu(rng)

    body = _paint_body(cv, rng, hu)
    spine = _paint_spine(cv, rng, hu, body)
    _paint_ribs(cv, rng, hu, body)
    _paint_table(cv, rng, hu, body)
    del body

    v = {"aorta_r": _u(rng, 10, 13), "ivc_r": _u(rng, 9, 12), "bif_z": _u(rng, 5, 25), "z_top": z_hi,
         "confluence": np.array([_u(rng, 0, 12), _u(rng, 22, 32), _u(rng, 178, 190)])}
    v["aorta_x"] = -_u(rng, 10, 18)
    v["aorta_y"] = spine["front"] + v["aorta_r"] + _u(rng, 1, 4)
    v["ivc_x"] = _u(rng, 18, 28)
    v["ivc_y"] = spine["front"] + _u(rng, 5, 12)

    upper = _draw_upper_organs(rng)
    v["spleen"] = upper["spleen"].center
    _paint_thorax_base(cv, rng, hu, upper, z_hi)
    _paint_clutter(cv, rng, hu, z_lo)
    _paint_unlabelled_vessels(cv, rng, hu, v)
    _paint_liver(cv, rng, hu, v, upper["liver"])
    _paint_simple(cv, rng, [upper["spleen"]], 4.0, hu["spleen"], 1)
    _paint_stomach(cv, rng, hu, upper["stomach"])
    _paint_gallbladder(cv, rng, hu)
    _paint_pancreas(cv, rng, hu, v)
    cortex_frac = _u(rng, 0.25, 0.35)
    kidneys = {side: _draw_kidney(rng, side) for side in (1, -1)}
    for side, label in ((1, 2), (-1, 3)):
        _paint_kidney(cv, rng, hu, kidneys[side], side, label, cortex_frac)
    for side, label in ((1, 12), (-1, 13)):
        _paint_adrenal(cv, rng, hu, kidneys[side], side, label)
    _paint_vessels(cv, rng, hu, v)
    _paint_esophagus(cv, rng, hu, v, upper["stomach"][0])
    if tumours:
        spec = {**TUMOUR_DEFAULTS, **tumours}
        _paint_tumours(cv, np.random.default_rng([int(seed), int(index), 2]), hu, tuple(spec["organs"]),
                       spec["count"], spec["radius_mm"], spec["contrast_hu"])

    image, label = cv.image, cv.label
    del cv
    _noise_and_smooth(image, rng, _u(rng, 10, 20))
    np.clip(image, HU_MIN, HU_MAX, out=image)
    image = np.rint(image).astype(np.int16)
    affine = _affine(image.shape, spacing_xy, slice_thickness, origin, orientation)
    if orientation == "LPS":
        image, label = image[::-1, ::-1].copy(), label[::-1, ::-1].copy()
    return image, label, affine


# --------------------------------------------------------------------------------------------------
# Dataset writing


def case_geometry(index: int, seed: int, slices=(80, 120), spacing_xy=(0.7, 0.9),
                  slice_thickness=(2.5, 5.0)) -> tuple[int, float, float]:
    """Slice count, in-plane spacing and slice thickness of case ``index``, drawn from the ranges."""
    rng = np.random.default_rng([int(seed), int(index), 1])
    n = int(rng.integers(int(slices[0]), int(slices[1]) + 1))
    return n, round(_u(rng, *spacing_xy), 4), round(_u(rng, *slice_thickness), 2)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, suffix="".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix) as tmp:
        nib.save(img, tmp)


# KiTS19's voxel order: axis 0 runs inferior (the axial axis first), axis 1 posterior, axis 2 to the
# patient's left; its affine has no translation (the KiTS19 README's "unusual" convention).
def kits19_affine(spacing_xy: float, thickness: float) -> np.ndarray:
    """KiTS19's affine for in-plane spacing ``spacing_xy`` and slice thickness ``thickness`` (mm)."""
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = -spacing_xy, -spacing_xy, -thickness, 1.0
    return affine


def to_kits19(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A phantom volume (X, Y, Z in ``affine``'s LPS or RAS order) in KiTS19's order (:func:`kits19_affine`)."""
    ras = volume if nib.aff2axcodes(affine) == ("R", "A", "S") else volume[::-1, ::-1]
    return np.ascontiguousarray(ras[::-1, ::-1, ::-1].transpose(2, 1, 0))


def write_phantom_dataset(out_dir: str | os.PathLike, n_cases: int, seed: int, size: int = 512,
                          slices: tuple[int, int] = (80, 120), spacing_xy: tuple[float, float] = (0.7, 0.9),
                          slice_thickness: tuple[float, float] = (2.5, 5.0), layout: str = "synapse",
                          tumours: dict | None = None) -> list[str]:
    """Write ``n_cases`` phantom cases; return the case ids the source readers will give them.

    ``layout`` 'synapse': ``out_dir/Training/img/imgNNNN.nii.gz`` (int16 HU) and
    ``out_dir/Training/label/labelNNNN.nii.gz`` (uint8 BTCV ids), cases alternating between LPS (even
    index) and RAS (odd index) voxel order; ids '0001', ... 'kits19': ``case_XXXXX/imaging.nii.gz`` and
    ``segmentation.nii.gz`` in KiTS19's voxel order and affine, labels 0 background, 1 kidney, 2 tumour;
    ids '00000', ... 'lits': ``volume-N.nii`` and ``segmentation-N.nii`` (LPS or RAS as above), labels 0
    background, 1 liver, 2 tumour; ids '000', ... 'nnunet': ``imagesTr/hkd_NNNN_0000.nii.gz`` and
    ``labelsTr/hkd_NNNN.nii.gz`` (BTCV ids) with ``dataset.json`` naming them; ids 'hkd_0000', ...

    ``tumours`` (options ``count``, ``radius_mm``, ``contrast_hu``, see :data:`TUMOUR_DEFAULTS`) places
    lesions in the layout's organ: the kidneys for kits19, the liver for lits; the Synapse layout has
    no tumour label.
    """
    check_phantom_tumours({"layout": layout, "tumours": tumours})
    out = Path(out_dir)
    spec = None if tumours is None else {**tumours, "organs": LAYOUT_LABELS[layout]["organs"]}
    ids = []
    for index in range(n_cases):
        n, sxy, th = case_geometry(index, seed, slices, spacing_xy, slice_thickness)
        image, label, affine = generate_case(index, seed, size, n, sxy, th, tumours=spec)
        if layout in LAYOUT_LABELS:
            table = np.zeros(256, np.uint8)
            for src, dst in LAYOUT_LABELS[layout]["labels"].items():
                table[src] = dst
            label = table[label]
        if layout == "kits19":
            image, label, affine = to_kits19(image, affine), to_kits19(label, affine), kits19_affine(sxy, th)
        case_id, image_path, label_path = phantom_files(layout, index)
        _save_nifti(out / image_path, image, affine)
        _save_nifti(out / label_path, label, affine)
        ids.append(case_id)
    if layout == "nnunet":  # the dataset's description, which its reader requires
        write_json(out / DESCRIPTION, description({name: i for i, name in LABEL_NAMES.items()}, n_cases))
    return ids
