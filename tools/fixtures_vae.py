#!/usr/bin/env python3
"""Regenerate the VAE fixtures of crates/framepack/tests/fixtures with diffusers (CPU, float32/float64).

Reproduces the shared reference harness's VAE part bit for bit (same configs, seeds and call
order): vae_tiny_config.json, vae_tiny_weights.safetensors, vae_tiny_{img,vid5,vid21}.safetensors.
Adds fixtures the harness does not have:
  vae_tiny_tiled.safetensors      spatial tiling with small tiles (32 px every 24 px), alone and
                                  inside framewise encode/decode, on the same tiny weights
  vae_tiny_b_{config.json,weights.safetensors}, vae_tiny_b.safetensors
                                  another tiny config: 3 blocks, channels (6, 12, 24), 3 groups,
                                  1 resnet per block, 4 latent channels, spatial ratio 4

Usage:  python tools/fixtures_vae.py [--out DIR] [--check-against DIR]
  --check-against DIR  compares every tensor written with the same-named tensor in DIR's files
                       (e.g. the shared harness's fixtures) and exits 1 on any difference.
Tested with torch 2.15.0, diffusers 0.42.1, safetensors 0.8.0.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "crates", "framepack", "tests", "fixtures")

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
    up_block_types=("HunyuanVideoUpBlock3D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=2,
    act_fn="silu",
    norm_num_groups=4,
    scaling_factor=0.476986,
    spatial_compression_ratio=8,
    temporal_compression_ratio=4,
    mid_block_add_attention=True,
)
VAE_SEED = 4321

TINY_B_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("HunyuanVideoDownBlock3D",) * 3,
    up_block_types=("HunyuanVideoUpBlock3D",) * 3,
    block_out_channels=(6, 12, 24),
    layers_per_block=1,
    act_fn="silu",
    norm_num_groups=3,
    scaling_factor=0.476986,
    spatial_compression_ratio=4,
    temporal_compression_ratio=4,
    mid_block_add_attention=True,
)
VAE_B_SEED = 8765


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Matrices N(0, 1/fan_in); 1-D '*weight' 1 + 0.1 N(0,1); other 1-D 0.1 N(0,1) (as the harness)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
            elif name.endswith("weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                v = 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.copy_(v.to(p.dtype))


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous().clone()


def save(path: str, tensors: dict, metadata: dict | None = None) -> None:
    md = None if metadata is None else {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    save_file({k: f32(v) for k, v in tensors.items()}, path, metadata=md)


def json_dump(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=list)
        f.write("\n")


def max_abs(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def capture(vae):
    inter, hooks = {}, []

    def add(mod, name):
        hooks.append(mod.register_forward_hook(lambda m, a, o: inter.__setitem__(name, o)))

    enc, dec = vae.encoder, vae.decoder
    add(enc.conv_in, "encoder.conv_in")
    for i, b in enumerate(enc.down_blocks):
        add(b, f"encoder.down_blocks.{i}")
    add(enc.mid_block, "encoder.mid_block")
    add(enc, "encoder")
    add(vae.quant_conv, "quant_conv")
    add(vae.post_quant_conv, "post_quant_conv")
    add(dec.conv_in, "decoder.conv_in")
    add(dec.mid_block, "decoder.mid_block")
    for i, b in enumerate(dec.up_blocks):
        add(b, f"decoder.up_blocks.{i}")
    return inter, hooks


def enc_dec(v, x, framewise):
    v.use_framewise_encoding = framewise
    v.use_framewise_decoding = framewise
    with torch.no_grad():
        moments = v._encode(x)  # == encode(x).latent_dist.parameters
        mean, logvar = moments.chunk(2, dim=1)
        dec = v.decode(mean).sample
    return moments, mean, logvar.clamp(-30.0, 20.0), dec


def build(cfg, seed):
    from diffusers import AutoencoderKLHunyuanVideo

    vae = AutoencoderKLHunyuanVideo(**cfg).eval()
    randomize_(vae, seed)
    vae.disable_tiling()
    vae.disable_slicing()
    return vae


def make_tiny(out):
    """The harness's fixtures, same seeds and call order."""
    vae = build(TINY_VAE_CONFIG, VAE_SEED)
    vae64 = copy.deepcopy(vae).double().eval()
    save(os.path.join(out, "vae_tiny_weights.safetensors"), vae.state_dict(), {"config": TINY_VAE_CONFIG, "seed": VAE_SEED})
    json_dump(os.path.join(out, "vae_tiny_config.json"), TINY_VAE_CONFIG)

    g = torch.Generator().manual_seed(99)

    def video(T):
        return torch.tanh(torch.randn(1, 3, T, 32, 32, generator=g))

    for name, T in (("img", 1), ("vid5", 5)):
        x = video(T)
        inter, hooks = capture(vae)
        moments, mean, logvar, dec = enc_dec(vae, x, framewise=True)
        for h in hooks:
            h.remove()
        _, mean64, _, dec64 = enc_dec(vae64, x.double(), framewise=True)
        tensors = {
            "in.sample": x,
            "out.moments": moments,
            "out.latent_mean": mean,
            "out.latent_logvar_clamped": logvar,
            "out.latent_std": torch.exp(0.5 * logvar),
            "out.decoded_from_mean": dec,
            "out.latent_mean_f64": mean64,
            "out.decoded_from_mean_f64": dec64,
        }
        if name == "vid5":
            tensors.update({f"inter.{k}": v for k, v in inter.items()})
        tol = dict(
            latent_mean_max_abs_f32_vs_f64=max_abs(mean, mean64),
            decoded_max_abs_f32_vs_f64=max_abs(dec, dec64),
            latent_mean_max_abs=float(mean.abs().max()),
            decoded_max_abs=float(dec.abs().max()),
        )
        save(os.path.join(out, f"vae_tiny_{name}.safetensors"), tensors, {"f32_vs_f64": tol})

    x = video(21)
    _, mean_fw, _, _ = enc_dec(vae, x, framewise=True)
    _, mean_d, _, _ = enc_dec(vae, x, framewise=False)
    z = torch.randn(1, 16, 6, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        vae.use_framewise_decoding = True
        dz_fw = vae.decode(z).sample
        vae.use_framewise_decoding = False
        dz_d = vae.decode(z).sample
        vae64.use_framewise_decoding = True
        dz_fw64 = vae64.decode(z.double()).sample
    vae.use_framewise_encoding = True
    vae.use_framewise_decoding = True
    tensors = {
        "in.sample": x,
        "out.latent_mean_framewise": mean_fw,
        "out.latent_mean_direct": mean_d,
        "in.z": z,
        "out.decoded_z_framewise": dz_fw,
        "out.decoded_z_direct": dz_d,
        "out.decoded_z_framewise_f64": dz_fw64,
    }
    tol = dict(
        decoded_z_framewise_max_abs_f32_vs_f64=max_abs(dz_fw, dz_fw64),
        framewise_vs_direct_latent_max_abs=max_abs(mean_fw, mean_d),
        framewise_vs_direct_decoded_max_abs=max_abs(dz_fw, dz_d),
    )
    save(os.path.join(out, "vae_tiny_vid21.safetensors"), tensors, {"f32_vs_f64": tol})
    return vae


def make_tiled(out, vae):
    """Spatial tiling with 32 px tiles every 24 px (latent 4 every 3; blends 8 px / 1 latent)."""
    vae.use_framewise_encoding = True
    vae.use_framewise_decoding = True
    vae.enable_tiling(
        tile_sample_min_height=32,
        tile_sample_min_width=32,
        tile_sample_stride_height=24,
        tile_sample_stride_width=24,
    )
    g = torch.Generator().manual_seed(2024)
    z = torch.randn(1, 16, 2, 6, 5, generator=g)  # 48×40 px, 2 latents: spatial tiling only
    z_long = torch.randn(1, 16, 7, 6, 5, generator=g)  # framewise + spatial
    x = torch.tanh(torch.randn(1, 3, 5, 48, 40, generator=g))
    x_long = torch.tanh(torch.randn(1, 3, 21, 48, 40, generator=g))
    with torch.no_grad():
        tensors = {
            "in.z": z,
            "out.decoded_tiled": vae.decode(z).sample,
            "in.z_long": z_long,
            "out.decoded_tiled_framewise": vae.decode(z_long).sample,
            "in.sample": x,
            "out.moments_tiled": vae._encode(x),
            "in.sample_long": x_long,
            "out.moments_tiled_framewise": vae._encode(x_long),
        }
    vae.disable_tiling()
    save(os.path.join(out, "vae_tiny_tiled.safetensors"), tensors,
         {"tiling": dict(tile_sample_min=32, tile_sample_stride=24, frames_min=16, frames_stride=12)})


def make_tiny_b(out):
    vae = build(TINY_B_VAE_CONFIG, VAE_B_SEED)
    vae64 = copy.deepcopy(vae).double().eval()
    save(os.path.join(out, "vae_tiny_b_weights.safetensors"), vae.state_dict(), {"config": TINY_B_VAE_CONFIG, "seed": VAE_B_SEED})
    json_dump(os.path.join(out, "vae_tiny_b_config.json"), TINY_B_VAE_CONFIG)
    g = torch.Generator().manual_seed(555)
    x = torch.tanh(torch.randn(1, 3, 9, 24, 20, generator=g))
    z = torch.randn(1, 4, 7, 5, 4, generator=g)
    moments, mean, _, dec = enc_dec(vae, x, framewise=True)
    _, mean64, _, dec64 = enc_dec(vae64, x.double(), framewise=True)
    with torch.no_grad():
        vae.use_framewise_decoding = True
        dz_fw = vae.decode(z).sample
        vae.use_framewise_decoding = False
        dz_d = vae.decode(z).sample
    save(os.path.join(out, "vae_tiny_b.safetensors"), {
        "in.sample": x,
        "out.moments": moments,
        "out.latent_mean_f64": mean64,
        "out.decoded_from_mean": dec,
        "out.decoded_from_mean_f64": dec64,
        "in.z": z,
        "out.decoded_z_framewise": dz_fw,
        "out.decoded_z_direct": dz_d,
    })


def check_against(out, ref_dir) -> int:
    failures = 0
    compared = 0
    for fn in sorted(os.listdir(out)):
        ref = os.path.join(ref_dir, fn)
        if not fn.endswith(".safetensors") or not os.path.exists(ref):
            continue
        with safe_open(os.path.join(out, fn), "pt") as a, safe_open(ref, "pt") as b:
            for k in sorted(a.keys()):
                if k not in b.keys():
                    continue
                d = max_abs(a.get_tensor(k), b.get_tensor(k))
                compared += 1
                if d != 0.0:
                    failures += 1
                    print(f"DIFF {fn} {k}: max abs {d:.3e}")
        print(f"{fn}: compared with {ref}")
    print(f"{compared} tensors compared, {failures} differ")
    return 1 if failures or compared == 0 else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check-against", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    vae = make_tiny(args.out)
    make_tiled(args.out, vae)
    make_tiny_b(args.out)
    print(f"VAE fixtures written to {args.out}")
    if args.check_against:
        sys.exit(check_against(args.out, args.check_against))


if __name__ == "__main__":
    main()
