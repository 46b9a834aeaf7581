"""The main job: the whole FineShapes pipeline, stage by stage (``make demo``).

Each stage is the command a user would type. A stage whose outputs all exist is skipped,
unless ``--force`` is given or an earlier stage ran in this invocation (its inputs changed).
A failing stage stops the run with its exit status; finished stages stay as they are.
Stage times are written to ``demo/timings.json``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from captioning.utils.io import write_json

PY = sys.executable


@dataclass(frozen=True)
class Stage:
    name: str
    command: list[str]
    outputs: list[str]

    def done(self) -> bool:
        return all(Path(p).exists() for p in self.outputs)


STAGES = [
    Stage("world", [PY, "scripts/make_fineshapes.py", "--seed", "123"],
          ["data/dataset_fineshapes.json", "data/FineShapesEval.json", "data/FineShapesEval.csv",
           "data/fineshapes_scenes.json"]),
    Stage("labels", [PY, "scripts/prepro_labels.py", "--input_json", "data/dataset_fineshapes.json",
                     "--output_json", "data/fineshapes.json", "--output_h5", "data/fineshapes"],
          ["data/fineshapes.json", "data/fineshapes_label.h5"]),
    Stage("ngrams", [PY, "scripts/prepro_ngrams.py", "--input_json", "data/dataset_fineshapes.json",
                     "--dict_json", "data/fineshapes.json", "--output_pkl", "data/fineshapes-train", "--split", "train"],
          ["data/fineshapes-train-words.p", "data/fineshapes-train-idxs.p"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="re-run stages whose outputs exist")
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}
    rerun = args.force
    start = time.time()
    for stage in STAGES:
        if stage.done() and not rerun:
            print(f"[demo] {stage.name}: outputs exist, skipped (FORCE=1 re-runs)", flush=True)
            continue
        print(f"[demo] {stage.name}: {' '.join(Path(c).name if c == PY else c for c in stage.command)}", flush=True)
        t0 = time.time()
        result = subprocess.run(stage.command)
        if result.returncode != 0:
            print(f"[demo] stage {stage.name!r} failed with exit status {result.returncode}; "
                  "earlier stages are kept, fix the error and run `make demo` again", file=sys.stderr)
            return result.returncode
        timings[stage.name] = round(time.time() - t0, 2)
        rerun = True
    total = time.time() - start
    if timings:
        write_json("demo/timings.json", {"stages_s": timings, "total_s": round(total, 2)}, indent=2)
    print(f"[demo] done in {total:.1f}s" + "".join(f"\n  {k:<8} {v:7.1f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
