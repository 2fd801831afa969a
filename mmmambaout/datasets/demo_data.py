"""Small, deterministic COCO- and ADE20K-style datasets for a first run without downloads.

COCO demo: textured backgrounds with 1-6 rotated shapes each (``DEMO_CLASSES``), sizes
from small to large, overlapping in z-order. Every mask is the exact pixel set painted
for that object's visible part: an unoccluded polygon shape is stored as the polygon
(pycocotools rasterizes it into exactly the pixels we painted, since we paint with its
rasterization), anything occluded or with a hole as compressed RLE. bbox is the tight
box of the visible mask, area its pixel count.

ADE demo: procedural outdoor scenes (sky, buildings, trees, road) and indoor rooms
(ceiling, walls, floor) with clutter labelled 0. The class ids are ADE20K's own first
seven (1 wall ... 7 road), so the PNGs mean the same as real ADE20K annotations and
mmseg's ``ADE20KDataset`` accepts ``metainfo=DEMO_ADE_METAINFO`` (it only accepts class
names that are a subset of its 150; with ``reduce_zero_label=True`` id k becomes k-1).

Each image draws from its own generator seeded by (seed, split, index), so the first N
images do not depend on how many are made. Output goes to a temporary directory that
is renamed into place with a completion marker inside: an interrupted run leaves no
directory that ``demo_data_ready`` would accept.
"""
import colorsys
import json
import os
import os.path as osp
import shutil
import warnings

import cv2
import numpy as np
from pycocotools import mask as mask_utils

DEMO_CLASSES = ('disc', 'square', 'triangle', 'ring', 'star', 'cross')
DEMO_PALETTE = [(220, 20, 60), (0, 80, 230), (250, 170, 30), (0, 160, 80),
                (160, 60, 220), (0, 200, 220)]
DEMO_METAINFO = dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)

# ADE20K's classes 1..7 with ADE20K's palette, in ADE20K's order (see module docstring).
DEMO_ADE_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road')
DEMO_ADE_PALETTE = [[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50],
                    [4, 200, 3], [120, 120, 80], [140, 140, 140]]
DEMO_ADE_METAINFO = dict(classes=DEMO_ADE_CLASSES, palette=DEMO_ADE_PALETTE)
WALL, BUILDING, SKY, FLOOR, TREE, CEILING, ROAD = range(1, 8)

FORMAT_VERSION = 2  # bump when the generated content changes, so old data is redone
READY_MARKER = '.demo_complete'
_SPLITS = (('train', 0), ('val', 1))
_JPEG_QUALITY = 95


# --------------------------------------------------------------------- paths and marker
def coco_demo_paths(root):
    data_root = osp.join(root, 'coco')
    paths = dict(data_root=data_root)
    for split, _ in _SPLITS:
        paths[f'{split}_img_dir'] = osp.join(data_root, f'{split}2017')
        paths[f'{split}_ann_file'] = osp.join(data_root, 'annotations',
                                              f'instances_{split}2017.json')
    return paths


def ade_demo_paths(root):
    data_root = osp.join(root, 'ade', 'ADEChallengeData2016')
    paths = dict(data_root=data_root)
    for split, folder in (('train', 'training'), ('val', 'validation')):
        paths[f'{split}_img_dir'] = osp.join(data_root, 'images', folder)
        paths[f'{split}_seg_dir'] = osp.join(data_root, 'annotations', folder)
    return paths


