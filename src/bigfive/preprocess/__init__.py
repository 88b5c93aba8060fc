"""Preprocessing: raw clips -> face crops (``faces``) -> optical flow (``flow``) -> packed arrays (``features``).

Modules: ``clip`` (one clip end to end; the API ``bigfive predict`` reuses), ``detect`` (batched,
coarse-to-fine MTCNN, main-subject tracking, box smoothing, cropping), ``faces`` / ``flow`` /
``features`` (the DVC stages), ``pool`` (worker pool, manifest, quality report, failure
accounting), ``synth`` (small generated clips for tests and benchmarks). See docs/preprocessing.md.
"""
