"""DAVIS, YouTube-VIS and MOTS exports, read back by independent readers (PIL, pycocotools, and a
small MOTS line parser written from the format's description), on a pair with a removed, an added
and a moved object: every format equals ground truth on every frame (IoU 1.0)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ml_backend.exceptions import ConfigurationError, PromptError
from ml_backend.settings import Settings
from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.synthetic import scene_pair

from .fakes import ColorVideoPredictor

NAMES = {1: "mug", 2: "box", 3: "ball"}  # 1 removed (video 1 only), 2 added (video 2 only), 3 moved


def center(video, name, frame):
    return [float(c) for c in video.shapes[name].center(frame / (len(video.frames) - 1))]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    v1, v2 = scene_pair((10, 8), (96, 128), (80, 112))
    p1, p2 = v1.write(tmp / "before.mkv"), v2.write(tmp / "after.mkv")
    prompts = {
        "format": "scenediff",
        "exports": ["davis", "ytvis", "mots"],
        "objects": [
            {"id": 1, "name": "mug", "in_video1": True, "in_video2": False,
             "prompts": [{"video": "video1", "frame": 4, "points": [center(v1, "mug", 4)], "labels": [1]}]},
            {"id": 2, "name": "box", "in_video1": False, "in_video2": True,
             "prompts": [{"video": "video2", "frame": 3, "points": [center(v2, "box", 3)], "labels": [1]}]},
            {"id": 3, "name": "ball", "prompts": [
                {"video": "video1", "frame": 6, "points": [center(v1, "ball", 6)], "labels": [1]},
                {"video": "video2", "frame": 7, "points": [center(v2, "ball", 7)], "labels": [1]}]},
        ],
    }  # fmt: skip
    out = tmp / "out"
    with run_job(ColorVideoPredictor(), parse_prompts(prompts), {"video1": p1, "video2": p2}, out, image_size=64):
        pass
    truth = {"video1": (v1, [1, 3]), "video2": (v2, [2, 3])}
    return out, truth


def exclusive(synthetic, ids, frame):
    """Ground-truth label image: the smaller object id keeps overlapping pixels."""
    h, w = synthetic.frames[0].shape[:2]
    labels = np.zeros((h, w), np.uint8)
    for obj in sorted(ids, reverse=True):
        labels[synthetic.masks[NAMES[obj]][frame]] = obj
    return labels


def test_davis_pngs_are_palette_images_of_object_ids(pair):
    out, truth = pair
    for video, (synthetic, ids) in truth.items():
        files = sorted((out / "davis" / video).iterdir())
        assert [f.name for f in files] == [f"{i:05d}.png" for i in range(len(synthetic.frames))]
        for i, path in enumerate(files):
            image = Image.open(path)
            assert image.mode == "P"
            assert image.getpalette()[3:12] == [128, 0, 0, 0, 128, 0, 128, 128, 0]  # DAVIS colours 1–3
            assert (np.array(image) == exclusive(synthetic, ids, i)).all(), (video, i)


def test_ytvis_json_decodes_to_the_segments_pkl_masks(pair):
    out, truth = pair
    data = json.loads((out / "ytvis.json").read_text())
    segments = pickle.loads((out / "segments.pkl").read_bytes())
    assert {c["name"] for c in data["categories"]} == {"mug", "box", "ball"}
    category = {c["id"]: c["name"] for c in data["categories"]}
    videos = {v["id"]: v for v in data["videos"]}
    assert [v["name"] for v in data["videos"]] == ["video1", "video2"]
    seen = set()
    for ann in data["annotations"]:
        video = videos[ann["video_id"]]
        synthetic, _ = truth[video["name"]]
        obj = ann["object_id"]
        assert category[ann["category_id"]] == NAMES[obj] and ann["iscrowd"] == 0
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == video["length"]
        for i, rle in enumerate(ann["segmentations"]):
            want = synthetic.masks[NAMES[obj]][i]
            if rle is None:
                assert not want.any() and ann["areas"][i] is None and ann["bboxes"][i] is None
                continue
            coco = {"size": rle["size"], "counts": rle["counts"].encode()}
            got = mask_utils.decode(coco).astype(bool)
            assert (got == want).all(), (video["name"], obj, i)
            pkl = segments[f"{video['name']}_objects"][obj][str(i)]
            assert (
                mask_utils.decode({"size": pkl["size"], "counts": pkl["counts"].encode()}).astype(bool) == got
            ).all()
            assert ann["areas"][i] == int(want.sum())
            ys, xs = np.nonzero(want)
            assert ann["bboxes"][i] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        seen.add((video["name"], obj))
    assert seen == {("video1", 1), ("video1", 3), ("video2", 2), ("video2", 3)}  # absent objects: none


def read_mots(path):
    """A MOTS reader from the format's description: ``time_frame id class_id img_height img_width rle``."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 6, line
        t, obj, cls, h, w = (int(v) for v in fields[:5])
        mask = mask_utils.decode({"size": [h, w], "counts": fields[5].encode()}).astype(bool)
        rows.append((t, obj, cls, mask))
    return rows


