#!/usr/bin/env python3
"""Regenerate the TAEHV fixtures of crates/framepack/tests/fixtures from upstream's own taehv.py (CPU, float32).

TAEHV (madebyollin/taehv, MIT) fixes its widths in the constructor, so the tiny model is the
upstream TAEHV object with its `encoder` / `decoder` nn.Sequentials replaced by the same layout
(same block classes at the same indices, hence the same checkpoint names) at tiny widths.
Upstream's encode_video / decode_video / StreamingTAEHV then run unchanged.

Writes into --out:
  taehv_keys.json                  name -> shape of the released checkpoint (TAEHV() default layout)
  taehv_tiny_config.json           widths and flags of the tiny model (+ its seed)
  taehv_tiny_weights.safetensors   its weights, upstream names
  taehv_tiny_cases.safetensors     enc.in -> enc.out, dec.in -> dec.out, dec.stream (latent by
                                   latent through StreamingTAEHV), dec.noup.out (decoder time
                                   upscale off, TGrow weights cut as patch_tgrow_layers does),
                                   inter.dec.<i> (output of decoder entry i, time-parallel,
                                   untrimmed, (N*T, C, H, W))

Weights: tensors with >= 2 dims N(0, 1/fan_in), 1-d "*weight" 1 + 0.1 N(0, 1), other 1-d
0.1 N(0, 1), drawn in named_parameters() order from one torch.Generator seeded with --seed; the
inputs come from a second generator seeded with --seed + 1 (video uniform, latents normal).

Usage:  python tools/fixtures_taehv.py --taehv-src DIR [--out DIR] [--check-against DIR]
  DIR holds upstream's taehv.py (e.g. a checkout of github.com/madebyollin/taehv).
  --check-against DIR compares every tensor with the same-named one there and exits 1 on a
  difference above 1e-6 relative L2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from fixture_common import randomize_

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "crates", "framepack", "tests", "fixtures")


def import_upstream(src: str):
    spec = importlib.util.spec_from_file_location("taehv", os.path.join(src, "taehv.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def flag(on: bool) -> int:
    return 2 if on else 1


def tiny_layout(th, model, cfg: dict, time_upscale) -> None:
    """Replaces model.encoder / model.decoder with TAEHV's base layout at cfg's widths."""
    e, n, lat = cfg["encoder_width"], cfg["decoder_widths"], cfg["latent_channels"]
    down, space = cfg["encoder_time_downscale"], cfg["decoder_space_upscale"]
    enc = [th.conv(3, e), nn.ReLU(inplace=True)]
    for k in range(3):
        enc += [th.TPool(e, flag(down[k])), th.conv(e, e, stride=2, bias=False)]
        enc += [th.MemBlock(e, e) for _ in range(3)]
    enc.append(th.conv(e, lat))
    dec = [th.Clamp(), th.conv(lat, n[0]), nn.ReLU(inplace=True)]
    for k in range(3):
        dec += [th.MemBlock(n[k], n[k]) for _ in range(3)]
        dec += [nn.Upsample(scale_factor=flag(space[k])), th.TGrow(n[k], flag(time_upscale[k])),
                th.conv(n[k], n[k + 1], bias=False)]
    dec += [nn.ReLU(inplace=True), th.conv(n[3], 3)]
    model.encoder, model.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
    model.latent_channels = lat
    model.t_downscale = 2 ** sum(b.stride == 2 for b in model.encoder if isinstance(b, th.TPool))
    model.t_upscale = 2 ** sum(b.stride == 2 for b in model.decoder if isinstance(b, th.TGrow))
    model.frames_to_trim = model.t_upscale - 1


def f32(tensors: dict) -> dict:
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def decoder_trace(th, model, lat: torch.Tensor) -> dict:
    """Every decoder entry's output of the time-parallel pass (memory = previous frame)."""
    out, n = {}, lat.shape[0]
    x = lat.reshape(-1, *lat.shape[2:])
    for i, block in enumerate(model.decoder):
        if isinstance(block, th.MemBlock):
            t = x.shape[0] // n
            clips = x.reshape(n, t, *x.shape[1:])
            past = F.pad(clips, (0, 0, 0, 0, 0, 0, 1, 0))[:, :t].reshape(x.shape)
            x = block(x, past)
        else:
            x = block(x)
        out[f"inter.dec.{i}"] = x.clone()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--taehv-src", required=True)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check-against")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--size", default="32x48", help="HxW of the encoded video")
    ap.add_argument("--latent-size", default="4x6", help="hxw of the decoded latents")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--latents", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    th = import_upstream(a.taehv_src)
    os.makedirs(a.out, exist_ok=True)

    released = th.TAEHV(checkpoint_path=None)
    write_json(os.path.join(a.out, "taehv_keys.json"), {k: list(v.shape) for k, v in released.state_dict().items()})

    cfg = dict(latent_channels=16, encoder_width=8, decoder_widths=[24, 16, 8, 8],
               encoder_time_downscale=[True, True, False], decoder_time_upscale=[False, True, True],
               decoder_space_upscale=[True, True, True], patch_size=1, seed=a.seed)
    model = th.TAEHV(checkpoint_path=None)
    tiny_layout(th, model, cfg, cfg["decoder_time_upscale"])
    model.eval()
    randomize_(model, a.seed)
    weights = f32(model.state_dict())
    save_file(weights, os.path.join(a.out, "taehv_tiny_weights.safetensors"), metadata={"config": json.dumps(cfg)})
    write_json(os.path.join(a.out, "taehv_tiny_config.json"), cfg)

    g = torch.Generator().manual_seed(a.seed + 1)
    H, W = (int(v) for v in a.size.split("x"))
    h, w = (int(v) for v in a.latent_size.split("x"))
    video = torch.rand(1, a.frames, 3, H, W, generator=g)
    lat = torch.randn(1, a.latents, 16, h, w, generator=g)
    cases = {"enc.in": video, "dec.in": lat}
    with torch.no_grad():
        cases["enc.out"] = model.encode_video(video, parallel=True, show_progress_bar=False)
        cases["dec.out"] = model.decode_video(lat, parallel=True, show_progress_bar=False)
        cases.update(decoder_trace(th, model, lat))
        stream, frames = th.StreamingTAEHV(model), []
        for t in range(lat.shape[1]):
            frame = stream.decode(lat[:, t:t + 1])
            while frame is not None:
                frames.append(frame)
                frame = stream.decode()
        cases["dec.stream"] = torch.cat(frames, 1)
        preview = th.TAEHV(checkpoint_path=None)
        tiny_layout(th, preview, cfg, [False, False, False])
        preview.load_state_dict(preview.patch_tgrow_layers(dict(model.state_dict())))
        cases["dec.noup.out"] = preview.eval().decode_video(lat, parallel=True, show_progress_bar=False)
    save_file(f32(cases), os.path.join(a.out, "taehv_tiny_cases.safetensors"),
              metadata={"note": "tools/fixtures_taehv.py", "enc.in": "video NTCHW [0,1]", "dec.in": "latents NTCHW"})

    if a.check_against:
        bad = 0
        for name, written in (("taehv_tiny_weights.safetensors", weights), ("taehv_tiny_cases.safetensors", f32(cases))):
            with safe_open(os.path.join(a.check_against, name), "pt") as f:
                for k, v in written.items():
                    ref = f.get_tensor(k).double()
                    rel = float((v.double() - ref).norm() / ref.norm().clamp_min(1e-300))
                    if rel > 1e-6:
                        print(f"{name} {k}: rel-L2 {rel:.3e}")
                        bad += 1
        print("check:", "differences" if bad else "identical within 1e-6")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
