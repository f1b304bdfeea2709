"""Video in, masks out: frames, SAM 2 propagation, the job pipeline, prompts, quality."""
