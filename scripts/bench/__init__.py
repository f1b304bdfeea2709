"""The measurements of ``scripts/bench_video.py``, one module each, sharing a runner.

- :mod:`bench.video`: the synthetic 1080p input video and its SceneDiff prompts;
- :mod:`bench.runner`: model build and warm-up, RSS/time sampling, the fresh-process runner;
- :mod:`bench.report`: number formatting and goal marks for the printed tables;
- :mod:`bench.stock`: SAM 2's stock ``init_state`` path;
- :mod:`bench.job`: our ``run_job`` path;
- :mod:`bench.model_only`: SAM 2 propagation over frames decoded beforehand;
- :mod:`bench.parity`: stock vs ``run_job`` masks on the same video (IoU);
- :mod:`bench.compare`: stock / job / model-only by N, and parity, as one table;
- :mod:`bench.pipeline_alone`: ``run_job`` around a stand-in model that costs nothing (FPS);
- :mod:`bench.long_video`: ``run_job`` on an 18,000-frame video, RSS curve (``--long``).

Nothing here imports torch or the backend at module level: a measurement's child process pays
for what it measures only.
"""
