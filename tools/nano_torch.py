#!/usr/bin/env python3
"""PyTorch side of `nano_eval`'s section benchmark: the same section workload as the Rust side,
on the same weights and inputs.

One run is `steps` forwards of diffusers' HunyuanVideoFramepackTransformer3DModel (the bundle's
`transformer/`, f32) with Euler flow-matching updates between them, then one decode of the
section's latents with upstream's taehv.py at the bundle's widths (`vae/`, a TAEHV whose latents
are divided by its `scaling_factor` first). The inputs come from a safetensors file the Rust side
writes (`nano_eval --torch`): the packed inputs of one forward-geometric section, the sigmas and
model timesteps, and the start latent decoded before the section.

Prints `ready torch <version>` after one warm-up run, then answers each `run` line on stdin with
the run's wall time in seconds; `quit` (or end of input) exits. A missing module prints
`missing <name>` and exits.

Usage: nano_torch.py --bundle DIR --taehv-src DIR --inputs FILE [--threads 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time


def taehv_model(th, cfg: dict):
    """Upstream's TAEHV with the base layout rebuilt at cfg's widths (upstream fixes them)."""
    from fixtures_taehv import tiny_layout

    if cfg.get("patch_size", 1) != 1:
        raise SystemExit("nano_torch.py: only patch size 1 is supported")
    model = th.TAEHV(checkpoint_path=None, latent_channels=cfg["latent_channels"])
    tiny_layout(th, model, cfg, cfg["decoder_time_upscale"])
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--taehv-src", required=True, help="directory holding upstream's taehv.py")
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        import torch
        from diffusers import HunyuanVideoFramepackTransformer3DModel
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"missing {e.name}", flush=True)
        return
    spec = importlib.util.spec_from_file_location("taehv", os.path.join(args.taehv_src, "taehv.py"))
    th = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(th)
    torch.set_num_threads(args.threads)

    tdir = os.path.join(args.bundle, "transformer")
    if not os.path.isdir(tdir):
        tdir = args.bundle
    model = HunyuanVideoFramepackTransformer3DModel.from_pretrained(tdir, torch_dtype=torch.float32).eval()
    with open(os.path.join(args.bundle, "vae", "config.json")) as f:
        vcfg = json.load(f)
    vae = taehv_model(th, vcfg)
    weights = load_file(os.path.join(args.bundle, "vae", "diffusion_pytorch_model.safetensors"))
    vae.load_state_dict({k: v.float() for k, v in weights.items()})
    vae.eval()
    scale = float(vcfg.get("scaling_factor", 1.0))

    t = load_file(args.inputs)
    sigmas = t["sigmas"].double().tolist()
    timesteps = t["timesteps"]
    kwargs = dict(
        encoder_hidden_states=t["encoder_hidden_states"],
        encoder_attention_mask=t["encoder_attention_mask"],
        pooled_projections=t["pooled_projections"],
        image_embeds=t["image_embeds"],
        indices_latents=t["indices_latents"],
    )
    for name in ["latents_clean", "latents_history_2x", "latents_history_4x"]:
        idx = "indices_" + name
        if name in t:
            kwargs[name] = t[name]
            kwargs[idx] = t[idx]

    def run():
        x = t["hidden_states"].clone()
        for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            v = model(hidden_states=x, timestep=timesteps[i:i + 1], return_dict=False, **kwargs)[0]
            x = x + (s_next - s) * v
        z = torch.cat([t["history"], x], dim=2)
        return vae.decode_video((z / scale).transpose(1, 2), parallel=True, show_progress_bar=False)

    with torch.inference_mode():
        run()
        print(f"ready torch {torch.__version__}", flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            t0 = time.perf_counter()
            run()
            print(f"{time.perf_counter() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
