"""The five runs of the FineShapes demo (``make demo``): (row label, run id, config)."""
from __future__ import annotations

DEMO_RUNS: tuple[tuple[str, str, str], ...] = (
    ("MLE", "fineshapes_mle", "configs/phase1/fineshapes_mle.yml"),
    ("CIDEr", "fineshapes_cider", "configs/phase2/fineshapes_cider.yml"),
    ("CLIP-S", "fineshapes_clips", "configs/phase2/fineshapes_clips.yml"),
    ("CLIP-S+CIDEr", "fineshapes_cider_clips", "configs/phase2/fineshapes_cider_clips.yml"),
    ("CLIP-S+Grammar", "fineshapes_clips_grammar", "configs/phase2/fineshapes_clips_grammar.yml"),
)
