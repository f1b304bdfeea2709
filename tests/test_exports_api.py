from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor


def test_exports_are_listed_and_served_without_traversal(small_settings, tmp_path):
    settings = small_settings.replace(data_dir=tmp_path)
    task = settings.results_root / "project_3" / "task_7"
    task.mkdir(parents=True)
    (task / "segments.pkl").write_bytes(b"abc")
    (task / ".segments.pkl.tmp").write_bytes(b"partial")
    (tmp_path / "secret.txt").write_text("no")
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    client = create_app(settings, predictor=predictor).test_client()
    assert client.get("/exports/3").get_json() == {"files": [{"path": "task_7/segments.pkl", "bytes": 3}]}
    assert client.get("/exports/3/task_7/segments.pkl").data == b"abc"
    assert client.get("/exports/3/task_7/.segments.pkl.tmp").status_code == 400
    assert client.get("/exports/3/../../secret.txt").status_code in (400, 404)
    assert client.get("/exports/3/%2e%2e/%2e%2e/secret.txt").status_code in (400, 404)
    assert client.get("/exports/9").get_json() == {"files": []}


def test_exports_do_not_follow_links_out_of_the_results(small_settings, tmp_path):
    settings = small_settings.replace(data_dir=tmp_path / "data")
    root = settings.results_root / "project_4"
    (root / "task_1").mkdir(parents=True)
    (root / "task_1" / "segments.pkl").write_bytes(b"ok")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    (root / "task_1" / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "task_1" / "alias.pkl").symlink_to(root / "task_1" / "segments.pkl")  # stays inside: served
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    client = create_app(settings, predictor=predictor).test_client()
    listed = [f["path"] for f in client.get("/exports/4").get_json()["files"]]
    assert listed == ["task_1/alias.pkl", "task_1/segments.pkl"]
    for path in ("task_1/leak.txt", "linked_dir/secret.txt"):
        response = client.get(f"/exports/4/{path}")
        assert response.status_code == 404 and b"no" != response.data
        assert "no export file" in response.get_json()["error"]
    assert client.get("/exports/4/task_1/alias.pkl").data == b"ok"
    assert client.get("/exports/4/task_1/a%00b").status_code == 400
