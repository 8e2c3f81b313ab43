"""The phantom's anatomy: one case's body, skeleton, clutter, labelled organs and optional tumours, painted
on its canvas (:mod:`hkd.data.phantom.shapes`), then scanner noise; :func:`generate_case` draws one case."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hkd.data.phantom.shapes import (
    F32,
    Canvas,
    Ellipsoid,
    Tube,
    random_coeffs,
    smooth_field,
    texture,
    tube,
    uniform,
    union,
    warped,
)

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
TUMOUR_DEFAULTS = {"count": (1, 3), "radius_mm": (8.0, 20.0), "contrast_hu": (30.0, 80.0)}

REF_FOV_MM = 400.0  # reference in-plane field of view
REF_LENGTH_MM = 300.0  # reference scan length (diaphragm dome to iliac crest)
HU_MIN, HU_MAX = -1024, 3071
SMOOTH_SIGMA = 0.6  # in-plane smoothing, voxels
#: The scanner a case is acquired on (:func:`generate_case`'s ``scanner``): the noise std range (HU, drawn per
#: case), its grain (the in-plane smoothing of noise and image, voxels: a softer or sharper reconstruction
#: kernel), the contrast (a factor on every voxel's difference from water, 0 HU) and a calibration offset (HU).
SCANNER_DEFAULTS = {"noise_hu": (10.0, 20.0), "grain": SMOOTH_SIGMA, "contrast": 1.0, "hu_offset": 0.0}


# --------------------------------------------------------------------------------------------------
# Case-level appearance


def _draw_hu(rng) -> dict:
    """Per-case tissue HU (contrast phase and scanner variation)."""
    liver = uniform(rng, 90, 115)
    cortex = uniform(rng, 140, 180)
    return {
        "skin": uniform(rng, 30, 50), "fat": uniform(rng, -115, -90), "visceral": uniform(rng, -105, -80),
        "muscle": uniform(rng, 40, 60), "bone": uniform(rng, 650, 950), "cancellous": uniform(rng, 200, 350),
        "rib": uniform(rng, 350, 600), "disc": uniform(rng, 70, 100), "csf": uniform(rng, 10, 30),
        "table": uniform(rng, 50, 200), "lung": uniform(rng, -870, -820), "heart": uniform(rng, 90, 140),
        "gas": uniform(rng, -950, -880),
        "liver": liver, "spleen": liver + uniform(rng, 0, 12),
        "cortex": cortex, "medulla": cortex - uniform(rng, 45, 70), "pelvis": uniform(rng, 0, 25),
        "aorta": uniform(rng, 170, 250), "ivc": uniform(rng, 110, 150), "portal": uniform(rng, 130, 170),
        "pancreas": uniform(rng, 75, 105), "bile": uniform(rng, 0, 20), "stomach_wall": uniform(rng, 50, 80),
        "stomach_fluid": uniform(rng, 5, 30), "esophagus": uniform(rng, 35, 55), "adrenal": uniform(rng, 40, 70),
        "bowel_wall": uniform(rng, 70, 110), "bowel_fluid": uniform(rng, 5, 30), "oral": uniform(rng, 200, 350),
    }


# --------------------------------------------------------------------------------------------------
# Body wall, spine, ribs, table, lungs


def _paint_body(cv: Canvas, rng, hu) -> dict:
    a, b_ant, b_post = uniform(rng, 145, 170), uniform(rng, 100, 125), uniform(rng, 95, 110)
    harm, phase = rng.normal(0, 0.012, 4), rng.uniform(0, 2 * np.pi, 4)
    gz_amp, gz_phase = uniform(rng, 0.0, 0.05), uniform(rng, 0, 2 * np.pi)
    skin, fat, fat_ant, wall = 2.5, uniform(rng, 8, 30), uniform(rng, 0.1, 0.6), uniform(rng, 9, 14)

    x2, y2 = cv.x[:, None], cv.y[None, :]
    theta = np.arctan2(y2, x2).astype(F32)
    wobble = 1 + sum(harm[k] * np.cos((k + 2) * theta + phase[k]) for k in range(4))
    rho = np.sqrt((x2 / a) ** 2 + (y2 / np.where(y2 >= 0, b_ant, b_post)) ** 2) / wobble
    g = 1 + gz_amp * np.sin(2 * np.pi * cv.z / 400 + gz_phase)
    r_mean = 0.5 * (a + 0.5 * (b_ant + b_post))
    depth = ((g[None, None, :] - rho[:, :, None].astype(F32)) * F32(r_mean)).astype(F32)

    inner_fat = (skin + fat * (1 + fat_ant * np.sin(theta))).astype(F32)[:, :, None]
    img = cv.image
    img[depth >= 0] = hu["skin"]
    img[depth >= skin] = hu["fat"]
    inside_fat = depth >= inner_fat
    img[inside_fat] = hu["muscle"]
    cv.cavity = depth >= inner_fat + F32(wall)
    img[cv.cavity] = hu["visceral"]
    rows = np.nonzero((rho < float(g.max())).any(axis=0))[0]
    back = float(cv.y[rows[0]]) if len(rows) else float(cv.y[0])
    return {"theta": theta, "depth": depth, "inner_fat": inner_fat, "wall": wall,
            "inside_fat": inside_fat, "back": back}


def _paint_spine(cv: Canvas, rng, hu, body) -> dict:
    vy, vsx, vsy = uniform(rng, -32, -24), uniform(rng, 19, 23), uniform(rng, 15, 19)
    canal_r = uniform(rng, 7, 9)
    canal_y = vy - vsy - canal_r - uniform(rng, 1, 3)
    arch_w, spin_w, spin_len = uniform(rng, 4, 6), uniform(rng, 3, 5), uniform(rng, 25, 35)
    cortex = uniform(rng, 1.5, 2.5)
    period, disc_h, disc_phase = uniform(rng, 30, 36), uniform(rng, 6, 9), uniform(rng, 0, 36)
    es_x, es_dy, es_sx, es_sy = uniform(rng, 28, 36), uniform(rng, 8, 18), uniform(rng, 26, 34), uniform(rng, 18, 24)
    ps_r, ps_top, ps_dy = uniform(rng, 18, 26), uniform(rng, 165, 200), uniform(rng, 0, 6)

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


def _paint_ribs(cv: Canvas, rng, hu, body) -> None:
    n_ribs, pitch, phase = int(rng.integers(8, 11)), uniform(rng, 35, 45), uniform(rng, 0, 2 * np.pi)
    z_post, z_ant, width = uniform(rng, 140, 170), uniform(rng, 200, 230), uniform(rng, 0.91, 0.94)
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


def _paint_table(cv: Canvas, rng, hu, body) -> None:
    gap, thick, curve = uniform(rng, 3, 12), uniform(rng, 3, 6), uniform(rng, 0.0004, 0.001)
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
        mottle = texture(cv, rng, reg, 1.0, n=7)
        lumen = np.where(mottle > 0.6, hu["gas"], -40 + 60 * mottle).astype(F32)
    out = np.broadcast_to(np.asarray(lumen, F32), f.shape).copy()
    out[wall] = wall_hu
    return out


def _paint_segment(cv, rng, hu, prim: Tube, amp, kind):
    """One unlabelled bowel segment with the given content."""
    reg = warped(cv, rng, [prim], amp)
    mot = rng.integers(0, 2**31)  # separate stream keeps the draw count fixed
    if reg is None:
        return
    f = prim.f(reg.p)
    values = _bowel_content(cv, np.random.default_rng(mot), reg, f, float(np.mean(prim.radii)), kind, hu)
    cv.paint(reg.sl, f < 1, values, label=0)


def _paint_clutter(cv: Canvas, rng, hu, z_lo: float) -> None:
    # colon frame: ascending (right), transverse (anterior), descending (left)
    colon = [(uniform(rng, 95, 115), uniform(rng, -15, 10), z_lo - 20),
             (uniform(rng, 95, 115), uniform(rng, -5, 15), 130),
             (uniform(rng, 80, 100), uniform(rng, 30, 50), uniform(rng, 160, 175)),
             (0, uniform(rng, 60, 80), uniform(rng, 140, 175)),
             (-uniform(rng, 80, 100), uniform(rng, 30, 50), uniform(rng, 175, 195)),
             (-uniform(rng, 95, 115), uniform(rng, -10, 10), 140),
             (-uniform(rng, 95, 115), uniform(rng, -15, 10), z_lo - 20)]
    colon_r = uniform(rng, 16, 24)
    for a, b in zip(colon[:-1], colon[1:]):
        kind = ("air", "feces")[int(rng.integers(0, 2))]
        _paint_segment(cv, rng, hu, tube([a, b], colon_r * uniform(rng, 0.8, 1.1)), 4.0, kind)
    # duodenal C-loop around the pancreatic head
    duo = [(uniform(rng, 40, 55), uniform(rng, 0, 15), uniform(rng, 190, 200)),
           (uniform(rng, 55, 65), uniform(rng, 15, 25), 170),
           (uniform(rng, 40, 50), uniform(rng, 25, 35), uniform(rng, 148, 156)),
           (uniform(rng, 5, 15), uniform(rng, 25, 35), 150),
           (-uniform(rng, 15, 25), uniform(rng, 20, 30), uniform(rng, 155, 165))]
    duo_tube = tube(duo, uniform(rng, 9, 13))
    _paint_segment(cv, rng, hu, duo_tube, 3.0, ("fluid", "air", "collapsed")[int(rng.integers(0, 3))])
    # small bowel loops, mostly anterior and caudal
    kinds = ("fluid", "collapsed", "fluid", "collapsed", "air", "feces", "oral", "oral")
    n_kinds = 8 if rng.random() < 0.25 else 6  # some cases have positive oral contrast
    for _ in range(int(rng.integers(55, 75))):
        start = np.array([uniform(rng, -105, 105), uniform(rng, -15, 95), uniform(rng, z_lo - 10, 175)])
        pts = [start]
        for _ in range(2):
            pts.append(pts[-1] + rng.normal(0, 1, 3) * (18, 18, 12))
        kind = kinds[int(rng.integers(0, n_kinds))]
        _paint_segment(cv, rng, hu, tube(pts, uniform(rng, 9, 16)), 3.0, kind)


def _paint_unlabelled_vessels(cv: Canvas, rng, hu, v: dict) -> None:
    ax, ay, zb = v["aorta_x"], v["aorta_y"], v["bif_z"]
    conf = v["confluence"]
    tubes = [
        (tube([(ax, ay, zb + 5), (ax + 35, ay - 5, zb - 60)], 6.5), hu["aorta"]),  # iliac arteries
        (tube([(ax, ay, zb + 5), (ax - 30, ay - 5, zb - 60)], 6.5), hu["aorta"]),
        (tube([(v["ivc_x"], v["ivc_y"], zb - 5), (v["ivc_x"] + 25, ay - 10, zb - 70)], 8.0), hu["ivc"]),
        (tube([(v["ivc_x"], v["ivc_y"], zb - 5), (v["ivc_x"] - 45, ay - 12, zb - 70)], 8.0), hu["ivc"]),
        (tube([(ax, ay + 8, conf[2] - 5), (ax + 3, ay + uniform(rng, 18, 25), conf[2] - 40),
                (ax + uniform(rng, 2, 10), ay + uniform(rng, 20, 30), conf[2] - 120)], 3.5), hu["aorta"]),  # SMA
        (tube([conf + (2, 2, -5), conf + (uniform(rng, 0, 10), uniform(rng, 0, 10), -120)], 5.0), hu["portal"]),  # SMV
    ]
    for prim, value in tubes:
        reg = warped(cv, rng, [prim], 1.5)
        if reg is not None:
            cv.paint(reg.sl, prim.f(reg.p) < 1, value, label=0)


# --------------------------------------------------------------------------------------------------
# Labelled organs


def _paint_simple(cv, rng, prims, amp, value, label, tex_amp=5.0):
    """Warped union of primitives, uniform HU plus a smooth texture."""
    reg = warped(cv, rng, prims, amp)
    tex = texture(cv, rng, reg, tex_amp)
    if reg is not None:
        cv.paint(reg.sl, union(prims, reg.p) < 1, value + tex, label)


def _draw_upper_organs(rng) -> dict:
    """Geometry of liver, spleen and stomach, which also shape the diaphragm."""
    c = (uniform(rng, 65, 85), uniform(rng, -10, 5), uniform(rng, 215, 235))
    liver = [Ellipsoid(c, (uniform(rng, 70, 85), uniform(rng, 80, 95), uniform(rng, 65, 80)), uniform(rng, -0.2, 0.2)),
             Ellipsoid((c[0] - uniform(rng, 70, 85), uniform(rng, 30, 50), c[2] + uniform(rng, 10, 25)),
                        (uniform(rng, 50, 65), uniform(rng, 30, 42), uniform(rng, 35, 45)), uniform(rng, -0.3, 0.1))]
    spleen = Ellipsoid((-uniform(rng, 85, 100), -uniform(rng, 35, 55), uniform(rng, 225, 245)),
                        (uniform(rng, 25, 32), uniform(rng, 45, 60), uniform(rng, 40, 55)), uniform(rng, 0.6, 0.95))
    stomach = [Ellipsoid((-uniform(rng, 45, 60), uniform(rng, 0, 15), uniform(rng, 245, 260)),
                          (uniform(rng, 35, 45), uniform(rng, 35, 45), uniform(rng, 30, 40))),
               Ellipsoid((-uniform(rng, 25, 40), uniform(rng, 40, 55), uniform(rng, 200, 215)),
                          (uniform(rng, 40, 50), uniform(rng, 25, 32), uniform(rng, 35, 45)), uniform(rng, -0.5, -0.2)),
               Ellipsoid((uniform(rng, 0, 20), uniform(rng, 50, 65), uniform(rng, 185, 200)),
                          (uniform(rng, 30, 40), uniform(rng, 18, 24), uniform(rng, 18, 24)), uniform(rng, -0.3, 0.3))]
    return {"liver": liver, "spleen": spleen, "stomach": stomach}


def _paint_thorax_base(cv: Canvas, rng, hu, upper: dict, z_top: float) -> None:
    """Lung bases above two diaphragm domes (fitted over liver and spleen/stomach), and the heart."""
    right = upper["liver"][0]
    spleen, fundus = upper["spleen"], upper["stomach"][0]
    left_top = max(spleen.center[2] + spleen.semi[2], fundus.center[2] + fundus.semi[2])
    # (centre x, centre y, dome base z, dome height, footprint semi-axes x, y)
    domes = [(right.center[0], right.center[1], right.center[2], right.semi[2] + uniform(rng, 2, 8),
              1.25 * right.semi[0], 1.2 * right.semi[1]),
             (-uniform(rng, 60, 80), -uniform(rng, 0, 20), left_top - 60, 60 + uniform(rng, 2, 8),
              uniform(rng, 85, 100), uniform(rng, 90, 110))]
    diaphragm = uniform(rng, 3, 5)
    heart = Ellipsoid((-uniform(rng, 10, 30), uniform(rng, 35, 50), z_top + uniform(rng, 35, 60)),
                       (uniform(rng, 55, 70), uniform(rng, 45, 55), uniform(rng, 55, 70)), uniform(rng, -0.6, -0.2))
    heart_reg = warped(cv, rng, [heart], 4.0)
    lung_tex = random_coeffs(rng, 4, 15.0, 1)
    x2, y2 = cv.x[:, None], cv.y[None, :]
    z_d = np.full((len(cv.x), len(cv.y)), -np.inf, F32)
    for cx, cy, cz, h, ax, ay in domes:
        q = np.clip(1 - ((x2 - cx) / ax) ** 2 - ((y2 - cy) / ay) ** 2, 0, 1)
        z_d = np.maximum(z_d, (cz + h * np.sqrt(q)).astype(F32))
    k0 = int(np.searchsorted(cv.z, float(z_d.min()) - diaphragm))
    if k0 < len(cv.z):
        sl = (slice(None), slice(None), slice(k0, None))
        above = cv.z[None, None, k0:] - z_d[:, :, None]
        lung = above > 0
        lo, hi = (cv.x[0], cv.y[0], cv.z[k0]), (cv.x[-1], cv.y[-1], cv.z[-1] + 1)
        tex = smooth_field(lung_tex, lo, hi, cv.x, cv.y, cv.z[k0:])[0]
        cv.paint(sl, lung, hu["lung"] + tex)
        cv.paint(sl, (above > -diaphragm) & ~lung, hu["muscle"])
    if heart_reg is not None:
        cv.paint(heart_reg.sl, heart.f(heart_reg.p) < 1, hu["heart"])


def _paint_liver(cv, rng, hu, v, prims) -> None:
    reg = warped(cv, rng, prims, 6.0)
    tex = texture(cv, rng, reg, 5.0)
    # hepatic veins fanning out from the IVC near the dome
    top = np.array([v["ivc_x"], v["ivc_y"] + 10, prims[0].center[2] + 40])
    veins = [tube([top, top + (dx, dy, -uniform(rng, 20, 40))], uniform(rng, 3, 5))
             for dx, dy in ((uniform(rng, 50, 70), uniform(rng, -10, 10)), (uniform(rng, 10, 25), uniform(rng, 35, 50)),
                            (-uniform(rng, 20, 40), uniform(rng, 30, 45)))]
    if reg is not None:
        values = hu["liver"] + tex
        values[union(veins, reg.p) < 1] = hu["ivc"] - 10
        cv.paint(reg.sl, union(prims, reg.p) < 1, values, 6)


def _paint_stomach(cv, rng, hu, prims) -> None:
    body = prims[1]
    air_level = body.center[1] + uniform(rng, 0.1, 0.5) * body.semi[1]
    wall = uniform(rng, 4, 7)
    reg = warped(cv, rng, prims, 5.0)
    tex = texture(cv, rng, reg, 6.0)
    if reg is not None:
        f = union(prims, reg.p)
        values = hu["stomach_fluid"] + tex
        values[np.sqrt(f) > 1 - wall / 35.0] = hu["stomach_wall"]
        interior = np.sqrt(f) < 1 - wall / 35.0
        air = interior & np.broadcast_to(cv.grid(reg.sl)[1] > air_level, f.shape)
        values[air] = hu["gas"]
        cv.paint(reg.sl, f < 1, values, 7)


def _paint_gallbladder(cv, rng, hu) -> None:
    prim = Ellipsoid((uniform(rng, 45, 60), uniform(rng, 35, 55), uniform(rng, 165, 185)),
                      (uniform(rng, 13, 18), uniform(rng, 15, 22), uniform(rng, 28, 38)), uniform(rng, -0.6, 0.0))
    wall = uniform(rng, 1.5, 3)
    reg = warped(cv, rng, [prim], 3.0)
    tex = texture(cv, rng, reg, 3.0)
    if reg is not None:
        f = prim.f(reg.p)
        values = hu["bile"] + tex
        values[np.sqrt(f) > 1 - wall / 15.0] = hu["bile"] + 35
        cv.paint(reg.sl, f < 1, values, 4)


def _paint_pancreas(cv, rng, hu, v) -> None:
    conf = v["confluence"]
    pts = [(uniform(rng, 30, 40), uniform(rng, 18, 28), uniform(rng, 168, 178)),
           (conf[0] - 5, conf[1] + uniform(rng, 10, 14), conf[2] + uniform(rng, -2, 4)),
           (-uniform(rng, 30, 40), uniform(rng, 12, 24), uniform(rng, 186, 194)),
           (v["spleen"][0] + uniform(rng, 20, 30), v["spleen"][1] + uniform(rng, 30, 40), uniform(rng, 195, 205))]
    radii = (uniform(rng, 14, 19), uniform(rng, 9, 12), uniform(rng, 9, 12), uniform(rng, 7, 10))
    prim = tube(pts, radii)
    reg = warped(cv, rng, [prim], 3.0)
    tex = texture(cv, rng, reg, 8.0, n=6)  # lobulated texture
    if reg is not None:
        cv.paint(reg.sl, prim.f(reg.p) < 1, hu["pancreas"] + tex, 11)


def _draw_kidney(rng, side: int) -> dict:
    """One kidney's geometry; both sides use this same distribution, mirrored in x."""
    return {"center": (side * uniform(rng, 60, 75), -uniform(rng, 35, 50), uniform(rng, 130, 160)),
            "semi": (uniform(rng, 24, 30), uniform(rng, 28, 36), uniform(rng, 45, 60)),
            "angle": -side * uniform(rng, 0.3, 0.6)}


