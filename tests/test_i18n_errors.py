"""The errors of the notebooks' first lessons in Spanish: images, the forward chain, the noise
schedules and the two-pixel toy. English stays byte for byte what it was (the other tests read it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.errors import InputError
from diffkit.i18n import set_language

pytestmark = pytest.mark.usefixtures("english_environment")


def test_image_errors_in_spanish_and_english():
    from diffkit.images import prepare_init_image, to_uint8

    bad = np.full((4, 4, 3), 2.0, dtype=np.float32)
    with pytest.raises(InputError, match=r"^a float image must lie in \[0, 1\], got values 2–2; fix: divide a 0–255"):
        prepare_init_image(bad)
    set_language("es")
    with pytest.raises(InputError) as err:
        prepare_init_image(bad)
    assert str(err.value) == (
        "una imagen de tipo float debe estar en [0, 1], y sus valores van de 2 a 2; "
        "solución: divide entre 255 un array de 0–255"
    )
    with pytest.raises(InputError, match=r"\(parece latentes\); solución: pasa una imagen RGB"):
        prepare_init_image(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"^value_range debe ser \(low, high\) con high > low, y es \(1, 0\)"):
        to_uint8(np.zeros((2, 2, 3)), value_range=(1, 0))


def test_forward_errors_in_spanish():
    from diffkit.forward import q_sample, q_step, to_model_range

    set_language("es")
    with pytest.raises(InputError, match=r"^se esperaba una imagen RGB, y su modo es 'L'; conviértela con"):
        from PIL import Image

        to_model_range(Image.new("L", (4, 4)))
    with pytest.raises(InputError, match=r"^q_step recibe un solo instante t, y es \[1, 2\]"):
        q_step(torch.zeros(3, 4, 4), [1, 2])
    with pytest.raises(InputError, match=r"^noise debe tener la forma de x0, \(1, 3, 4, 4\), y tiene \(1, 3, 2, 2\)$"):
        q_sample(torch.zeros(1, 3, 4, 4), 5, noise=torch.zeros(1, 3, 2, 2))


def test_schedule_errors_in_spanish():
    from diffkit.schedules import NoiseSchedule, get_schedule, schedules_frame

    set_language("es")
    with pytest.raises(InputError, match=r"^calendario desconocido: 'lineal'; elige uno de \["):
        get_schedule("lineal")
    with pytest.raises(InputError, match=r"^t debe estar en \[0, 1000\) en este calendario de 1000 pasos, y es 1000; "):
        get_schedule("linear").check_timestep(1000)
    with pytest.raises(InputError, match=r"^las betas deben ser finitas; hay NaN o inf$"):
        NoiseSchedule.from_betas([0.1, float("nan")])
    with pytest.raises(InputError, match=r"^num_train_timesteps debe ser ≥ 2, y es 1$"):
        get_schedule("linear", 1)
    with pytest.raises(InputError, match=r"^da al menos un calendario, p\. ej\. \['linear', 'cosine'\]$"):
        schedules_frame([])
    set_language("en")
    with pytest.raises(InputError, match=r"^unknown schedule 'lineal'; choose one of \["):
        get_schedule("lineal")


def test_toy_errors_in_spanish():
    from diffkit import paint_drop
    from diffkit.toy import pixels_to_model, two_pixel_chains, two_pixel_reverse

    set_language("es")
    with pytest.raises(
        InputError, match=r"^una imagen de dos píxeles tiene 2 valores, y su forma es \(3,\); solución: "
    ):
        pixels_to_model([1, 2, 3])
    with pytest.raises(InputError, match=r"^los valores de los píxeles deben estar en \[0, 255\], y son \(300, 0\)$"):
        pixels_to_model((300, 0))
    with pytest.raises(InputError, match=r"^n_chains debe ser ≥ 1, y es 0$"):
        two_pixel_chains(n_chains=0)
    with pytest.raises(InputError, match=r"^eta debe estar en \[0, 1\] \(1 = DDPM, 0 = DDIM\), y es 2$"):
        two_pixel_reverse([(170, 150)], eta=2)
    with pytest.raises(InputError, match=r"^n_particles y steps deben ser ≥ 1, y son 0 y 5$"):
        paint_drop(0, 5)
