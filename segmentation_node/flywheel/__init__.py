"""The data flywheel: pseudo-labels and hard cases logged as crash-safe COCO shards, and the
human audit that decides which shards may reach training."""