def _paint_kidney(cv, rng, hu, geo, side, label, cortex_frac) -> None:
    prim = Ellipsoid(geo["center"], geo["semi"], geo["angle"])
    rx, ry, rz = geo["semi"]
    notch = ((-side * rx, 0.0, 0.0), (0.45 * rx, 0.35 * ry, 0.45 * rz))
    pelvis = ((-side * 0.45 * rx, 0.0, 0.0), (0.45 * rx, 0.3 * ry, 0.35 * rz))
    reg = warped(cv, rng, [prim], 3.0)
    tex = texture(cv, rng, reg, 4.0)
    if reg is None:
        return
    u = prim.local(reg.p)
    q = lambda o, s: sum(((u[k] - F32(o[k])) / F32(s[k])) ** 2 for k in range(3))  # noqa: E731
    f = (u[0] / F32(rx)) ** 2 + (u[1] / F32(ry)) ** 2 + (u[2] / F32(rz)) ** 2
    inside = (f < 1) & (q(*notch) > 1)
    values = hu["cortex"] + tex
    values[np.sqrt(f) < 1 - cortex_frac] = hu["medulla"]
    values[q(*pelvis) < 1] = hu["pelvis"]
    cv.paint(reg.sl, inside, values, label)


def _paint_adrenal(cv, rng, hu, kidney, side, label) -> None:
    kz = kidney["center"][2] + kidney["semi"][2]
    apex = np.array([side * uniform(rng, 35, 45), -uniform(rng, 20, 30), kz + uniform(rng, 10, 20)])
    medial = apex + (-side * uniform(rng, 3, 8), -uniform(rng, 15, 25), -uniform(rng, 10, 20))
    lateral = apex + (side * uniform(rng, 10, 18), -uniform(rng, 12, 20), -uniform(rng, 10, 20))
    prim = tube([medial, apex, lateral], uniform(rng, 2.5, 3.5))
    _paint_simple(cv, rng, [prim], 1.0, hu["adrenal"], label, tex_amp=3.0)