def _read_marker(data_root):
    try:
        with open(osp.join(data_root, READY_MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def demo_data_ready(root, kind='all'):
    """True when the demo data of ``kind`` ('coco', 'ade', 'all') is complete under root."""
    kinds = ('coco', 'ade') if kind == 'all' else (kind,)
    paths = dict(coco=coco_demo_paths, ade=ade_demo_paths)
    return all(_read_marker(paths[k](root)['data_root']) is not None for k in kinds)


def _publish(build, data_root, params, force):
    """Run ``build(tmp_dir)`` and rename tmp_dir to data_root with the marker inside.

    Data already complete with the same parameters is kept unless ``force``.
    """
    if not force and _read_marker(data_root) == params:
        return
    parent = osp.dirname(data_root)
    os.makedirs(parent, exist_ok=True)
    tmp = osp.join(parent, f'.{osp.basename(data_root)}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        with open(osp.join(tmp, READY_MARKER), 'w') as f:
            json.dump(params, f, sort_keys=True)
        if not force and _read_marker(data_root) == params:
            return  # another process (e.g. a second rank) published the same data meanwhile
        # Remove the marker first: a crash mid-rmtree must not leave a "complete" tree.
        if osp.exists(osp.join(data_root, READY_MARKER)):
            os.remove(osp.join(data_root, READY_MARKER))
        shutil.rmtree(data_root, ignore_errors=True)
        try:
            os.replace(tmp, data_root)
        except OSError:
            # Another process published first (e.g. two ranks): keep theirs if complete.
            if _read_marker(data_root) != params:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _image_rng(seed, split_id, index):
    return np.random.default_rng([seed, split_id, index])


def _image_shape(rng, image_size):
    lo, hi = image_size
    steps = np.arange(lo, hi + 1, 8)
    return int(rng.choice(steps)), int(rng.choice(steps))  # height, width


def _write_jpg(path, rgb_float):
    bgr = np.ascontiguousarray((np.clip(rgb_float, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    assert ok
    buf.tofile(path)


def _write_png(path, array):
    # Fixed compression level so the bytes do not depend on OpenCV's default.
    ok, buf = cv2.imencode('.png', array, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert ok
    buf.tofile(path)


# ---------------------------------------------------------------------------- textures
def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _random_color(rng, sat=(0.0, 0.5), val=(0.2, 0.9)):
    return _hsv(rng.random(), rng.uniform(*sat), rng.uniform(*val))


def _value_noise(rng, h, w, cell, octaves=3):
    """Smooth noise in [0, 1]: random grids upsampled bicubically, summed over octaves."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        cell = max(1, int(cell))
        gh, gw = h // cell + 3, w // cell + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
        out += amp * up[cell:cell + h, cell:cell + w]
        amp *= 0.5
        cell /= 2
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _coords(h, w, angle):
    """Pixel coordinate projected on the direction ``angle`` (radians)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx * np.cos(angle) + yy * np.sin(angle)


def _blend(c0, c1, t):
    return c0 + (c1 - c0) * t[..., None]


def _stripes(rng, h, w, period, angle, duty=0.5):
    phase = rng.uniform(0, period)
    return (((_coords(h, w, angle) + phase) % period) < duty * period).astype(np.float32)


def _checker(h, w, cell):
    return ((_coords(h, w, 0) // cell + _coords(h, w, np.pi / 2) // cell) % 2).astype(np.float32)


def _background(rng, h, w):
    """A muted random texture: noise, gradient, stripes, checker or a mix."""
    c0 = _random_color(rng)
    c1 = _random_color(rng)
    kind = rng.integers(5)
    if kind == 0:
        t = _value_noise(rng, h, w, rng.uniform(8, 48))
    elif kind == 1:
        t = _coords(h, w, rng.uniform(0, 2 * np.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 2:
        t = _stripes(rng, h, w, rng.uniform(6, 32), rng.uniform(0, np.pi))
    elif kind == 3:
        t = _checker(h, w, rng.uniform(10, 40))
    else:
        t = np.clip(0.6 * _value_noise(rng, h, w, rng.uniform(6, 24))
                    + 0.4 * _stripes(rng, h, w, rng.uniform(8, 24), rng.uniform(0, np.pi)), 0, 1)
    img = _blend(c0, c1, t)
    grain = _value_noise(rng, h, w, 2, octaves=2) - 0.5
    return img + rng.uniform(0.02, 0.12) * grain[..., None]


# -------------------------------------------------------------------------- COCO shapes
# Class hues sit 60 degrees apart and are jittered by +-40, so neighbouring classes
# share colours and the shape has to decide.
_CLASS_HUES = (0.0, 0.6, 0.15, 0.35, 0.8, 0.5)


def _unit_polygon(rng, label):
    """Outline(s) of a shape of radius ~1 centred at 0: (outer, hole or None)."""
    def circle(n, r=1.0, aspect=1.0):
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([r * np.cos(a), r * aspect * np.sin(a)], 1)

    name = DEMO_CLASSES[label]
    if name == 'disc':
        return circle(48, aspect=rng.uniform(0.8, 1.0)), None
    if name == 'square':
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75, None
    if name == 'triangle':
        a = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        return np.stack([np.cos(a), np.sin(a)], 1), None
    if name == 'ring':
        return circle(48), circle(48, rng.uniform(0.45, 0.65))
    if name == 'star':
        a = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([r * np.cos(a), r * np.sin(a)], 1), None
    if name == 'cross':
        t = rng.uniform(0.28, 0.4)
        return np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1],
                         [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]]), None
    raise ValueError(name)


def _rasterize(polygons, h, w):
    """Mask of the union of flat polygons, exactly as pycocotools (and mmdet) decode it."""
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    with warnings.catch_warnings():
        # pycocotools' decode trips NumPy 2's __array__(copy=) deprecation; harmless here.
        warnings.filterwarnings('ignore', "__array__ implementation doesn't accept a copy",
                                DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _encode(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def _random_shape(rng, h, w):
    """A shape instance: label, outer flat polygon, its full mask, whether it has a hole."""
    label = int(rng.integers(len(DEMO_CLASSES)))
    outer, hole = _unit_polygon(rng, label)
    side = min(h, w)
    # Log-uniform radius from ~13 px to a third of the short side: about a third of the
    # instances are COCO-small (< 32^2 px), few below 16 px across, which a detector
    # trained for minutes at this resolution can still find.
    radius = float(np.exp(rng.uniform(np.log(0.08 * side), np.log(0.33 * side))))
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rel = outer @ rot.T * radius
    # whole shape inside the image (truncation at the border would need RLE)
    cx = rng.uniform(-rel[:, 0].min(), w - rel[:, 0].max())
    cy = rng.uniform(-rel[:, 1].min(), h - rel[:, 1].max())

    def place(points):
        xy = np.clip(points @ rot.T * radius + [cx, cy], 0, [w, h])
        # Rounded once: the stored polygon is exactly the one rasterized.
        return [round(float(v), 2) for v in xy.reshape(-1)]

    polygon = place(outer)
    mask = _rasterize([polygon], h, w)
    if hole is not None:
        mask &= ~_rasterize([place(hole)], h, w)
    return dict(label=label, polygon=polygon, mask=mask, has_hole=hole is not None)


def _object_fill(rng, label, h, w):
    hue = _CLASS_HUES[label] + rng.uniform(-40, 40) / 360
    c0 = _hsv(hue, rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
    kind = rng.integers(3)
    if kind == 0:  # flat with mottling
        t = _value_noise(rng, h, w, rng.uniform(3, 12), octaves=2)
        return c0 * (0.85 + 0.3 * t[..., None])
    if kind == 1:  # shading gradient
        t = _coords(h, w, rng.uniform(0, 2 * np.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        return c0 * (0.7 + 0.5 * t[..., None])
    c1 = c0 * rng.uniform(0.6, 0.8)  # two-tone stripes
    return _blend(c0, c1, _stripes(rng, h, w, rng.uniform(4, 12), rng.uniform(0, np.pi)))


def _place_shapes(rng, h, w, min_visible=0.4, min_pixels=40, tries=20):
    """Shapes in z-order (last on top); every one keeps >= min_visible of its area."""
    objects = []
    for _ in range(int(rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5, 6]))):
        for _ in range(tries):
            cand = _random_shape(rng, h, w)
            if cand['mask'].sum() < min_pixels:
                continue
            new_visible = [o['visible'] & ~cand['mask'] for o in objects]
            if all(v.sum() >= max(min_visible * o['mask'].sum(), min_pixels)
                   for v, o in zip(new_visible, objects)):
                for o, v in zip(objects, new_visible):
                    o['visible'] = v
                cand['visible'] = cand['mask'].copy()
                objects.append(cand)
                break
    return objects


def _coco_sample(rng, image_size):
    h, w = _image_shape(rng, image_size)
    img = _background(rng, h, w)
    objects = _place_shapes(rng, h, w)
    for obj in objects:
        fill = _object_fill(rng, obj['label'], h, w)
        np.copyto(img, fill, where=obj['mask'][..., None])
    img += rng.normal(0, rng.uniform(0.005, 0.025), img.shape).astype(np.float32)
    return img, objects


def _coco_annotation(obj, ann_id, image_id):
    visible = obj['visible']
    rle = _encode(visible)
    exact_polygon = not obj['has_hole'] and np.array_equal(visible, obj['mask'])
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return dict(id=ann_id, image_id=image_id, category_id=obj['label'] + 1,
                segmentation=[obj['polygon']] if exact_polygon else rle,
                area=float(visible.sum()), bbox=bbox, iscrowd=0)


def _build_coco(out, num_images, image_size, seed):
    for split, _ in _SPLITS:
        os.makedirs(osp.join(out, f'{split}2017'))
    os.makedirs(osp.join(out, 'annotations'))
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(DEMO_CLASSES)]
    ann_id = 1
    for split, split_id in _SPLITS:
        images, annotations = [], []
        for index in range(num_images[split]):
            rng = _image_rng(seed, split_id, index)
            img, objects = _coco_sample(rng, image_size)
            image_id = split_id * 1_000_000 + index + 1
            file_name = f'{image_id:012d}.jpg'
            _write_jpg(osp.join(out, f'{split}2017', file_name), img)
            images.append(dict(id=image_id, file_name=file_name,
                               height=img.shape[0], width=img.shape[1]))
            for obj in objects:
                annotations.append(_coco_annotation(obj, ann_id, image_id))
                ann_id += 1
        dataset = dict(info=dict(description='mmmambaout demo shapes', version=str(FORMAT_VERSION),
                                 year=2017, seed=seed),
                       licenses=[], images=images, annotations=annotations,
                       categories=categories)
        with open(osp.join(out, 'annotations', f'instances_{split}2017.json'), 'w') as f:
            json.dump(dataset, f, separators=(',', ':'))


def make_coco_demo(root, num_train=400, num_val=50, image_size=(160, 256), seed=0,
                   force=False):
    """Write the COCO-style demo under ``root/coco``; returns ``coco_demo_paths(root)``.

    image_size: (min, max) side length; each image's height and width are drawn
    independently from that range in steps of 8.
    """
    paths = coco_demo_paths(root)
    params = dict(kind='coco', version=FORMAT_VERSION, num_train=num_train, num_val=num_val,
                  image_size=list(image_size), seed=seed)
    _publish(lambda out: _build_coco(out, dict(train=num_train, val=num_val), image_size, seed),
             paths['data_root'], params, force)
    return paths


# --------------------------------------------------------------------------- ADE scenes
def _poly_mask(h, w, points):
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def _disc_mask(h, w, cx, cy, r):
    yy, xx = np.ogrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _paint(img, seg, mask, texture, label):
    np.copyto(img, texture, where=mask[..., None])
    seg[mask] = label


def _sky(rng, h, w):
    top, bottom = rng.choice([
        [(0.55, 0.8, 0.75), (0.55, 0.3, 0.98)],   # clear blue
        [(0.62, 0.6, 0.45), (0.08, 0.6, 0.95)],   # dusk
        [(0.6, 0.1, 0.6), (0.6, 0.05, 0.85)],     # overcast
    ])
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    img = _blend(_hsv(*top), _hsv(*bottom), t)
    cloud_noise = _value_noise(rng, h, w, rng.uniform(16, 48))
    clouds = np.clip((cloud_noise - rng.uniform(0.45, 0.7)) * 3, 0, 1)
    return _blend(img, np.full(3, 0.95, np.float32), clouds)


def _facade(rng, h, w):
    base = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.85))
    img = base * (0.85 + 0.25 * _value_noise(rng, h, w, 4, octaves=2)[..., None])
    period_x, period_y = rng.uniform(8, 16), rng.uniform(9, 18)
    windows = _stripes(rng, h, w, period_x, 0, 0.55) * _stripes(rng, h, w, period_y, np.pi / 2, 0.6)
    glass = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.5))
    return _blend(img, glass, windows)


def _foliage(rng, h, w):
    light = _hsv(rng.uniform(0.22, 0.36), rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.75))
    leaves = _value_noise(rng, h, w, 3, octaves=2)
    return light * (0.45 + 0.75 * leaves[..., None])


def _asphalt(rng, h, w, vanish_x, horizon):
    gray = rng.uniform(0.25, 0.45)
    img = np.full((h, w, 3), gray, np.float32)
    img *= 0.85 + 0.3 * _value_noise(rng, h, w, 2, octaves=2)[..., None]
    # dashed centre line converging to the vanishing point
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = np.maximum(yy - horizon, 1)
    line = (np.abs(xx - vanish_x) < 0.02 * depth) & (((np.log(depth) * 6) % 2) < 1)
    img[line] = _hsv(rng.choice([0.14, 0.0]), rng.choice([0.8, 0.0]), 0.9)
    return img


def _ground(rng, h, w):
    c0 = _hsv(rng.uniform(0.08, 0.3), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6))
    c1 = _hsv(rng.uniform(0.08, 0.3), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6))
    return _blend(c0, c1, _value_noise(rng, h, w, rng.uniform(4, 16)))


def _clutter(rng, img, seg, count):
    """Label-0 things (ignored in training): random shapes in random colours."""
    h, w = seg.shape
    for _ in range(count):
        shape = _random_shape(rng, h, w)
        _paint(img, seg, shape['mask'], _background(rng, h, w), 0)


def _outdoor_scene(rng, h, w):
    img = np.zeros((h, w, 3), np.float32)
    seg = np.zeros((h, w), np.uint8)
    horizon = h * rng.uniform(0.4, 0.65)
    tilt = rng.uniform(-0.08, 0.08)
    yy, xx = np.mgrid[0:h, 0:w]
    horizon_at = horizon + tilt * (xx - w / 2)
    _paint(img, seg, yy < horizon_at, _sky(rng, h, w), SKY)
    _paint(img, seg, yy >= horizon_at, _ground(rng, h, w), 0)
    vanish_x = w * rng.uniform(0.3, 0.7)
    if rng.random() < 0.8:
        left, right = sorted(rng.uniform(-0.3, 1.3, 2) * w)
        right = max(right, left + 0.4 * w)
        road = _poly_mask(h, w, [(vanish_x - 2, horizon), (vanish_x + 2, horizon),
                                 (right, h), (left, h)])
        _paint(img, seg, road & (yy >= horizon_at), _asphalt(rng, h, w, vanish_x, horizon), ROAD)
    for _ in range(int(rng.integers(0, 5))):
        bw = w * rng.uniform(0.12, 0.35)
        x0 = rng.uniform(-0.1 * w, w - 0.5 * bw)
        base = horizon + h * rng.uniform(0.0, 0.12)
        top = h * rng.uniform(0.05, 0.3)
        outline = [(x0, base), (x0 + bw, base), (x0 + bw, top), (x0, top)]
        if rng.random() < 0.3:  # gabled roof
            ridge = top - h * rng.uniform(0.05, 0.15)
            outline[2:] = [(x0 + bw, top), (x0 + bw / 2, ridge), (x0, top)]
        _paint(img, seg, _poly_mask(h, w, outline), _facade(rng, h, w), BUILDING)
    for _ in range(int(rng.integers(0, 4))):
        cx, r = rng.uniform(0, w), h * rng.uniform(0.06, 0.16)
        ground_y = horizon + rng.uniform(0.05, 0.9) * (h - horizon)
        cy = ground_y - r * rng.uniform(1.3, 2.2)
        trunk = _poly_mask(h, w, [(cx - r * 0.12, cy), (cx + r * 0.12, cy),
                                  (cx + r * 0.15, ground_y), (cx - r * 0.15, ground_y)])
        crown = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(3, 7))):
            crown |= _disc_mask(h, w, cx + rng.normal(0, 0.45 * r), cy + rng.normal(0, 0.35 * r),
                                r * rng.uniform(0.5, 0.8))
        bark = _hsv(0.07, 0.6, rng.uniform(0.2, 0.4)) * np.ones((h, w, 3), np.float32)
        _paint(img, seg, trunk, bark, TREE)
        _paint(img, seg, crown, _foliage(rng, h, w), TREE)
    _clutter(rng, img, seg, int(rng.integers(0, 3)))
    return img, seg


def _indoor_scene(rng, h, w):
    img = np.zeros((h, w, 3), np.float32)
    seg = np.zeros((h, w), np.uint8)
    x0, x1 = w * rng.uniform(0.1, 0.4), w * rng.uniform(0.6, 0.9)
    y0, y1 = h * rng.uniform(0.12, 0.35), h * rng.uniform(0.55, 0.8)
    plaster = _hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.6, 0.9))
    wall = plaster * (0.9 + 0.15 * _value_noise(rng, h, w, 6)[..., None])
    if rng.random() < 0.4:  # wallpaper
        wall = _blend(wall, wall * 0.8, _stripes(rng, h, w, rng.uniform(6, 14), 0))
    _paint(img, seg, np.ones((h, w), bool), wall, WALL)
    for side in ([(0, 0), (x0, y0), (x0, y1), (0, h)], [(w, 0), (x1, y0), (x1, y1), (w, h)]):
        shade = _poly_mask(h, w, side)
        img[shade] *= rng.uniform(0.7, 0.9)
    paint = _hsv(rng.random(), rng.uniform(0, 0.1), rng.uniform(0.85, 1.0))
    ceiling = np.ones((h, w, 3), np.float32) * paint
    ceiling *= 0.9 + 0.1 * np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    _paint(img, seg, _poly_mask(h, w, [(0, 0), (w, 0), (x1, y0), (x0, y0)]), ceiling, CEILING)
    wood = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.7))
    if rng.random() < 0.5:  # planks
        floor = _blend(wood, wood * 0.75, _stripes(rng, h, w, rng.uniform(5, 10), np.pi / 2, 0.15))
        floor *= 0.85 + 0.3 * _value_noise(rng, h, w, 3, octaves=2)[..., None]
    else:  # tiles
        checker = _checker(h, w, rng.uniform(10, 24))
        light, dark = _random_color(rng, val=(0.5, 0.95)), _random_color(rng, val=(0.2, 0.6))
        floor = _blend(light, dark, checker)
    _paint(img, seg, _poly_mask(h, w, [(0, h), (w, h), (x1, y1), (x0, y1)]), floor, FLOOR)
    if rng.random() < 0.5:  # a window on the back wall (ADE's windowpane: not a demo class)
        wx0 = rng.uniform(x0, (x0 + x1) / 2)
        wy0 = rng.uniform(y0 + 4, (y0 + y1) / 2)
        window = _poly_mask(h, w, [(wx0, wy0), (wx0 + (x1 - x0) * 0.3, wy0),
                                   (wx0 + (x1 - x0) * 0.3, wy0 + (y1 - y0) * 0.35),
                                   (wx0, wy0 + (y1 - y0) * 0.35)])
        _paint(img, seg, window, _sky(rng, h, w), 0)
    _clutter(rng, img, seg, int(rng.integers(0, 4)))
    return img, seg