def test_mots_text_gives_exclusive_masks(pair):
    out, truth = pair
    categories = {"mug": 1, "box": 2, "ball": 3}
    for video, (synthetic, ids) in truth.items():
        rows = read_mots(out / "mots" / f"{video}.txt")
        assert rows == sorted(rows, key=lambda r: (r[0], r[1]))
        by_frame = {}
        for t, obj_code, cls, mask in rows:
            assert obj_code // 1000 == cls == categories[NAMES[obj_code % 1000]]
            by_frame.setdefault(t, {})[obj_code % 1000] = mask
        for i in range(len(synthetic.frames)):
            labels = exclusive(synthetic, ids, i)
            got = by_frame.get(i, {})
            for obj in ids:
                want = labels == obj
                assert (got[obj] == want).all() if want.any() else obj not in got, (video, obj, i)
            union = np.zeros_like(labels, bool)
            for mask in got.values():
                assert not (union & mask).any()  # MOTS masks never overlap
                union |= mask


def test_davis_palette_is_the_standard_one():
    from ml_backend.exporters.davis import PALETTE

    colours = [tuple(PALETTE[3 * i : 3 * i + 3]) for i in range(9)]
    assert colours == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
                       (0, 128, 128), (128, 128, 128), (64, 0, 0)]  # fmt: skip


def doc(**changes):
    base = {"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[1, 1]], "labels": [1]}]}]}
    return {**base, **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (doc(exports=["gif"]), "unknown export format 'gif'"),
        (doc(exports="davis,,mots"), "list of export format names"),
        (doc(exports=[3]), "list of export format names"),
    ],
)
def test_bad_export_lists_are_refused(data, message):
    with pytest.raises(PromptError, match=message):
        parse_prompts(data)


def test_export_choice_rules():
    from ml_backend.exporters.registry import choose_exports

    spec = parse_prompts(doc(exports="davis, mots"))
    assert choose_exports(spec, ["mots", "ytvis"]) == ["scenediff", "review", "quality", "davis", "mots", "ytvis"]
    assert choose_exports(spec, review=False) == ["scenediff", "quality", "davis", "mots"]
    assert choose_exports(spec, review=False, quality=False) == ["scenediff", "davis", "mots"]
    with pytest.raises(PromptError, match="needs a greenscreen job"):
        choose_exports(spec, ["greenscreen"])
    with pytest.raises(ConfigurationError, match="EXPORTS names an unknown format 'png'"):
        Settings(exports="davis,png")
    assert Settings(exports="davis, ytvis").export_list == ["davis", "ytvis"]


