"""diffkit.tiny.quality's old argument names (guidance=, batch=) keep working for one release."""

from __future__ import annotations

import pytest

from diffkit.tiny import quality as q


def test_old_argument_names_still_work_with_a_warning():
    """guidance= and batch= are the deprecated names of guidance_scale= and batch_size=."""
    import numpy as np

    from diffkit.testing import tiny_random_pipeline

    tiny = tiny_random_pipeline("sd")
    new = q.generate(tiny, ["a red circle"], [0], guidance_scale=2.0, steps=1, batch_size=1)
    with pytest.warns(FutureWarning) as caught:
        old = q.generate(tiny, ["a red circle"], [0], guidance=2.0, steps=1, batch=1)
    said = sorted(str(w.message) for w in caught)
    assert said == [
        "generate(batch=...) is deprecated; use batch_size=... instead (batch is removed in diffkit 0.3)",
        "generate(guidance=...) is deprecated; use guidance_scale=... instead (guidance is removed in diffkit 0.3)",
    ]
    assert np.array_equal(np.asarray(new[0]), np.asarray(old[0]))
    with pytest.raises(TypeError, match="pass only guidance_scale="):
        q.generate(tiny, ["a red circle"], [0], guidance=2.0, guidance_scale=2.0, steps=1)
