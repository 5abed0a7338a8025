import pytest

from nas.mes import MesSpec, mobile_efficiency_score
from search_spaces import InvalidInputError, parse_latency_ms, parse_mes, parse_params


def test_mes_of_s0_is_102_9():
    assert round(mobile_efficiency_score(3.5e6, 0.9), 1) == 102.9
    assert round(MesSpec()(3.5e6, 0.9), 1) == 102.9


def test_mes_alphas_and_units():
    # alphas of 0 ignore a dimension
    assert mobile_efficiency_score(3e6, 7.0, alpha_latency=0.0) == pytest.approx(100.0)
    assert mobile_efficiency_score(12e6, 1.0, alpha_size=0.0) == pytest.approx(100.0)
    assert mobile_efficiency_score(12e6, 1.0, alpha_size=1.0) == pytest.approx(25.0)
    # a unit scales every score by one constant: choices never change
    a = [mobile_efficiency_score(p, l) for p, l in [(3e6, 1.0), (5e6, 0.7), (9e6, 2.0)]]
    b = [mobile_efficiency_score(p, l, latency_unit_ms=3.2) for p, l in [(3e6, 1.0), (5e6, 0.7), (9e6, 2.0)]]
    assert [x / y for x, y in zip(a, b)] == pytest.approx([a[0] / b[0]] * 3)
    # smaller and faster is better
    assert mobile_efficiency_score(3e6, 0.8) > mobile_efficiency_score(3e6, 0.9) > mobile_efficiency_score(4e6, 0.9)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha_latency": 1.5}, r"alpha_latency = 1.5 is outside \[0, 1\]"),
    ({"alpha_size": -0.1}, r"alpha_size = -0.1 is outside \[0, 1\]"),
])
def test_mes_rejects_bad_alphas(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        mobile_efficiency_score(3e6, 1.0, **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        MesSpec(**kwargs)


def test_mes_rejects_non_positive_inputs():
    with pytest.raises(InvalidInputError, match="latency_ms = 0"):
        mobile_efficiency_score(3e6, 0)
    with pytest.raises(InvalidInputError, match="params = -1"):
        mobile_efficiency_score(-1, 1.0)


@pytest.mark.parametrize("text, count", [("7M", 7_000_000), ("3.5M", 3_500_000), ("800K", 800_000),
                                         ("1.2G", 1_200_000_000), (" 7m ", 7_000_000), ("2.5e1M", 25_000_000)])
def test_parse_params(text, count):
    assert parse_params(text) == count


@pytest.mark.parametrize("text, ms", [("1.1ms", 1.1), ("900us", 0.9), ("0.002s", 2.0), ("3 ms", 3.0)])
def test_parse_latency(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("parser, text, message", [
    (parse_params, "7", "has no unit; expected K, M or G"),
    (parse_params, "-7M", "negative"),
    (parse_params, "7X", "unknown unit 'X'"),
    (parse_params, "0M", "must be positive"),
    (parse_params, "lots", "is not a size"),
    (parse_latency_ms, "1.1", "has no unit; expected ms, us or s"),
    (parse_latency_ms, "-1ms", "negative"),
    (parse_latency_ms, "1.1h", "unknown unit 'h'"),
    (parse_mes, "60ms", "MES has no unit"),
    (parse_mes, "-60", "negative"),
])
def test_bad_budgets(parser, text, message):
    with pytest.raises(InvalidInputError, match=message):
        parser(text)


def test_parse_mes():
    assert parse_mes("60") == 60.0