def _paint_vessels(cv, rng, hu, v) -> None:
    """Portal/splenic vein (10), IVC (9), aorta (8); painted after the parenchymal organs."""
    conf, hilum = v["confluence"], v["spleen"]
    portal = tube([conf, (uniform(rng, 40, 55), uniform(rng, 15, 30), uniform(rng, 205, 220))], uniform(rng, 6, 8))
    splenic = tube([conf, (-uniform(rng, 25, 35), conf[1] - uniform(rng, 4, 10), conf[2] + uniform(rng, 4, 10)),
                     (hilum[0] + 25, hilum[1] + 20, hilum[2] - 15)], uniform(rng, 4, 6))
    zs = np.linspace(v["bif_z"], v["z_top"] + 40, 6)
    # the IVC bends forward into the liver near the dome
    ivc = tube([(v["ivc_x"] + rng.normal(0, 2), v["ivc_y"] + 15 * max(0, (z - 230) / 70) + rng.normal(0, 2), z)
                 for z in zs], v["ivc_r"])
    aorta_r = v["aorta_r"] * np.linspace(0.85, 1.0, 6)
    aorta = tube([(v["aorta_x"] + rng.normal(0, 2), v["aorta_y"] + rng.normal(0, 1.5), z) for z in zs], aorta_r)
    for prim, value, label in ((portal, hu["portal"], 10), (splenic, hu["portal"], 10),
                               (ivc, hu["ivc"], 9), (aorta, hu["aorta"], 8)):
        _paint_simple(cv, rng, [prim], 1.5, value, label, tex_amp=3.0)


