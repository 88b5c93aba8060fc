"""Ablations: one variant x seed trained and evaluated (:mod:`bigfive.ablation.execute`), run one at a time
(``bigfive ablate``, :mod:`bigfive.ablation.run`) or N at a time (``--all --jobs N``, :mod:`bigfive.ablation.parallel`),
and the comparison over variants with paired significance tests (``bigfive compare``, :mod:`bigfive.ablation.compare`).

The variants live in ``params.yaml`` (``ablation.variants``, defaults in :mod:`bigfive.config.ablation`);
pipelines/ablation/dvc.yaml runs every variant x seed, pipelines/ablation_flow/dvc.yaml compares the
dynamic stream's preprocessing (flow method x T) end to end. See docs/ablation.md.
"""
