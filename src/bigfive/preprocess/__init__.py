"""Preprocessing: raw clips -> face crops (``faces``) -> optical flow (``flow``) -> packed arrays (``features``).

Modules: ``clip`` (one clip end to end; the API ``bigfive predict`` reuses), ``detect`` (batched,
coarse-to-fine MTCNN, main-subject tracking, box smoothing, cropping), ``faces`` / ``flow`` /
``features`` (the DVC stages), ``layout`` (where the stages put each clip's output, read by the next
stage), ``readahead`` (decoding the next clip while this one is searched), ``pool`` (worker pool,
manifest, quality report, failure accounting). See docs/preprocessing.md.
"""
