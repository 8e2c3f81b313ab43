"""The phantom's geometry toolkit: smooth random fields, implicit shape primitives (ellipsoids, tubes) in
reference millimetres, and the canvas of a case's voxel grid they are painted on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32

# --------------------------------------------------------------------------------------------------
# Smooth random fields (low-frequency cosine series, evaluated separably)


def random_coeffs(rng: np.random.Generator, n: int, amp: float, comps: int) -> np.ndarray:
    """Random cosine-series coefficients with decaying amplitude; no constant term."""
    m = np.arange(n)
    order = m[:, None, None] + m[None, :, None] + m[None, None, :]
    std = amp * 0.5 ** np.maximum(order - 1, 0)
    std[0, 0, 0] = 0.0
    return (rng.standard_normal((comps, n, n, n)) * std).astype(F32)


def _basis(coord: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    u = (coord.astype(F32) - F32(lo)) / F32(hi - lo)
    return np.cos(np.pi * u[:, None] * np.arange(n, dtype=F32)[None, :]).astype(F32)


def smooth_field(coeffs: np.ndarray, lo, hi, xs, ys, zs) -> np.ndarray:
    """Evaluate ``coeffs`` (comps, n, n, n) on the grid xs x ys x zs -> (comps, X, Y, Z) float32."""
    n = coeffs.shape[1]
    bx, by, bz = (_basis(v, lo[k], hi[k], n) for k, v in enumerate((xs, ys, zs)))
    t = np.einsum("cijk,zk->cijz", coeffs, bz)
    t = np.einsum("cijz,yj->ciyz", t, by)
    return np.einsum("xi,ciyz->cxyz", bx, t)


# --------------------------------------------------------------------------------------------------
# Shape primitives: implicit functions f(p) < 1 inside, in reference millimetres


@dataclass
class Ellipsoid:
    center: tuple
    semi: tuple
    angle: float = 0.0  # rotation about z, radians

    def extent(self):
        r = max(self.semi[0], self.semi[1])
        c = np.asarray(self.center, float)
        return c - (r, r, self.semi[2]), c + (r, r, self.semi[2])

    def local(self, p):
        cos, sin = F32(np.cos(self.angle)), F32(np.sin(self.angle))
        dx, dy = p[0] - F32(self.center[0]), p[1] - F32(self.center[1])
        return cos * dx + sin * dy, cos * dy - sin * dx, p[2] - F32(self.center[2])

    def f(self, p):
        u = self.local(p)
        return sum((u[k] / F32(self.semi[k])) ** 2 for k in range(3))


@dataclass
class Tube:
    points: np.ndarray  # (k, 3) polyline
    radii: np.ndarray  # (k,)

    def extent(self):
        r = float(np.max(self.radii))
        return self.points.min(0) - r, self.points.max(0) + r

    def f(self, p):
        out = None
        for a, b, ra, rb in zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:]):
            v = (b - a).astype(F32)
            w = [p[k] - F32(a[k]) for k in range(3)]
            t = np.clip((w[0] * v[0] + w[1] * v[1] + w[2] * v[2]) / F32(max(v @ v, 1e-6)), 0, 1)
            d2 = sum((w[k] - t * v[k]) ** 2 for k in range(3))
            q = d2 / (F32(ra) + t * F32(rb - ra)) ** 2
            out = q if out is None else np.minimum(out, q)
        return out


def tube(points, radii) -> Tube:
    return Tube(np.asarray(points, float), np.broadcast_to(np.asarray(radii, float), (len(points),)).copy())


def union(prims, p):
    f = prims[0].f(p)
    for prim in prims[1:]:
        f = np.minimum(f, prim.f(p))
    return f


# --------------------------------------------------------------------------------------------------
# Canvas


@dataclass
class Region:
    sl: tuple
    p: tuple  # warped reference coordinates, broadcastable 3D arrays
    lo: np.ndarray
    hi: np.ndarray


class Canvas:
    """Working volume in RAS voxel order with reference coordinates along each axis."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x, self.y, self.z = (v.astype(F32) for v in (x, y, z))
        shape = (len(x), len(y), len(z))
        self.image = np.full(shape, -1000.0, F32)
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


def warped(cv: Canvas, rng, prims, amp: float) -> Region | None:
    """Box around ``prims`` and its coordinates warped by a smooth random displacement (std ~ amp)."""
    coeffs = random_coeffs(rng, 4, amp, 3)
    los, his = zip(*(pr.extent() for pr in prims))
    lo, hi = np.min(los, 0) - 4 * amp - 1, np.max(his, 0) + 4 * amp + 1
    sl = cv.box(lo, hi)
    if sl is None:
        return None
    xs, ys, zs = cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]]
    d = smooth_field(coeffs, lo, hi, xs, ys, zs)
    p = (xs[:, None, None] + d[0], ys[None, :, None] + d[1], zs[None, None, :] + d[2])
    return Region(sl, p, lo, hi)


def texture(cv: Canvas, rng, region: Region | None, amp: float, n: int = 4):
    """Smooth random intensity variation over a region (std ~ amp HU); always consumes the rng."""
    coeffs = random_coeffs(rng, n, amp, 1)
    if region is None:
        return None
    sl = region.sl
    return smooth_field(coeffs, region.lo, region.hi, cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]])[0]


def uniform(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))
