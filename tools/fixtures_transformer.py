#!/usr/bin/env python3
"""Regenerate the packed-transformer test fixtures with diffusers (CPU, float32 and float64).

Writes into --out (default: crates/framepack/tests/fixtures):
  transformer_tiny_config.json           tiny HunyuanVideoFramepackTransformer3DModel config
  transformer_tiny_weights.safetensors   seeded random weights, diffusers parameter names
  transformer_tiny_case_{a,b,c}.safetensors
      in.*     forward keyword arguments (indices I64, everything else F32)
      out.sample, out.sample_f64   flow velocity from the f32 model and from a float64 copy
      inter.*  intermediates for bisecting (packed tokens, RoPE tables, temb, refined text,
               per-block hidden/encoder states, norm_out, proj_out)
  transformer_odd_{config.json,weights.safetensors,case_d.safetensors,case_e.safetensors}
      the same for a second config whose sizes all differ from the released model's (see
      ODD_CONFIG): non-square latents, batch 2 with different text lengths, padded batch 1
With --real-keys PATH it also writes the parameter names and shapes of the real 13B config
(meta device, nothing downloaded) as {"framepack_transformer": {...}}.
With --compare DIR it checks the files against those in DIR: weights, config and inputs must be
bit-identical, computed tensors equal up to float noise (max-abs 1e-4).

Seeds and input recipes are those of the project's reference harness: on the same machine the
output equals the harness's bit for bit. Across machines the computed f32 tensors can differ by
float noise (~1e-5) because CPU kernels sum in a different order (torch 2.15.0, diffusers 0.42.1).
Usage: python tools/fixtures_transformer.py [--out DIR] [--real-keys PATH] [--compare DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fixture_common import randomize_ as randomize

torch.use_deterministic_algorithms(True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIG = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    num_single_layers=2,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=24,
    pooled_projection_dim=12,
    rope_theta=256.0,
    rope_axes_dim=(4, 6, 6),
    image_condition_type=None,
    has_image_proj=True,
    image_proj_dim=20,
    has_clean_x_embedder=True,
)
WEIGHT_SEED = 1234
CASE_SEEDS = {"a": 11, "b": 22, "c": 33}

# A second tiny config where every size differs from the released model's ratios: 3 heads of 12
# channels, RoPE axes (2, 4, 6) with theta 100, in/out channels 4/6, MLP ratio 2.5 (the text
# refiner keeps 4), one dual-stream block. Not part of the reference harness.
ODD_CONFIG = dict(
    TINY_CONFIG,
    in_channels=4,
    out_channels=6,
    num_attention_heads=3,
    attention_head_dim=12,
    num_layers=1,
    num_single_layers=2,
    num_refiner_layers=1,
    mlp_ratio=2.5,
    text_embed_dim=10,
    pooled_projection_dim=6,
    rope_theta=100.0,
    rope_axes_dim=(2, 4, 6),
    image_proj_dim=7,
)
ODD_WEIGHT_SEED = 4242
ODD_CASE_SEEDS = {"d": 44, "e": 55}

# lllyasviel/FramePackI2V_HY (and the F1 checkpoint): same architecture.
REAL_CONFIG = dict(
    TINY_CONFIG,
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=20,
    num_single_layers=40,
    text_embed_dim=4096,
    pooled_projection_dim=768,
    rope_axes_dim=(16, 56, 56),
    image_proj_dim=1152,
)


def contiguous_f32(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return (t.to(torch.float32) if t.dtype.is_floating_point else t).contiguous().clone()


def save(path: str, tensors: dict, metadata: dict) -> None:
    md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    save_file({k: contiguous_f32(v) for k, v in tensors.items()}, path, metadata=md)


def arange_split(sizes):
    return list(torch.arange(0, sum(sizes), dtype=torch.int64).split(sizes))


def case_inputs(case: str, cfg: dict):
    g = torch.Generator().manual_seed(CASE_SEEDS[case])
    C, n_img_tokens = cfg["in_channels"], 9

    def rn(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    if case == "a":
        # Inverted anti-drifting (demo_gradio.py), latent_padding 1, window 3: split [1,3,3,1,2,16].
        B, T, H, W = 1, 3, 12, 12
        prefix, _blank, lat, post, h2x, h4x = arange_split([1, 3, 3, 1, 2, 16])
        idx, idx_clean, n2, n4 = lat, torch.cat([prefix, post]), 2, 16
        text_len, valid, timestep, guidance = 8, [6], [937.5], [10000.0]
        layout = "inverted_anti_drifting: indices = arange(1+3+3+1+2+16) split [1,3,3,1,2,16]; clean = [prefix, post]"
    elif case == "b":
        # Vanilla / F1 (demo_gradio_f1.py), window 3: split [1,16,2,1,3]; batch 2, text lengths 8 and 5.
        B, T, H, W = 2, 3, 8, 8
        prefix, h4x, h2x, h1x, lat = arange_split([1, 16, 2, 1, 3])
        idx, idx_clean, n2, n4 = lat, torch.cat([prefix, h1x]), 2, 16
        text_len, valid, timestep, guidance = 8, [8, 5], [500.0, 250.0], [10000.0, 6000.0]
        layout = "vanilla/F1: indices = arange(1+16+2+1+3) split [1,16,2,1,3]; clean = [prefix, 1x]"
    elif case == "c":
        # Edge case: odd patch grid (5x5) and history lengths that need replicate padding.
        B, T, H, W = 1, 2, 10, 10
        idx = torch.tensor([3, 4], dtype=torch.int64)
        idx_clean = torch.tensor([0, 9], dtype=torch.int64)
        h2x = torch.tensor([10, 11, 12], dtype=torch.int64)
        h4x = torch.tensor([13, 14, 15, 16, 17], dtype=torch.int64)
        n2, n4 = 3, 5
        text_len, valid, timestep, guidance = 5, [5], [20.0], [1000.0]
        layout = "edge: explicit indices, 2x history of 3 frames, 4x history of 5 frames, H=W=10"
    else:
        raise ValueError(case)

    mask = torch.zeros(B, text_len, dtype=torch.float32)
    for i, v in enumerate(valid):
        mask[i, :v] = 1.0
    # The order of the rn() calls fixes the random streams; keep it.
    inputs = dict(
        hidden_states=rn(B, C, T, H, W),
        timestep=torch.tensor(timestep, dtype=torch.float32),
        encoder_hidden_states=rn(B, text_len, cfg["text_embed_dim"]),
        encoder_attention_mask=mask,
        pooled_projections=rn(B, cfg["pooled_projection_dim"]),
        image_embeds=rn(B, n_img_tokens, cfg["image_proj_dim"]),
        indices_latents=idx,
        guidance=torch.tensor(guidance, dtype=torch.float32),
        latents_clean=rn(B, C, 2, H, W),
        indices_latents_clean=idx_clean,
        latents_history_2x=rn(B, C, n2, H, W),
        indices_latents_history_2x=h2x,
        latents_history_4x=rn(B, C, n4, H, W),
        indices_latents_history_4x=h4x,
    )
    return inputs, dict(layout=layout, batch=B, text_valid_lengths=valid)


def odd_case_inputs(case: str, cfg: dict):
    """Cases for ODD_CONFIG: non-square latents, odd patch grids, batch 2 with different text
    lengths and timesteps (d), batch 1 with padded text and a single noisy frame (e)."""
    g = torch.Generator().manual_seed(ODD_CASE_SEEDS[case])
    C = cfg["in_channels"]

    def rn(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    def idx(*v):
        return torch.tensor(v, dtype=torch.int64)

    if case == "d":
        B, T, H, W, n_img = 2, 2, 6, 10, 5
        indices = dict(latents=idx(20, 21), clean=idx(0, 19), h2x=idx(16, 17, 18), h4x=idx(1, 2, 3, 4, 5))
        text_len, valid, timestep, guidance = 7, [7, 3], [900.0, 300.0], [10000.0, 8000.0]
        layout = "odd config, B=2, latents 6x10 (post-patch 3x5), history 2/3/5 frames, text 7 (7 and 3 valid)"
    elif case == "e":
        B, T, H, W, n_img = 1, 1, 4, 14, 3
        indices = dict(latents=idx(7), clean=idx(0, 8), h2x=idx(9, 10), h4x=idx(11, 12, 13, 14, 15, 16))
        text_len, valid, timestep, guidance = 7, [4], [512.25], [6000.0]
        layout = "odd config, B=1, one noisy frame, latents 4x14 (post-patch 2x7), history 2/2/6 frames, text 7 (4 valid)"
    else:
        raise ValueError(case)

    mask = torch.zeros(B, text_len, dtype=torch.float32)
    for i, v in enumerate(valid):
        mask[i, :v] = 1.0
    inputs = dict(
        hidden_states=rn(B, C, T, H, W),
        timestep=torch.tensor(timestep, dtype=torch.float32),
        encoder_hidden_states=rn(B, text_len, cfg["text_embed_dim"]),
        encoder_attention_mask=mask,
        pooled_projections=rn(B, cfg["pooled_projection_dim"]),
        image_embeds=rn(B, n_img, cfg["image_proj_dim"]),
        indices_latents=indices["latents"],
        guidance=torch.tensor(guidance, dtype=torch.float32),
        latents_clean=rn(B, C, len(indices["clean"]), H, W),
        indices_latents_clean=indices["clean"],
        latents_history_2x=rn(B, C, len(indices["h2x"]), H, W),
        indices_latents_history_2x=indices["h2x"],
        latents_history_4x=rn(B, C, len(indices["h4x"]), H, W),
        indices_latents_history_4x=indices["h4x"],
    )
    return inputs, dict(layout=layout, batch=B, text_valid_lengths=valid)


def forward(model, inputs, capture: bool):
    """Runs the model; with `capture`, records the intermediates through forward hooks."""
    inter, hooks = {}, []

    def hook(module, fn):
        hooks.append(module.register_forward_hook(fn))

    def put(name):
        return lambda m, a, o: inter.__setitem__(name, o)

    if capture:
        hook(model.x_embedder, put("x_embedder"))

        def clean(m, a, o):
            for n, t in zip(("proj", "proj_2x", "proj_4x"), o):
                if t is not None:
                    inter[f"clean_x_embedder.{n}"] = t

        hook(model.clean_x_embedder, clean)
        hook(model.time_text_embed, lambda m, a, o: inter.__setitem__("temb", o[0]))
        hook(model.context_embedder.time_text_embed, put("context_embedder.temb"))
        hook(model.context_embedder, put("context_embedder"))
        hook(model.image_projection, put("image_projection"))
        for group in ("transformer_blocks", "single_transformer_blocks"):
            for i, block in enumerate(getattr(model, group)):
                def states(m, a, o, key=f"{group}.{i}"):
                    inter[f"{key}.hidden"], inter[f"{key}.encoder"] = o[0], o[1]
                hook(block, states)
        hook(model.norm_out, put("norm_out"))
        hook(model.proj_out, put("proj_out"))

        original_pack = model._pack_history_states

        def pack(*args, **kwargs):
            tokens, (cos, sin) = original_pack(*args, **kwargs)
            inter["packed_tokens"], inter["rope_cos"], inter["rope_sin"] = tokens, cos, sin
            return tokens, (cos, sin)

        model._pack_history_states = pack
    try:
        with torch.no_grad():
            out = model(**inputs, return_dict=False)[0]
    finally:
        for h in hooks:
            h.remove()
        if capture:
            del model._pack_history_states
    return out, inter


def diff_stats(a, b):
    a, b = a.double(), b.double()
    return dict(max_abs_f32_vs_f64=float((a - b).abs().max()),
                rel_l2_f32_vs_f64=float((a - b).norm() / b.norm().clamp_min(1e-300)),
                max_abs_out=float(b.abs().max()))


def write_fixtures(out_dir: str, prefix: str, cfg: dict, seed: int, cases: dict) -> list[str]:
    """Writes `{prefix}_config.json`, `{prefix}_weights.safetensors` and one
    `{prefix}_case_{name}.safetensors` per entry of `cases` (name → input builder)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    os.makedirs(out_dir, exist_ok=True)
    model = HunyuanVideoFramepackTransformer3DModel(**cfg).eval()
    randomize(model, seed)
    model64 = copy.deepcopy(model).double().eval()

    written = [f"{prefix}_weights.safetensors"]
    save(os.path.join(out_dir, written[0]), model.state_dict(), {"config": cfg, "seed": seed})
    with open(os.path.join(out_dir, f"{prefix}_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, default=list)
        f.write("\n")

    for case, make_inputs in cases.items():
        inputs, desc = make_inputs(case, cfg)
        out, inter = forward(model, inputs, capture=True)
        inputs64 = {k: v.double() if v.dtype.is_floating_point else v for k, v in inputs.items()}
        out64, _ = forward(model64, inputs64, capture=False)
        tensors = {f"in.{k}": v for k, v in inputs.items()}
        tensors.update({"out.sample": out, "out.sample_f64": out64})
        tensors.update({f"inter.{k}": v for k, v in inter.items()})
        name = f"{prefix}_case_{case}.safetensors"
        stats = diff_stats(out, out64)
        save(os.path.join(out_dir, name), tensors, {"description": desc, "f32_vs_f64": stats})
        written.append(name)
        print(f"{prefix} case {case}: f32 vs f64 max-abs {stats['max_abs_f32_vs_f64']:.2e}, "
              f"rel-L2 {stats['rel_l2_f32_vs_f64']:.2e}")
    return written


def write_real_keys(path: str) -> None:
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoFramepackTransformer3DModel(**REAL_CONFIG)
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    entry = dict(
        source="lllyasviel/FramePackI2V_HY (and FramePack_F1_I2V_HY_20250503); diffusers "
               "HunyuanVideoFramepackTransformer3DModel instantiated on meta",
        config=REAL_CONFIG, num_tensors=len(keys), num_params=sum(math.prod(s) for s in keys.values()), keys=keys)
    with open(path, "w") as f:
        json.dump({"framepack_transformer": entry}, f, indent=1, default=list)
        f.write("\n")
    print(f"real keys: {entry['num_tensors']} tensors, {entry['num_params']:,} parameters")


def compare(out_dir: str, ref_dir: str, names: list[str], atol: float = 1e-4) -> bool:
    """Weights, config and inputs must be bit-identical; computed tensors may differ by float noise
    (CPU kernels and thread scheduling change f32 summation order) but not by more than `atol`."""
    ok = True
    for name in names:
        if not os.path.exists(os.path.join(ref_dir, name)):
            print(f"{name}: not in {ref_dir}, skipped")
            continue
        with safe_open(os.path.join(out_dir, name), "pt") as new, safe_open(os.path.join(ref_dir, name), "pt") as ref:
            if set(new.keys()) != set(ref.keys()):
                print(f"{name}: key sets differ: {sorted(set(new.keys()) ^ set(ref.keys()))}")
                ok = False
                continue
            exact, worst = 0, (0.0, "")
            for k in sorted(new.keys()):
                a, b = new.get_tensor(k), ref.get_tensor(k)
                if torch.equal(a, b):
                    exact += 1
                    continue
                computed = k.startswith(("out.", "inter."))
                d = float((a.double() - b.double()).abs().max()) if a.shape == b.shape else math.inf
                if not computed or d > atol:
                    print(f"{name}: {k} differs (max-abs {d:.3e})")
                    ok = False
                worst = max(worst, (d, k))
            print(f"{name}: {exact}/{len(new.keys())} tensors bit-identical"
                  + (f", largest difference {worst[0]:.3e} in {worst[1]}" if worst[1] else ""))
    for config in sorted({n.split("_weights")[0] + "_config.json" for n in names if "_weights" in n}):
        if not os.path.exists(os.path.join(ref_dir, config)):
            print(f"{config}: not in {ref_dir}, skipped")
            continue
        with open(os.path.join(out_dir, config)) as a, open(os.path.join(ref_dir, config)) as b:
            same = json.load(a) == json.load(b)
        print(f"{config}: {'identical' if same else 'differs'}")
        ok &= same
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "framepack", "tests", "fixtures"))
    ap.add_argument("--real-keys", help="also write the real model's key list to this JSON file")
    ap.add_argument("--compare", help="directory with fixtures to compare against, tensor by tensor")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    written = write_fixtures(args.out, "transformer_tiny", TINY_CONFIG, WEIGHT_SEED,
                             {c: case_inputs for c in CASE_SEEDS})
    written += write_fixtures(args.out, "transformer_odd", ODD_CONFIG, ODD_WEIGHT_SEED,
                              {c: odd_case_inputs for c in ODD_CASE_SEEDS})
    if args.real_keys:
        write_real_keys(args.real_keys)
    if args.compare and not compare(args.out, args.compare, written):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
