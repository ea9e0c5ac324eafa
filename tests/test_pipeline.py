from __future__ import annotations

import json
import shutil

import pytest
import torch

from diffkit import SCHEDULERS, load_pipeline, make_scheduler
from diffkit.pipeline import (
    PickledWeightsError,
    PipelineNotAvailableError,
    default_device_and_dtype,
    scheduler_name,
)


def test_round_trip_through_load_pipeline(tiny_sd_dir, tiny_sd):
    from diffkit.testing import tiny_random_pipeline

    assert type(tiny_sd).__name__ == "StableDiffusionPipeline"
    assert tiny_sd.device.type == "cpu" and tiny_sd.unet.dtype == torch.float32
    # the weights are the ones we saved
    ref = tiny_random_pipeline("sd")
    for (n, a), (_, b) in zip(ref.unet.state_dict().items(), tiny_sd.unet.state_dict().items()):
        assert torch.equal(a, b), n
    # and only safetensors were written
    assert list(tiny_sd_dir.rglob("*.safetensors"))
    assert not [p for p in tiny_sd_dir.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt")]


def test_generated_image_matches_the_in_memory_pipeline(tiny_sd):
    from diffkit.testing import tiny_random_pipeline

    ref = tiny_random_pipeline("sd")
    kw = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    a = tiny_sd("a red circle", generator=torch.Generator().manual_seed(0), **kw).images
    b = ref("a red circle", generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(a - b).max() < 1e-5


def test_sdxl_round_trip(tmp_path):
    from diffkit.testing import save_tiny_random_pipeline

    pipe = load_pipeline(save_tiny_random_pipeline(tmp_path / "xl", "sdxl"), device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"


def test_pickled_weights_are_refused(tmp_path):
    from diffkit.testing import tiny_random_pipeline

    tiny_random_pipeline("sd").save_pretrained(tmp_path / "pkl", safe_serialization=False)
    with pytest.raises(PickledWeightsError, match=r"safetensors only.*safe_serialization=True"):
        load_pipeline(tmp_path / "pkl")
    with pytest.raises(PickledWeightsError, match="safetensors only"):
        load_pipeline("some/model", use_safetensors=False)


def test_missing_hub_model_names_the_fix():
    with pytest.raises(
        PipelineNotAvailableError, match=r"not in the Hugging Face cache.*`hf download .*snapshot_download"
    ):
        load_pipeline("diffkit-does-not-exist/nothing-here", local_files_only=True)


def test_a_gated_model_names_the_licence_step(monkeypatch):
    from diffusers import DiffusionPipeline

    from diffkit.errors import GatedModelError

    with pytest.raises(
        GatedModelError,
        match=r"gated model.*accept its licence.*hf auth login.*hf download "
        r"black-forest-labs/FLUX\.1-dev",
    ):
        load_pipeline("black-forest-labs/FLUX.1-dev", local_files_only=True)

    def refuse(*a, **k):
        raise OSError("401 Client Error. Cannot access gated repo for url https://huggingface.co/org/x")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)
    with pytest.raises(PipelineNotAvailableError, match="https://huggingface.co/org/x, log in and accept"):
        load_pipeline("org/x")


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(PipelineNotAvailableError, match="model_index.json"):
        load_pipeline(tmp_path)
    with pytest.raises(PipelineNotAvailableError, match="no such folder"):
        load_pipeline(tmp_path / "nope")


def test_scheduler_swap_by_name(tiny_sd_dir):
    pipe = load_pipeline(tiny_sd_dir, device="cpu", scheduler="euler_ancestral")
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert scheduler_name(pipe.scheduler) == "euler_ancestral"
    for name in SCHEDULERS:
        s = make_scheduler(name, pipe.scheduler.config)
        assert scheduler_name(s) == name
        assert s.config.beta_schedule == "scaled_linear"
    with pytest.raises(ValueError, match=r"unknown scheduler 'fast'.*'ddim'"):
        make_scheduler("fast", pipe.scheduler.config)


def test_default_device_and_dtype():
    dev, dt = default_device_and_dtype()
    if torch.cuda.is_available():
        assert dev.type == "cuda" and dt == torch.float16
    else:
        assert dt == (torch.float16 if dev.type == "mps" else torch.float32)
    assert default_device_and_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype"):
        default_device_and_dtype("cpu", "float8")


def test_corrupt_model_index_is_reported(tiny_sd_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_sd_dir, bad)
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
    with pytest.raises(Exception, match="NoSuchPipeline"):
        load_pipeline(bad)


def test_a_small_unet_runs_native_cpu_convolutions_without_touching_process_state(tiny_sd_dir):
    """diffkit-tiny's size, one image at a time: oneDNN's per-call cost dominated, so load_pipeline
    gives the U-Net's convolutions PyTorch's own kernel on small float32 CPU batches, each conv
    calling it itself: torch.backends.mkldnn.enabled is never switched (two chains in two threads
    once left it off and changed the next audit's images)."""
    import copy
    from types import SimpleNamespace

    from diffkit.convolutions import (
        NATIVE_CONV_MAX_BATCH,
        NATIVE_CONV_MAX_CHANNELS,
        NativeConv2d,
        is_small_unet,
        native_cpu_convolutions,
    )

    assert NATIVE_CONV_MAX_BATCH == 4  # the test's batch of 3 prompts with guidance is 6

    pipe = load_pipeline(tiny_sd_dir, device="cpu")
    convs = [m for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m.__dict__.get("forward"), NativeConv2d) for m in convs)
    assert not any("forward" in m.__dict__ for m in pipe.vae.modules())  # the VAE keeps oneDNN
    flags = []  # the process-wide flag, read inside every U-Net convolution
    for m in convs:
        m.register_forward_pre_hook(lambda m, a: flags.append(torch.backends.mkldnn.enabled))
    assert torch.backends.mkldnn.enabled
    out = pipe(
        "a red circle",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    pipe(["a red circle"] * 3, num_inference_steps=2, height=32, width=32, output_type="np")
    assert flags and all(flags) and torch.backends.mkldnn.enabled

    # the numbers are exactly those of the U-Net run with oneDNN switched off (the old switch),
    # on one, two and four samples; five or more samples and bfloat16 keep oneDNN's numbers
    plain = copy.deepcopy(pipe.unet)
    for m in plain.modules():
        m.__dict__.pop("forward", None)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in (1, 2, 4, 6):
            x, e = torch.randn(b, 4, 8, 8, generator=g), torch.randn(b, 77, 32, generator=g)
            native = pipe.unet(x, 981, encoder_hidden_states=e).sample
            with torch.backends.mkldnn.flags(enabled=b > NATIVE_CONV_MAX_BATCH):
                ref = plain(x, 981, encoder_hidden_states=e).sample
            assert torch.equal(native, ref), b
        x, e = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
        bf = copy.deepcopy(pipe.unet).to(torch.bfloat16)
        assert torch.equal(
            bf(x.bfloat16(), 1, encoder_hidden_states=e.bfloat16()).sample,
            plain.to(torch.bfloat16)(x.bfloat16(), 1, encoder_hidden_states=e.bfloat16()).sample,
        )
    with pytest.raises(RuntimeError):  # a wrong input fails as the conv itself would fail
        pipe.unet(torch.zeros(1, 7, 4, 4), 1, encoder_hidden_states=torch.zeros(1, 77, 32))

    native_cpu_convolutions(pipe)  # twice: still one wrapper per conv, around the stock forward
    assert all(type(m.forward) is NativeConv2d and m.forward.conv is m for m in convs)
    twin = copy.deepcopy(pipe.unet)  # the copy runs its own weights, not the original's
    assert twin.conv_in.forward.conv is twin.conv_in
    x, e = torch.randn(1, 4, 4, 4, generator=g), torch.zeros(1, 77, 32)
    with torch.no_grad():
        twin.conv_in.weight.zero_()
        assert not torch.equal(
            twin(x, 1, encoder_hidden_states=e).sample, pipe.unet(x, 1, encoder_hidden_states=e).sample
        )

    from diffkit.testing import tiny_random_pipeline

    plain_pipe = tiny_random_pipeline("sd")  # oneDNN throughout
    ref = plain_pipe(
        "a red circle",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert abs(out - ref).max() < 1e-4

    wide = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280))))
    assert not is_small_unet(wide) and is_small_unet(pipe)
    assert NATIVE_CONV_MAX_CHANNELS < 320  # SD 1.5 keeps oneDNN
    meta = load_pipeline(tiny_sd_dir, device="meta")
    assert not any("forward" in m.__dict__ for m in meta.unet.modules())
