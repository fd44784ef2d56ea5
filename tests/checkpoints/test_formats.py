"""Every checkpoint format: detection, round trips, conversions, and every error path naming the culprit."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import stylemotion
from stylemotion.checkpoints import (BUILTIN_CONFIGS, WRITABLE_FORMATS, detect_format, infer_config,
                                     load_generator, official_from_rosinality, rosinality_from_official,
                                     save_generator, state_dict_from_generator)
from stylemotion.errors import CheckpointError, UnsafeCheckpointError
from stylemotion.models.stylegan2 import GeneratorConfig
from tests.helpers import DATA, make_generator

from .official_pickle import write_official_pickle


def render(G, seed: int = 0, n: int = 2) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, truncation_psi=0.7, noise_mode="const")


@pytest.mark.parametrize("fmt", WRITABLE_FORMATS)
def test_save_load_round_trip_is_identical(tmp_path, small_generator, fmt):
    path = save_generator(small_generator, tmp_path / f"g.{fmt}", format=fmt)
    G = load_generator(path)
    assert G.checkpoint_info.format == fmt
    torch.testing.assert_close(render(G), render(small_generator), rtol=1e-5, atol=1e-6)  # same weights, other buffers
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary files left behind"


def test_native_format_keeps_the_full_config(tmp_path):
    G = make_generator(num_fp16_res=2, conv_clamp=256.0, mapping_lr_multiplier=0.02)
    H = load_generator(save_generator(G, tmp_path / "g.safetensors"))
    assert H.config == G.config


def test_conformance_state_dict_infers_the_official_config(tmp_path, tiny_init_kwargs, tiny_io):
    path = DATA / "tiny_state_dict.pt"
    assert detect_format(path) == "torch"
    G = load_generator(path)
    assert G.checkpoint_info.format == "state_dict"
    assert G.config == GeneratorConfig.from_init_kwargs(tiny_init_kwargs)
    with torch.no_grad():
        out = G.synthesis(tiny_io["ws_psi1"], noise_mode="const")
    assert (out - tiny_io["img_const"]).abs().max().item() < 1e-4


def test_state_dict_config_overrides(tmp_path, small_generator):
    path = save_generator(small_generator, tmp_path / "g.pt", format="state_dict")
    G = load_generator(path, config={"num_fp16_res": 2, "conv_clamp": 64.0})
    assert (G.config.num_fp16_res, G.config.conv_clamp) == (2, 64.0)
    with pytest.raises(CheckpointError, match="img_resolution must be a power of two"):
        load_generator(path, config={"img_resolution": 48})
    with pytest.raises(CheckpointError, match=r"g\.pt: state dict does not match.*unexpected keys \['synthesis\.b16"):
        load_generator(path, config={"img_resolution": 8})


@pytest.mark.parametrize("channels", [(16, 16, 8), (32, 16, 8)], ids=["capped", "uncapped"])
def test_channel_layout_inference(channels):
    base = channels[-1] * 16
    G = make_generator(channel_base=base, channel_max=max(channels))
    cfg = infer_config(state_dict_from_generator(G), where="x")
    assert [cfg.channels(r) for r in (4, 8, 16)] == [G.config.channels(r) for r in (4, 8, 16)]


def test_rosinality_from_state_dict_renders_the_same(tmp_path, tiny_state_dict, tiny_init_kwargs, tiny_io):
    cfg = GeneratorConfig.from_init_kwargs(tiny_init_kwargs)
    ckpt = rosinality_from_official(tiny_state_dict, cfg)
    assert "style.1.weight" in ckpt["g_ema"] and "convs.0.conv.blur.kernel" in ckpt["g_ema"]
    assert ckpt["g_ema"]["conv1.conv.weight"].shape == (1, 64, 64, 3, 3)
    torch.save(ckpt, tmp_path / "ros.pt")
    G = load_generator(tmp_path / "ros.pt")
    assert G.checkpoint_info.format == "rosinality" and G.config == cfg
    with torch.no_grad():
        out = G.synthesis(tiny_io["ws_wplus"], noise_mode="const")
    assert (out - tiny_io["img_wplus"]).abs().max().item() < 1e-4
    back, back_cfg, has_avg = official_from_rosinality(ckpt, where="ros")
    assert has_avg and back_cfg == cfg
    assert set(back) == set(tiny_state_dict)
    assert all(torch.equal(back[k].reshape(tiny_state_dict[k].shape), tiny_state_dict[k]) for k in back)


def test_rosinality_with_args_and_without_latent_avg(tmp_path, small_generator):
    import argparse

    ckpt = rosinality_from_official(state_dict_from_generator(small_generator), small_generator.config)
    del ckpt["latent_avg"]
    ckpt["args"] = argparse.Namespace(size=16, n_mlp=2)
    torch.save(ckpt, tmp_path / "ros.pt")
    G = load_generator(tmp_path / "ros.pt")
    assert any("w_avg estimated" in n for n in G.checkpoint_info.notes)
    assert G.mapping.w_avg.abs().sum() > 0
    # the estimate is the mean of mapped latents, so it lands near the true one
    assert torch.allclose(G.mapping.w_avg, small_generator.mapping.w_avg, atol=0.15)


def test_rosinality_refuses_a_custom_blur_kernel(tmp_path, small_generator):
    ckpt = rosinality_from_official(state_dict_from_generator(small_generator), small_generator.config)
    ckpt["g_ema"]["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    torch.save(ckpt, tmp_path / "ros.pt")
    with pytest.raises(CheckpointError, match=r"convs\.0\.conv\.blur\.kernel"):
        load_generator(tmp_path / "ros.pt")


@pytest.mark.parametrize("flat", [False, True], ids=["stylegan2-ada", "stylegan3-repo"])
def test_official_network_pickle_loads_without_running_its_code(tmp_path, monkeypatch, small_generator, flat):
    marker = tmp_path / "code_ran"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass Generator: pass\n"
    path = write_official_pickle(small_generator, tmp_path / "net.pkl", monkeypatch, module_src=src, flat_kwargs=flat)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(__import__("sys").modules, name)  # the loader must not need them
    assert detect_format(path) == "network_pickle"
    G = load_generator(path)
    assert not marker.exists()
    assert G.checkpoint_info.format == "network_pickle"
    assert G.config == small_generator.config
    torch.testing.assert_close(render(G), render(small_generator), rtol=1e-5, atol=1e-6)  # same weights, other buffers


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*(posix|os)\.system.*not allowed"):
        load_generator(path)
    assert not marker.exists()

    class EvalInside:
        def __reduce__(self):
            return (eval, ("__import__('os').getcwd()",))

    path.write_bytes(pickle.dumps({"G_ema": {"state": [EvalInside()]}}))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_generator(path)


def test_pickle_with_a_smuggled_global_deep_in_a_network_is_refused(tmp_path, monkeypatch, small_generator):
    import subprocess

    class Smuggled:
        def __reduce__(self):
            return (subprocess.Popen, (["true"],))

    path = write_official_pickle(small_generator, tmp_path / "net.pkl", monkeypatch,
                                 extra={"augment_pipe": {"p": Smuggled()}})
    with pytest.raises(UnsafeCheckpointError, match=r"subprocess\.Popen"):
        load_generator(path)


def test_pickle_without_a_stylegan2_generator(tmp_path, monkeypatch, small_generator):
    path = write_official_pickle(small_generator, tmp_path / "net.pkl", monkeypatch)
    data_path = tmp_path / "nog.pkl"
    with open(data_path, "wb") as f:
        pickle.dump({"G": 1}, f)
    with pytest.raises(CheckpointError, match=r"nog\.pkl: no 'G_ema'"):
        load_generator(data_path)
    from .official_pickle import Persistent

    with open(data_path, "wb") as f:
        pickle.dump({"G_ema": Persistent("Discriminator", {}, "")}, f)
    with pytest.raises(CheckpointError, match="is a 'Discriminator', expected 'Generator'"):
        load_generator(data_path)
    assert load_generator(path).checkpoint_info.format == "network_pickle"


@pytest.mark.parametrize("fmt", ["stylemotion", "state_dict", "rosinality", "network_pickle"])
def test_truncated_files_are_reported_with_the_file_name(tmp_path, monkeypatch, small_generator, fmt):
    if fmt == "network_pickle":
        path = write_official_pickle(small_generator, tmp_path / "g.pkl", monkeypatch)
    else:
        path = save_generator(small_generator, tmp_path / f"g.{fmt}", format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name}.*(truncated|corrupt)"):
        load_generator(path)


def test_key_and_shape_errors_name_the_key(tmp_path, small_generator):
    sd = state_dict_from_generator(small_generator)
    bad = dict(sd)
    del bad["synthesis.b8.conv0.noise_const"]
    torch.save(bad, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt.*missing keys \['synthesis\.b8\.conv0\.noise_const'\]"):
        load_generator(tmp_path / "missing.pt")
    bad = dict(sd, **{"synthesis.b8.extra": torch.zeros(1)})
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['synthesis\.b8\.extra'\]"):
        load_generator(tmp_path / "extra.pt")
    bad = dict(sd, **{"synthesis.b8.conv1.affine.weight": torch.zeros(16, 15)})
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"'synthesis\.b8\.conv1\.affine\.weight' has shape \[16, 15\], expected \[16, 16\]"):
        load_generator(tmp_path / "shape.pt")
    bad = dict(sd, **{"synthesis.b4.const": torch.full_like(sd["synthesis.b4.const"], float("nan"))})
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"'synthesis\.b4\.const' holds NaN"):
        load_generator(tmp_path / "nan.pt")
    torch.save({"model": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: a torch file, but neither"):
        load_generator(tmp_path / "other.pt")


def test_stylegan3_and_resnet_state_dicts_are_refused(tmp_path, small_generator):
    sd = state_dict_from_generator(small_generator)
    torch.save(dict(sd, **{"synthesis.input.affine.weight": torch.zeros(4, 16)}), tmp_path / "sg3.pt")
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_generator(tmp_path / "sg3.pt")
    torch.save(dict(sd, **{"synthesis.b8.skip.weight": torch.zeros(16, 16, 1, 1)}), tmp_path / "res.pt")
    with pytest.raises(CheckpointError, match="resnet"):
        load_generator(tmp_path / "res.pt")


def test_unsafe_torch_file_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"g_ema": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt"):
        load_generator(tmp_path / "evil.pt")


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pkl: no such file.*ffhq-256"):
        load_generator(tmp_path / "nope.pkl")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: the file is empty"):
        load_generator(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello world, not weights")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a recognised generator file"):
        load_generator(tmp_path / "text.pt")


def test_builtin_names_are_config_f_with_declared_random_weights():
    assert set(BUILTIN_CONFIGS) == {"ffhq-256", "ffhq-512", "ffhq-1024"}
    cfg = BUILTIN_CONFIGS["ffhq-1024"]
    assert [cfg.channels(r) for r in (4, 64, 128, 256, 512, 1024)] == [512, 512, 256, 128, 64, 32]
    assert cfg.to_init_kwargs()["synthesis_kwargs"]["num_fp16_res"] == 4
    G = stylemotion.load_generator("ffhq-256")
    assert G.checkpoint_info.random_weights and G.num_ws == 14 and G.img_resolution == 256
    assert any("RANDOM weights" in n for n in G.checkpoint_info.notes)
    H = stylemotion.load_generator("ffhq-256")
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), H.state_dict().values()))



def _build_on_global(module: str, name: str, state) -> bytes:
    """A hand-made pickle: GLOBAL module.name, then BUILD ``state`` on that very object."""
    body = pickle.dumps(state, protocol=2)[2:-1]  # drop PROTO and STOP
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + body + b"b."


@pytest.mark.parametrize("module, name, state", [
    ("torch._utils", "_rebuild_tensor_v2", (None, {"__defaults__": ({"neg": True},)})),
    ("torch._utils", "_rebuild_tensor_v2", {"__kwdefaults__": {}}),
    ("dnnlib.util", "EasyDict", (None, {"items": None})),
    ("torch_utils.persistence", "_reconstruct_persistent_obj", (None, {"x": 1})),
])
def test_pickle_cannot_tamper_with_what_it_is_given(tmp_path, module, name, state):
    legit = tmp_path / "legit.pt"
    torch.save({"w": torch.ones(3)}, legit)
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    path = tmp_path / "tamper.pkl"
    path.write_bytes(_build_on_global(module, name, state))
    with pytest.raises(CheckpointError, match=r"tamper\.pkl"):
        load_generator(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    assert torch.equal(torch.load(legit, weights_only=True)["w"], torch.ones(3))


def test_cyclic_and_malformed_checkpoints_give_typed_errors(tmp_path, small_generator):
    # Hand-made: modules = {}; record = persistent Generator whose state's _modules is that dict;
    # modules["self"] = record; {"G_ema": record}.
    cycle = (b"\x80\x02}q\x00ctorch_utils.persistence\n_reconstruct_persistent_obj\n(}("
             b"X\x04\x00\x00\x00typeX\x05\x00\x00\x00classX\n\x00\x00\x00class_name"
             b"X\t\x00\x00\x00GeneratorX\x05\x00\x00\x00state}(X\x08\x00\x00\x00_modulesh\x00"
             b"X\x0c\x00\x00\x00_init_kwargs}uutRq\x010h\x00X\x04\x00\x00\x00selfh\x01s0"
             b"}X\x05\x00\x00\x00G_emah\x01s.")
    (tmp_path / "cycle.pkl").write_bytes(cycle)
    with pytest.raises(CheckpointError, match=r"cycle\.pkl.*contains itself"):
        load_generator(tmp_path / "cycle.pkl")
    sd = state_dict_from_generator(small_generator)
    torch.save(dict(sd, **{"mapping.fc0.weight": torch.zeros(16)}), tmp_path / "fc1d.pt")
    with pytest.raises(CheckpointError, match=r"fc1d\.pt"):
        load_generator(tmp_path / "fc1d.pt")
    ros = rosinality_from_official(sd, small_generator.config)
    ros["g_ema"]["noises.noise_1"] = torch.zeros(1, 1, 4, 4)
    torch.save(ros, tmp_path / "noise.pt")
    with pytest.raises(CheckpointError, match=r"noise\.pt: malformed"):
        load_generator(tmp_path / "noise.pt")
