#!/usr/bin/env python3
"""Regenerate crates/framepack/tests/fixtures/{schedules,unipc_toy}.safetensors (sigma schedules, Euler, UniPC).

Reference implementations: diffusers' FlowMatchEulerDiscreteScheduler for the schedules and
Euler, and FramePack's own `sample_unipc` (bh1) for UniPC, loaded at run time from a checkout
of lllyasviel/FramePack (never copied into this repository).

    python3 -m venv .venv && .venv/bin/pip install torch diffusers safetensors numpy
    .venv/bin/python tools/fixtures_sampling.py --framepack-src PATH/TO/FramePack [--out crates/framepack/tests/fixtures]

Without --framepack-src only schedules.safetensors is written. Tensors are bit-identical to
the shared reference for the same library versions (torch 2.15, diffusers 0.42.1).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

# hunyuanvideo-community/HunyuanVideo scheduler config (static shift 7).
SCHEDULER = dict(num_train_timesteps=1000, shift=7.0, use_dynamic_shifting=False, base_shift=0.5,
                 max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096, invert_sigmas=False,
                 shift_terminal=None, use_karras_sigmas=False, use_exponential_sigmas=False,
                 use_beta_sigmas=False)
STEPS = [1, 2, 3, 5, 10, 25, 30]
SEQ_LENS = [324, 2304, 9216, 14400]  # noisy tokens: tiny 3x12x12/4, 9x32x32/4, 9x64x64/4, 9x80x80/4


def mu_for(seq_len: int) -> float:
    slope = (1.15 - 0.5) / (4096 - 256)
    return min(0.5 + slope * (seq_len - 256), math.log(7.0))


def sigmas_for(n: int, mu: float) -> torch.Tensor:
    t = torch.linspace(1, 0, steps=n + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


def toy_x0(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(0.5 * x) * (1.0 - 0.3 * s)


def save(path: str, tensors: dict, meta: dict) -> None:
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})


def schedules(out_dir: str) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    t, meta = {}, {}
    for L in SEQ_LENS:
        mu = mu_for(L)
        meta[f"mu.L{L}"] = mu
        for n in STEPS:
            t[f"framepack.L{L}.n{n}.sigmas"] = sigmas_for(n, mu)
            sch = FlowMatchEulerDiscreteScheduler(**{**SCHEDULER, "use_dynamic_shifting": True})
            sch.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:-1], mu=mu)
            t[f"diffusers_dynamic.L{L}.n{n}.sigmas"] = sch.sigmas.clone()
            t[f"diffusers_dynamic.L{L}.n{n}.timesteps"] = sch.timesteps.clone()
    for n in STEPS:
        sch = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
        sch.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:-1], mu=1.0)
        t[f"diffusers_pipeline.n{n}.sigmas"] = sch.sigmas.clone()
        t[f"diffusers_pipeline.n{n}.timesteps"] = sch.timesteps.clone()

    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    t["euler.in.noise"] = x.clone()
    sch = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    sch.set_timesteps(sigmas=np.linspace(1.0, 0.0, 6)[:-1], mu=1.0)
    for i, ts in enumerate(sch.timesteps):
        sigma = sch.sigmas[i].reshape(1)
        v = (x - toy_x0(x, sigma)) / sigma
        x = sch.step(v, ts, x, return_dict=False)[0]
        t[f"euler.step{i}.x"] = x.clone()
    t["euler.out"] = x
    t["euler.sigmas"] = sch.sigmas.clone()
    save(os.path.join(out_dir, "schedules.safetensors"), t, meta)


def unipc(out_dir: str, framepack_src: str) -> None:
    path = os.path.join(framepack_src, "diffusers_helper", "k_diffusion", "uni_pc_fm.py")
    spec = importlib.util.spec_from_file_location("fp_uni_pc_fm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = {}
    for n in (1, 2, 3, 6, 25):
        noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(100 + n))
        sig = sigmas_for(n, math.log(7.0))
        rec = []
        out = mod.sample_unipc(lambda x, s, **kw: toy_x0(x, s), noise, sig, extra_args={},
                               callback=lambda d: rec.append((d["x"].clone(), d["denoised"].clone())),
                               disable=True, variant="bh1")
        t[f"n{n}.in.noise"] = noise
        t[f"n{n}.sigmas"] = sig
        for i, (xi, di) in enumerate(rec):
            t[f"n{n}.step{i}.x"] = xi
            t[f"n{n}.step{i}.denoised"] = di
        t[f"n{n}.out"] = out
    save(os.path.join(out_dir, "unipc_toy.safetensors"), t,
         {"toy_model": "x0 = tanh(0.5*x) * (1 - 0.3*sigma)", "variant": "bh1"})


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "framepack", "tests", "fixtures"))
    ap.add_argument("--framepack-src", default=os.environ.get("FRAMEPACK_SRC"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    schedules(args.out)
    if args.framepack_src:
        unipc(args.out, args.framepack_src)
    else:
        print("no --framepack-src: unipc_toy.safetensors not regenerated")


if __name__ == "__main__":
    main()
