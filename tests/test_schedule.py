import math

import pytest
from helpers import expected_coefficients

from layerseg_merge.engine.schedule import ScheduleSettings, anchor_share, coefficients


@pytest.mark.parametrize("shape", ["linear", "cosine", "step"])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 0.6, 0.75, 1.0])
def test_backbone_coefficients_match_design(shape, depth):
    settings = ScheduleSettings(uniform_until=0.5, anchor_max=0.9, schedule=shape)
    got = coefficients([1.0, 2.0, 1.0], 1, "backbone", depth, settings)
    want = expected_coefficients([1.0, 2.0, 1.0], 1, "backbone", depth,
                                 uniform_until=0.5, anchor_max=0.9, schedule=shape)
    assert got == pytest.approx(want)
    assert sum(got) == pytest.approx(1.0)


def test_shapes_at_known_points():
    s = ScheduleSettings(uniform_until=0.0, anchor_max=1.0, schedule="linear")
    assert anchor_share(0.5, 0.25, s) == pytest.approx(0.625)
    s = ScheduleSettings(uniform_until=0.0, anchor_max=1.0, schedule="cosine")
    assert anchor_share(0.5, 0.25, s) == pytest.approx(0.25 + 0.75 * 0.5)
    assert anchor_share(0.25, 0.0, s) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    s = ScheduleSettings(uniform_until=0.5, anchor_max=0.8, schedule="step")
    assert anchor_share(0.5, 0.25, s) == 0.25
    assert anchor_share(0.51, 0.25, s) == pytest.approx(0.8)


@pytest.mark.parametrize("heads,alpha", [("anchor", 1.0), ("uniform", 0.5), ("schedule", 0.9)])
def test_head_policies(heads, alpha):
    s = ScheduleSettings(anchor_max=0.9, heads=heads)
    assert coefficients([1.0, 1.0], 0, "head", None, s) == pytest.approx([alpha, 1 - alpha])


def test_uniform_until_one_is_plain_weighted_mean():
    s = ScheduleSettings(uniform_until=1.0, heads="uniform")
    for depth in (0.0, 0.5, 1.0):
        assert coefficients([1, 3], 0, "backbone", depth, s) == pytest.approx([0.25, 0.75])


def test_single_input_and_zero_other_weights_copy_the_anchor():
    s = ScheduleSettings()
    assert coefficients([2.0], 0, "backbone", 0.1, s) == [1.0]
    assert coefficients([1.0, 0.0], 0, "backbone", 0.1, s) == [1.0, 0.0]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"uniform_until": 1.5}, "uniform_until must lie in [0, 1]"),
        ({"anchor_max": -0.1}, "anchor_max must lie in [0, 1]"),
        ({"schedule": "exp"}, "unknown schedule 'exp'; use one of: linear, cosine, step"),
        ({"heads": "drop"}, "unknown heads 'drop'; use one of: anchor, schedule, uniform"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScheduleSettings(**kwargs)


def test_negative_weight_and_missing_depth_are_refused():
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        coefficients([1.0, -1.0], 0, "backbone", 0.2, ScheduleSettings())
    with pytest.raises(ValueError, match="depth must lie in"):
        coefficients([1.0, 1.0], 0, "backbone", None, ScheduleSettings())


@pytest.mark.parametrize("role,depth", [("backbone", 0.2), ("backbone", 0.8), ("head", None)])
@pytest.mark.parametrize("heads", ["anchor", "schedule", "uniform"])
def test_weights_whose_sum_overflows_weigh_as_their_ratios(role, depth, heads):
    """Two weights of 1e308 sum to infinity: they still mean 'equal weights', as 1, 1 do."""
    s = ScheduleSettings(uniform_until=0.5, anchor_max=0.9, heads=heads)
    assert coefficients([1e308, 1e308], 0, role, depth, s) == coefficients([1.0, 1.0], 0, role, depth, s)
    assert coefficients([1e308, 5e307, 5e307], 1, role, depth, s) == pytest.approx(
        coefficients([2.0, 1.0, 1.0], 1, role, depth, s))


def test_a_tensor_only_one_input_holds_is_copied_whatever_its_weight():
    """Weights 0 and 1 (the end of an interpolation): a head only the anchor has is still the anchor's."""
    assert coefficients([0.0], 0, "head", None, ScheduleSettings()) == [1.0]
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        coefficients([-1.0], 0, "head", None, ScheduleSettings())
