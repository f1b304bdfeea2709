"""DAVIS, MOTS and YouTube-VIS exports scored by the field's own evaluators.

Our exports (the real export path: :func:`run_job` with the deterministic stand-in model) are
each evaluator's **prediction**; its **ground truth** is rendered here from the synthetic scene's
known masks, in the layout that tool expects, without any of our exporters. The pair has a
removed, an added and a moved object, and video 2 has a frame with no object at all.

- DAVIS: ``vos-benchmark`` (J&F over folders of PNGs);
- MOTS: ``trackeval``'s KITTI MOTS reader (HOTA, CLEAR);
- YouTube-VIS: ``trackeval``'s YouTube-VIS reader with Track mAP (the YouTube-VIS AP: video IoU,
  AP over IoU thresholds 0.5–0.95).

Both tools pin what our runtime cannot take (trackeval: numpy ≥ 2.3.2, against
opencv-python-headless 4.12's numpy < 2.3; both: ``opencv-python``, which would overwrite the
headless ``cv2``), so they live in their own virtualenv (``make evaluators`` →
``.evaluators/``, or ``EVALUATORS_PYTHON=/path/to/python``) and run here as a subprocess with
the documented commands, read from docs/exports.md. Without that virtualenv those tests skip; the tests
after them, which follow each tool's published reading code in-process, run everywhere.

A damaged export (object 3 shifted 3 px to the right on every frame, from a stand-in model that
shifts it) must score lower in every tool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.synthetic import render, scene_pair

from .fakes import ColorVideoPredictor

ROOT = Path(__file__).resolve().parents[1]
NUM_FRAMES = 8
SIZE = (48, 64)  # h, w
EMPTY = (("video2", 4),)  # frames with no object at all
#: Object id → name. KITTI MOTS scores class ids 1 and 2 only (it calls them car and
#: pedestrian), so the three objects carry two names: mug (class 1) and box (class 2).
NAMES = {1: "mug", 2: "box", 3: "mug"}
SHAPE_OF = {1: "mug", 2: "box", 3: "ball"}  # object id → shape in ml_backend.video.synthetic.scene_pair
CATEGORIES = {"mug": 1, "box": 2}
VIDEO_IDS = {"video1": 1, "video2": 2}
SHIFT = 3  # px, the damaged export's error


class ShiftingColorVideoPredictor(ColorVideoPredictor):
    """The stand-in model, with object 3's mask moved ``SHIFT`` px right on every frame."""

    def propagate_in_video(self, state, *args, **kwargs):
        import torch

        for frame_idx, obj_ids, logits in super().propagate_in_video(state, *args, **kwargs):
            if 3 in obj_ids:
                i = obj_ids.index(3)
                logits[i] = torch.roll(logits[i], shifts=SHIFT, dims=-1)
                logits[i, ..., :SHIFT] = -1.0
            yield frame_idx, obj_ids, logits


def _scene():
    """The pair, with video 2's frame 4 replaced by the bare background (no object)."""
    v1, v2 = scene_pair((NUM_FRAMES, NUM_FRAMES), SIZE)
    bare = render([], 1, *SIZE, seed=2).frames[0]  # scene_pair renders video 2 with seed 2
    for video, frame in EMPTY:
        assert video == "video2"
        v2.frames[frame] = bare
        for masks in v2.masks.values():
            masks[frame] = False
    return {"video1": v1, "video2": v2}


def _center(video, shape, frame):
    return [float(c) for c in video.shapes[shape].center(frame / (NUM_FRAMES - 1))]


def _prompts(scene):
    def obj(obj_id, *where, **flags):
        prompts = [{"video": v, "frame": f, "points": [_center(scene[v], SHAPE_OF[obj_id], f)], "labels": [1]}
                   for v, f in where]  # fmt: skip
        return {"id": obj_id, "name": NAMES[obj_id], **flags, "prompts": prompts}

    return {
        "format": "scenediff",
        "exports": ["davis", "ytvis", "mots"],
        "objects": [
            obj(1, ("video1", 2), in_video1=True, in_video2=False),  # removed
            obj(2, ("video2", 3), in_video1=False, in_video2=True),  # added
            obj(3, ("video1", 6), ("video2", 6)),  # moved
        ],
    }


