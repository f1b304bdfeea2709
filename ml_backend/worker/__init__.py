"""The propagation worker: the RQ worker, the queue, the job functions, publishing, progress."""