def _ade_sample(rng, image_size):
    h, w = _image_shape(rng, image_size)
    scene = _outdoor_scene if rng.random() < 0.6 else _indoor_scene
    img, seg = scene(rng, h, w)
    img += rng.normal(0, rng.uniform(0.005, 0.025), img.shape).astype(np.float32)
    return img, seg


def _build_ade(out, num_images, image_size, seed):
    for (split, split_id), folder in zip(_SPLITS, ('training', 'validation')):
        img_dir = osp.join(out, 'images', folder)
        seg_dir = osp.join(out, 'annotations', folder)
        os.makedirs(img_dir)
        os.makedirs(seg_dir)
        for index in range(num_images[split]):
            img, seg = _ade_sample(_image_rng(seed, split_id, index), image_size)
            name = f'ADE_{split}_{index + 1:08d}'
            _write_jpg(osp.join(img_dir, name + '.jpg'), img)
            _write_png(osp.join(seg_dir, name + '.png'), seg)


def make_ade_demo(root, num_train=400, num_val=50, image_size=(160, 256), seed=0,
                  force=False):
    """Write the ADE20K-style demo under ``root/ade/ADEChallengeData2016``.

    Returns ``ade_demo_paths(root)``; image_size as in ``make_coco_demo``.
    """
    paths = ade_demo_paths(root)
    params = dict(kind='ade', version=FORMAT_VERSION, num_train=num_train, num_val=num_val,
                  image_size=list(image_size), seed=seed)
    _publish(lambda out: _build_ade(out, dict(train=num_train, val=num_val), image_size, seed),
             paths['data_root'], params, force)
    return paths


def make_demo_data(root, kind='all', **kwargs):
    """Make the demo data of ``kind`` ('coco', 'ade', 'all'); returns {kind: paths}."""
    makers = dict(coco=make_coco_demo, ade=make_ade_demo)
    kinds = ('coco', 'ade') if kind == 'all' else (kind,)
    return {k: makers[k](root, **kwargs) for k in kinds}
