"""bigfive: apparent Big Five personality from talking-head video.

Pipeline: data (ChaLearn First Impressions V2 or the embedded sample) -> preprocess (faces,
optical flow, features) -> model (two-stream cross-attention CNN) -> train/evaluate ->
tune/ablate -> predict/serve/export.
"""

__version__ = "0.1.0"

# Order used everywhere (labels.npy columns, model outputs, reports): OCEAN, then interview.
TRAITS: tuple[str, ...] = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
ALL_LABELS: tuple[str, ...] = (*TRAITS, "interview")
SPLITS: tuple[str, ...] = ("train", "val", "test")