def truth(scene):
    """``{video: {obj_id: N×H×W bool}}``: the objects present in each video, from the scene."""
    present = {"video1": (1, 3), "video2": (2, 3)}
    return {v: {o: scene[v].masks[SHAPE_OF[o]] for o in present[v]} for v in scene}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """``(root, truth)``: ``root/good`` and ``root/damaged`` are exports, ``root/gt`` the
    ground truth in every tool's layout."""
    root = tmp_path_factory.mktemp("evaluators")
    scene = _scene()
    paths = {v: scene[v].write(root / f"{v}.mkv") for v in scene}
    spec = parse_prompts(_prompts(scene))
    for name, predictor in (("good", ColorVideoPredictor()), ("damaged", ShiftingColorVideoPredictor())):
        with run_job(predictor, spec, paths, root / name, image_size=64, review=False, quality=False):
            pass
    gt = truth(scene)
    write_davis_truth(gt, root / "gt" / "davis")
    write_mots_truth(gt, root / "gt" / "mots")
    write_ytvis_truth(gt, root / "gt" / "youtube_vis_val" / "truth.json")
    return root, gt


# --- ground truth, rendered without our exporters ---------------------------------------------


def labels_of(objects, frame):
    """One frame's object-id image; the smaller id keeps a pixel two objects share."""
    h, w = next(iter(objects.values())).shape[1:]
    out = np.zeros((h, w), np.uint8)
    for obj in sorted(objects, reverse=True):
        out[objects[obj][frame]] = obj
    return out


def write_davis_truth(gt, folder):
    """``folder/<video>/<frame:05d>.png``, grey PNGs of object ids (vos-benchmark reads either)."""
    for video, objects in gt.items():
        (folder / video).mkdir(parents=True)
        for t in range(NUM_FRAMES):
            Image.fromarray(labels_of(objects, t), mode="L").save(folder / video / f"{t:05d}.png")


def write_mots_truth(gt, folder):
    """KITTI MOTS text, ``folder/<video>.txt``: ``t class·1000+id class h w rle``."""
    folder.mkdir(parents=True)
    for video, objects in gt.items():
        lines = []
        for t in range(NUM_FRAMES):
            labels = labels_of(objects, t)
            for obj in objects:
                mask = labels == obj
                if mask.any():
                    cls = CATEGORIES[NAMES[obj]]
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
                    lines.append((t, cls * 1000 + obj, f"{t} {cls * 1000 + obj} {cls} {SIZE[0]} {SIZE[1]} {rle}"))
        (folder / f"{video}.txt").write_text("".join(line + "\n" for *_, line in sorted(lines)))


def uncompressed_rle(mask):
    """COCO uncompressed RLE (column-major runs, starting with background), as in the
    YouTube-VIS ground-truth files."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def write_ytvis_truth(gt, path):
    """A YouTube-VIS 2019 ground-truth file, with uncompressed RLE segmentations."""
    path.parent.mkdir(parents=True)
    h, w = SIZE
    videos = [{"id": VIDEO_IDS[v], "width": w, "height": h, "length": NUM_FRAMES,
               "file_names": [f"{v}/{t:05d}.jpg" for t in range(NUM_FRAMES)]} for v in gt]  # fmt: skip
    annotations = []
    for video, objects in gt.items():
        for obj, masks in objects.items():
            segs = [uncompressed_rle(m) if m.any() else None for m in masks]
            areas = [int(m.sum()) if m.any() else None for m in masks]
            boxes = [[float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))]
                     if m.any() else None for m in masks]  # fmt: skip
            annotations.append({"id": len(annotations) + 1, "video_id": VIDEO_IDS[video],
                                "category_id": CATEGORIES[NAMES[obj]], "iscrowd": 0, "height": h, "width": w,
                                "segmentations": segs, "areas": areas, "bboxes": boxes})  # fmt: skip
    categories = [{"id": i, "name": n, "supercategory": "object"} for n, i in CATEGORIES.items()]
    path.write_text(json.dumps({"info": {}, "licenses": [], "videos": videos, "categories": categories,
                                "annotations": annotations}))  # fmt: skip


def test_the_ground_truth_has_an_empty_frame_and_rle_that_pycocotools_reads(case):
    root, gt = case
    for video, frame in EMPTY:
        assert not any(m[frame].any() for m in gt[video].values())
    data = json.loads((root / "gt" / "youtube_vis_val" / "truth.json").read_text())
    ann = data["annotations"][0]
    t = next(i for i, s in enumerate(ann["segmentations"]) if s)
    rle = mask_utils.frPyObjects(ann["segmentations"][t], *SIZE)
    assert (mask_utils.decode(rle).astype(bool) == gt["video1"][1][t]).all()


# --- the real evaluators, in their own virtualenv, run with the documented commands --------------


def readme_commands():
    """The documented scoring commands (docs/exports.md, "Scoring an export with the field's evaluators"):
    the Python text of each ``$PY - <<'EOF'`` block, in order: DAVIS, MOTS, YouTube-VIS."""
    text = (ROOT / "docs" / "exports.md").read_text()
    section = text.split("## Scoring an export with the field's evaluators", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for chunk in section.split("$PY - <<'EOF'\n")[1:]:
        lines = chunk.split("\n  EOF\n", 1)[0].splitlines()
        blocks.append("\n".join(line[2:] for line in lines) + "\n")  # the blocks are indented in a list
    assert len(blocks) == 3, "docs/exports.md must hold the DAVIS, MOTS and YouTube-VIS commands"
    return dict(zip(("davis", "mots", "ytvis"), blocks, strict=True))


def evaluators_python():
    """The interpreter of the evaluators' virtualenv, or None."""
    configured = os.environ.get("EVALUATORS_PYTHON")
    candidate = Path(configured) if configured else ROOT / ".evaluators" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