def _paint_esophagus(cv, rng, hu, v, fundus: Ellipsoid) -> None:
    gej = np.array(fundus.center) + (uniform(rng, 20, 30), uniform(rng, 10, 20), uniform(rng, 0, 10))
    pts = [(v["aorta_x"] + uniform(rng, 5, 15), v["aorta_y"] + uniform(rng, 12, 20), v["z_top"] + 40),
           (-uniform(rng, 10, 20), uniform(rng, 25, 35), (v["z_top"] + gej[2]) / 2), gej]
    prim = tube(pts, uniform(rng, 6, 8))
    lumen = tube(pts, 2.0) if rng.random() < 0.5 else None
    reg = warped(cv, rng, [prim], 1.5)
    tex = texture(cv, rng, reg, 3.0)
    if reg is not None:
        values = hu["esophagus"] + tex
        if lumen is not None:
            values[lumen.f(reg.p) < 1] = hu["gas"]
        cv.paint(reg.sl, prim.f(reg.p) < 1, values, 5)


# --------------------------------------------------------------------------------------------------
# Tumours


def _paint_tumours(cv: Canvas, rng, hu, organs: tuple[int, ...], count, radius_mm, contrast_hu) -> int:
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
        r = uniform(rng, *radius_mm)
        semi = tuple(r * uniform(rng, 0.75, 1.25) for _ in range(3))
        prim = Ellipsoid(center, semi, uniform(rng, -np.pi, np.pi))
        base = hu["liver"] if organ == 6 else hu["cortex"]
        value = base + (1 if rng.random() < 0.5 else -1) * uniform(rng, *contrast_hu)
        lo, hi = prim.extent()
        sl = cv.box(lo, hi)
        if sl is None:
            continue
        inside = (prim.f(cv.grid(sl)) < 1) & organ_mask[sl]
        tex = random_coeffs(rng, 3, 6.0, 1)  # a little texture inside the lesion
        values = value + smooth_field(tex, lo, hi, cv.x[sl[0]], cv.y[sl[1]], cv.z[sl[2]])[0]
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


