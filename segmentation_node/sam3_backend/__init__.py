"""SAM3 backend of the perception core: builders (small random-init or full checkpoint), a
stateless batched image predictor, bounded per-view tracker streams and the backend that ties
them to the `SegmentationBackend` protocol. Runs the real `sam3` package code, CPU included."""