needs_evaluators = pytest.mark.skipif(
    evaluators_python() is None,
    reason="the evaluators' virtualenv is missing: `make evaluators` (or set EVALUATORS_PYTHON)",
)


def run_readme_command(fmt, case, name, work):
    """Lay out ``work/gt`` and ``work/export`` (a copy of export ``name``: the tools write
    result files next to their input) as the README says, run the README's command for ``fmt``
    there with the evaluators' python, and return its last printed line."""
    root, _ = case
    shutil.copytree(root / "gt", work / "gt")
    shutil.copytree(root / name, work / "export")
    code = readme_commands()[fmt]
    if fmt == "mots":
        assert f'"SEQ_INFO": {{"video1": {NUM_FRAMES}, "video2": {NUM_FRAMES}}}' in code
    done = subprocess.run([evaluators_python(), "-"], input=code, cwd=work, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    print(fmt, name, last)  # shown with pytest -s
    return last


@needs_evaluators
@pytest.mark.parametrize("name", ["good", "damaged"])
def test_vos_benchmark_scores_the_davis_export(case, tmp_path, name):
    _, jf, _, j, _, f = run_readme_command("davis", case, name, tmp_path).split()
    if name == "good":
        assert float(jf) == float(j) == float(f) == 100.0
    else:
        assert float(jf) < 95.0 and float(j) < 95.0 and float(f) < 95.0


@needs_evaluators
@pytest.mark.parametrize("name", ["good", "damaged"])
def test_trackeval_scores_the_mots_export(case, tmp_path, name):
    import ast

    hota = ast.literal_eval(run_readme_command("mots", case, name, tmp_path))
    if name == "good":
        assert hota == {"car": 1.0, "pedestrian": 1.0}
    else:
        assert hota["car"] < 0.95 and hota["pedestrian"] == 1.0  # object 3 is a mug: class 1, "car"


@needs_evaluators
@pytest.mark.parametrize("name", ["good", "damaged"])
def test_trackeval_scores_the_ytvis_export(case, tmp_path, name):
    label, ap = run_readme_command("ytvis", case, name, tmp_path).split()
    assert label == "AP"
    assert float(ap) == 1.0 if name == "good" else float(ap) < 0.95


# --- the same checks, following each tool's published reading code (no extra packages) --------


def iou(a, b):
    """vos-benchmark's ``get_iou``: two empty masks agree perfectly."""
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def davis_j(gt_root, pred_root):
    """J as ``vos_benchmark.benchmark`` reads the folders: the same video folders (strict), GT
    frames sorted by name without the first and the last, each prediction PNG found by the GT's
    file name and read with ``np.array(Image.open(...))`` (a palette PNG gives its indices),
    objects compared by pixel value, averaged over the objects of the ground truth."""
    gt_videos = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    assert gt_videos == sorted(p.name for p in pred_root.iterdir() if p.is_dir())
    per_object = []
    for video in gt_videos:
        ious, in_gt = {}, set()
        for name in sorted(os.listdir(gt_root / video))[1:-1]:
            gt = np.array(Image.open(gt_root / video / name))
            pred = np.array(Image.open(pred_root / video / name))
            assert gt.shape[-2:] == pred.shape[-2:]
            in_gt |= set(np.unique(gt[gt != 0]).tolist())
            for obj in in_gt | set(np.unique(pred[pred != 0]).tolist()):
                ious.setdefault(obj, []).append(iou(pred == obj, gt == obj))
        per_object += [np.mean(ious[obj]) for obj in in_gt]
    return float(np.mean(per_object))


def read_kitti_mots(path, num_frames):
    """``{t: [(id, class, rle)]}`` as trackeval's KittiMOTS reads a file: space-separated fields,
    time keys in 0…num_frames−1 only, no two masks of a frame overlapping."""
    frames = {}
    for line in path.read_text().splitlines():
        t, obj, cls, h, w, counts = line.split(" ")
        assert 0 <= int(t) < num_frames
        frames.setdefault(int(t), []).append(
            (int(obj), int(cls), {"size": [int(h), int(w)], "counts": counts.encode()})
        )
    for dets in frames.values():
        ids = [obj for obj, _, _ in dets]
        assert len(ids) == len(set(ids))
        rles = [rle for *_, rle in dets]
        for i, a in enumerate(rles):
            for b in rles[i + 1 :]:
                assert mask_utils.area(mask_utils.merge([a, b], intersect=True)) == 0
    return frames


def mots_track_iou(gt_dir, pred_dir):
    """Per class scored by KITTI MOTS (1, 2), each ground-truth track against the predicted
    track it overlaps most: Σ intersections / Σ unions over the frames (1.0 = identical tracks)."""
    out = []
    for gt_file in sorted(gt_dir.glob("*.txt")):
        gt, pred = (read_kitti_mots(p, NUM_FRAMES) for p in (gt_file, pred_dir / gt_file.name))
        for cls in (1, 2):
            tracks = {}
            for frames, side in ((gt, 0), (pred, 1)):
                for t, dets in frames.items():
                    for obj, c, rle in dets:
                        if c == cls:
                            tracks.setdefault((side, obj), {})[t] = rle
            for (side, _obj), rles in tracks.items():
                if side == 0:
                    out.append(max((_track_iou(rles, other) for (s, _), other in tracks.items() if s == 1), default=0))
    return float(np.mean(out))


def _track_iou(a, b):
    inter = union = 0.0
    for t in set(a) | set(b):
        ra, rb = a.get(t), b.get(t)
        both = [r for r in (ra, rb) if r is not None]
        union += mask_utils.area(mask_utils.merge(both, intersect=False))
        if ra is not None and rb is not None:
            inter += mask_utils.area(mask_utils.merge([ra, rb], intersect=True))
    return inter / union if union else 1.0


def ytvis_track_iou(gt_file, export):
    """As trackeval's YouTubeVIS reads a results list (our ``annotations`` plus a score): every
    entry's video id names a ground-truth video and it has one segmentation per frame
    (``null`` = absent); each ground-truth track against the same-category track it overlaps
    most, with YouTube-VIS's video IoU (Σ intersections / Σ unions)."""
    gt = json.loads(gt_file.read_text())
    results = [dict(a, score=1.0) for a in json.loads(export.read_text())["annotations"]]
    length = {v["id"]: len(v["file_names"]) for v in gt["videos"]}
    out = []
    for r in results:
        assert len(r["segmentations"]) == length[r["video_id"]] and {"category_id", "score"} <= set(r)
    for g in gt["annotations"]:
        h, w = g["height"], g["width"]
        want = {t: mask_utils.frPyObjects(s, h, w) for t, s in enumerate(g["segmentations"]) if s}
        same = [r for r in results if r["video_id"] == g["video_id"] and r["category_id"] == g["category_id"]]
        got = [{t: {**s, "counts": s["counts"].encode()} for t, s in enumerate(r["segmentations"]) if s} for r in same]
        out.append(max((_track_iou(want, other) for other in got), default=0))
    return float(np.mean(out))


def test_davis_export_read_as_vos_benchmark_reads_it(case):
    root, _ = case
    assert davis_j(root / "gt" / "davis", root / "good" / "davis") == 1.0
    assert davis_j(root / "gt" / "davis", root / "damaged" / "davis") < 0.95
    for video, frame in EMPTY:  # the empty frame has its PNG, all background
        assert not np.array(Image.open(root / "good" / "davis" / video / f"{frame:05d}.png")).any()


def test_mots_export_read_as_trackeval_reads_it(case):
    root, _ = case
    assert mots_track_iou(root / "gt" / "mots", root / "good" / "mots") == 1.0
    assert mots_track_iou(root / "gt" / "mots", root / "damaged" / "mots") < 0.95
    for video, frame in EMPTY:  # the empty frame has no line
        assert frame not in read_kitti_mots(root / "good" / "mots" / f"{video}.txt", NUM_FRAMES)


def test_ytvis_export_read_as_trackeval_reads_it(case):
    root, _ = case
    gt = root / "gt" / "youtube_vis_val" / "truth.json"
    assert ytvis_track_iou(gt, root / "good" / "ytvis.json") == 1.0
    assert ytvis_track_iou(gt, root / "damaged" / "ytvis.json") < 0.95
    data = json.loads((root / "good" / "ytvis.json").read_text())
    video_id = {v["name"]: v["id"] for v in data["videos"]}
    for video, frame in EMPTY:  # the empty frame is null in every track of its video
        tracks = [a for a in data["annotations"] if a["video_id"] == video_id[video]]
        assert tracks and all(a["segmentations"][frame] is None for a in tracks)