def test_ids_that_do_not_fit_a_format_are_refused(tmp_path):
    from ml_backend.video.synthetic import moving_shapes

    video = moving_shapes(num_frames=3, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    for fmt, obj_id, message in (("davis", 300, "pixel values 1–255"), ("mots", 1000, "≥ 1000")):
        spec = parse_prompts(
            doc(exports=[fmt], objects=[{"id": obj_id, "prompts": [{"frame": 0, "points": [[1, 1]], "labels": [1]}]}])
        )
        with pytest.raises(PromptError, match=message):
            run_job(ColorVideoPredictor(), spec, {"video1": path}, tmp_path / fmt, image_size=64)
        assert not (tmp_path / fmt / "segments.pkl").exists()


def test_overlapping_masks_go_to_the_smaller_id_in_davis_and_mots(tmp_path):
    """The stand-in predictor never overlaps objects, so drive the two exporters directly."""
    from types import SimpleNamespace

    from ml_backend.exporters.davis import DavisExport
    from ml_backend.exporters.interface import ExportJob
    from ml_backend.exporters.masks import rle_encode
    from ml_backend.exporters.mots import MOTSExport
    from ml_backend.exporters.staging import Staging

    spec = parse_prompts(
        doc(
            objects=[
                {"id": i, "name": n, "prompts": [{"frame": 0, "points": [[1, 1]], "labels": [1]}]}
                for i, n in ((2, "b"), (5, "a"))
            ]
        )
    )
    staging = Staging(tmp_path / "out")
    job = ExportJob(spec, staging)
    a = np.zeros((20, 30), bool)
    a[2:12, 2:20] = True  # object 2
    b = np.zeros((20, 30), bool)
    b[8:18, 10:28] = True  # object 5, overlapping object 2 on [8:12, 10:20]
    source = SimpleNamespace(num_frames=1, height=20, width=30, files=None, path=tmp_path)
    davis, mots = DavisExport(job), MOTSExport(job)
    for exporter in (davis, mots):
        exporter.start_video("video1", source)
    for exporter in (davis, mots):
        exporter.add("video1", 0, {2: a, 5: b}, None)
    mots.finish({"video1": {2: {"0": rle_encode(a)}, 5: {"0": rle_encode(b)}}})
    staging.publish()
    labels = np.array(Image.open(tmp_path / "out" / "davis" / "video1" / "00000.png"))
    assert (labels[8:12, 10:20] == 2).all() and (labels[a] == 2).all() and (labels[b & ~a] == 5).all()
    rows = {obj: mask for _, obj, _, mask in read_mots(tmp_path / "out" / "mots" / "video1.txt")}
    assert sorted(rows) == [1002, 2005]  # class 1 = "b" (first name), class 2 = "a"
    assert (rows[1002] == a).all() and (rows[2005] == (b & ~a)).all()


def test_a_prompt_file_that_contradicts_itself_is_refused():
    data = doc(objects=[{"id": 1, "in_video2": False, "prompts": [
        {"video": "video1", "frame": 0, "points": [[1, 1]], "labels": [1]},
        {"video": "video2", "frame": 0, "points": [[1, 1]], "labels": [1]}]}])  # fmt: skip
    with pytest.raises(PromptError, match="has prompts in video2 but in_video2 is false"):
        parse_prompts(data)


def test_inference_data_names_the_frame_files_of_a_frames_folder(tmp_path):
    import os

    from ml_backend.video.synthetic import moving_shapes

    video = moving_shapes(num_frames=4, height=48, width=64)
    folder = video.write(tmp_path / "frames")  # a folder of PNG frames
    x, y = center(video, "disc", 1)
    spec = parse_prompts(doc(objects=[{"id": 4, "prompts": [{"frame": 1, "points": [[x, y]], "labels": [1]}]}]))
    with run_job(ColorVideoPredictor(), spec, {"video1": folder}, tmp_path / "out", image_size=64, review=False):
        pass
    inference = pickle.loads((tmp_path / "out" / "inference_data.pkl").read_bytes())["video1"]
    paths = [os.path.join(inference["frames_dir"], name) for name in inference["frame_names"]]
    assert len(paths) == 4 and all(os.path.isfile(p) for p in paths) and inference["video_path"] is None
    assert inference["obj_idx_to_id"] == {0: 4} and list(inference["point_inputs_per_obj"]) == [0]