def _noise_and_smooth(image: np.ndarray, rng, sigma_hu: float, grain: float = SMOOTH_SIGMA, chunk: int = 16) -> None:
    """Add in-plane correlated Gaussian noise of std ``sigma_hu`` and smooth in-plane by ``grain`` voxels, in place."""
    k = ndimage.gaussian_filter1d(np.eye(1, 21, 10)[0], grain)
    gain = F32(sigma_hu / float(np.sum(k**2)))  # noise std after two 1D passes equals sigma_hu
    for k0 in range(0, image.shape[2], chunk):
        part = image[:, :, k0:k0 + chunk]
        part += rng.standard_normal(part.shape, dtype=F32) * gain
        tmp = ndimage.gaussian_filter1d(part, grain, axis=0)
        ndimage.gaussian_filter1d(tmp, grain, axis=1, output=part)


def generate_case(index: int, seed: int, size: int = 512, n_slices: int = 100, spacing_xy: float = 0.8,
                  slice_thickness: float = 3.0, orientation: str | None = None,
                  tumours: dict | None = None,
                  scanner: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom case: (image int16 HU, label uint8 BTCV ids, 4x4 affine), all (X, Y, Z).

    Deterministic for (index, seed). ``orientation`` ('LPS' or 'RAS') defaults to
    :func:`orientation_for` (index). ``tumours`` ({"organs": BTCV ids, and the ranges "count",
    "radius_mm", "contrast_hu"}) adds lesions labelled :data:`TUMOUR_LABEL` inside those organs.
    ``scanner`` overrides :data:`SCANNER_DEFAULTS` (noise, grain, contrast, HU offset): the same anatomy
    acquired on another scanner.
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
    off_x, off_y = uniform(rng, -8, 8), uniform(rng, -15, 5)
    z_lo, z_hi = uniform(rng, -15, 15), REF_LENGTH_MM + uniform(rng, -15, 15)
    origin = (uniform(rng, -10, 10) - (size - 1) / 2 * spacing_xy, uniform(rng, -30, 30) - (size - 1) / 2 * spacing_xy,
              round(uniform(rng, -900, -100), 1))
    step = REF_FOV_MM / size
    idx = np.arange(size) - (size - 1) / 2
    z = z_lo + (np.arange(n_slices) + 0.5) * (z_hi - z_lo) / n_slices
    cv = Canvas(idx * step - off_x, idx * step - off_y, z)
    hu = _draw_hu(rng)

    body = _paint_body(cv, rng, hu)
    spine = _paint_spine(cv, rng, hu, body)
    _paint_ribs(cv, rng, hu, body)
    _paint_table(cv, rng, hu, body)
    del body

    v = {"aorta_r": uniform(rng, 10, 13), "ivc_r": uniform(rng, 9, 12), "bif_z": uniform(rng, 5, 25), "z_top": z_hi,
         "confluence": np.array([uniform(rng, 0, 12), uniform(rng, 22, 32), uniform(rng, 178, 190)])}
    v["aorta_x"] = -uniform(rng, 10, 18)
    v["aorta_y"] = spine["front"] + v["aorta_r"] + uniform(rng, 1, 4)
    v["ivc_x"] = uniform(rng, 18, 28)
    v["ivc_y"] = spine["front"] + uniform(rng, 5, 12)

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
    cortex_frac = uniform(rng, 0.25, 0.35)
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
    unknown = sorted(set(scanner or {}) - set(SCANNER_DEFAULTS))
    if unknown:
        raise ValueError(f"phantom scanner: unknown key(s) {unknown}; known: {', '.join(SCANNER_DEFAULTS)}")
    scanner = {**SCANNER_DEFAULTS, **(scanner or {})}
    _noise_and_smooth(image, rng, uniform(rng, *scanner["noise_hu"]), scanner["grain"])
    if scanner["contrast"] != 1.0 or scanner["hu_offset"] != 0.0:
        image *= F32(scanner["contrast"])
        image += F32(scanner["hu_offset"])
    np.clip(image, HU_MIN, HU_MAX, out=image)
    image = np.rint(image).astype(np.int16)
    affine = _affine(image.shape, spacing_xy, slice_thickness, origin, orientation)
    if orientation == "LPS":
        image, label = image[::-1, ::-1].copy(), label[::-1, ::-1].copy()
    return image, label, affine
