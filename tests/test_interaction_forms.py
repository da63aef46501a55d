"""experiments/interaction_forms.py: every benchmarked form of the dot
interaction agrees with the einsum form in value and gradient, and FASTEST is
the form the models use."""

import jax
import numpy as np
import pytest

from experiments.interaction_forms import FASTEST, FORMS
from models.interaction import dot_interaction, num_pairs


@pytest.mark.parametrize("form", sorted(FORMS))
def test_interaction_forms_agree_in_value_and_gradient(form):
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    vectors = [jax.random.normal(k, (16, 8)) for k in keys[:6]]
    ct = jax.random.normal(keys[6], (16, num_pairs(6)))
    np.testing.assert_allclose(np.asarray(FORMS[form](vectors)),
                               np.asarray(FORMS["einsum"](vectors)), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda vs: (FORMS[form](vs) * ct).sum())(vectors)
    want = jax.grad(lambda vs: (FORMS["einsum"](vs) * ct).sum())(vectors)
    for g, w in zip(grad, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_fastest_is_the_models_form():
    assert FORMS[FASTEST] is dot_interaction
