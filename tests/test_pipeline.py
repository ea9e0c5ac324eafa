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
    with pytest.raises(PipelineNotAvailableError, match=r"not in the Hugging Face cache.*`hf download .*snapshot_download"):
        load_pipeline("diffkit-does-not-exist/nothing-here", local_files_only=True)


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


def test_a_small_unet_runs_native_cpu_convolutions_inside_its_calls_only(tiny_sd_dir):
    """diffkit-tiny's size, one image at a time: oneDNN's per-call cost dominated, so load_pipeline
    switches it off inside the U-Net's forward on small float32 CPU batches, and only there."""
    import copy
    import inspect
    from types import SimpleNamespace

    from diffkit.pipeline import (
        NATIVE_CONV_MAX_BATCH,
        NATIVE_CONV_MAX_CHANNELS,
        _is_small,
        _NativeConvForward,
        native_cpu_convolutions,
    )

    assert NATIVE_CONV_MAX_BATCH == 4  # the test's batch of 3 prompts with guidance is 6

    pipe = load_pipeline(tiny_sd_dir, device="cpu")
    inside, outside = [], []  # the flag inside the forward (conv_in) and in the U-Net's own hooks
    pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: inside.append(torch.backends.mkldnn.enabled))
    pipe.unet.register_forward_pre_hook(lambda m, a: outside.append(torch.backends.mkldnn.enabled))
    assert torch.backends.mkldnn.enabled
    out = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert inside and not any(inside)  # off inside every U-Net call ...
    assert outside and all(outside)  # ... not in its hooks (the recorder's gate waits there) ...
    assert torch.backends.mkldnn.enabled  # ... and back on after them
    inside.clear()  # a batch past NATIVE_CONV_MAX_BATCH keeps oneDNN (2.6× faster at 16 images)
    pipe(["a red circle"] * 3, num_inference_steps=2, height=32, width=32, output_type="np")
    assert inside and all(inside) and torch.backends.mkldnn.enabled
    x, e = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(1, 77, 32)
    inside.clear()  # so do bfloat16 calls (native bf16 convolutions are many times slower)
    pipe.unet.to(torch.bfloat16)(x.bfloat16(), 1, encoder_hidden_states=e.bfloat16())
    pipe.unet.float()
    assert inside == [True]
    with pytest.raises(RuntimeError):  # an error inside the call restores it
        pipe.unet(torch.zeros(1, 7, 4, 4), 1, encoder_hidden_states=e)
    assert torch.backends.mkldnn.enabled

    def interrupt(m, a):
        raise KeyboardInterrupt

    h = pipe.unet.conv_in.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):  # ... and so does Ctrl-C (a BaseException)
        pipe.unet(x, 1, encoder_hidden_states=e)
    h.remove()
    assert torch.backends.mkldnn.enabled
    native_cpu_convolutions(pipe)  # twice: still one wrapper
    assert isinstance(pipe.unet.forward, _NativeConvForward)
    assert not isinstance(pipe.unet.forward.forward, _NativeConvForward)
    assert "encoder_hidden_states" in inspect.signature(pipe.unet.forward).parameters
    twin = copy.deepcopy(pipe.unet)  # the copy runs its own weights, not the original's
    assert twin.forward.forward.__self__ is twin
    with torch.no_grad():
        twin.conv_in.weight.zero_()
        assert not torch.equal(twin(x, 1, encoder_hidden_states=e).sample, pipe.unet(x, 1, encoder_hidden_states=e).sample)

    from diffkit.testing import tiny_random_pipeline

    plain = tiny_random_pipeline("sd")  # oneDNN throughout
    ref = plain("a red circle", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert abs(out - ref).max() < 1e-4

    wide = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280))))
    assert not _is_small(wide) and _is_small(pipe)
    assert NATIVE_CONV_MAX_CHANNELS < 320  # SD 1.5 keeps oneDNN
    assert not isinstance(load_pipeline(tiny_sd_dir, device="meta").unet.forward, _NativeConvForward)
