from ml_backend.app import create_app
from ml_backend.interactive import InteractivePredictor


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
