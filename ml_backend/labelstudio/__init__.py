"""Label Studio: the client and backoff, the labeling config, tasks and annotations, review."""
