#!/usr/bin/env python3
"""PyTorch side of `framepack`'s `dit_bench` example: serves timed forwards of the reference's
MEDIUM transformer (`bench_medium.py`: same config, random weights seed 2024, same inputs).

Prints `ready torch <version>` after one warm-up forward, then answers each `run` line on stdin
with the wall time in seconds of one forward; `quit` (or end of input) exits.
"""
from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, help="directory holding bench_medium.py and common.py")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, args.reference)
    try:
        import torch
        from diffusers import HunyuanVideoFramepackTransformer3DModel

        import bench_medium
        from common import randomize_
    except ImportError as e:
        print(f"missing {e.name}", flush=True)
        return
    torch.set_num_threads(args.threads)
    model = HunyuanVideoFramepackTransformer3DModel(**bench_medium.MEDIUM_CONFIG).eval()
    randomize_(model, 2024)
    inputs = bench_medium.make_inputs()
    with torch.inference_mode():
        model(**inputs, return_dict=False)
        print(f"ready torch {torch.__version__}", flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            t0 = time.perf_counter()
            model(**inputs, return_dict=False)
            print(f"{time.perf_counter() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
