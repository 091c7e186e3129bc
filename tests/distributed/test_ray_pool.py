"""The Ray pool itself: actors import this checkout, one case per actor, and a dead actor fails only its cases."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO
from sam2med.evaluation.pairing import pair_cases
from sam2med.evaluation.runner import CaseEvaluator, EvaluationConfig, collect_outcomes, evaluate_case

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="ray is not installed (requirements.txt pins it): the Ray pool cannot be tested")]


@pytest.fixture(scope="module")
def cases(ct_mr_folders):
    return pair_cases(ct_mr_folders / "images", ct_mr_folders / "labels")


def test_a_dead_worker_fails_its_case_and_the_others_go_on(cases):
    import ray

    from sam2med.distributed.ray_pool import RayPool

    config = EvaluationConfig(labels=[1])
    with RayPool("local", 2, 3, CaseEvaluator, "copy", "auto", {}, [], config) as pool:
        assert [info["sam2med"] for info in pool.info] == [str(REPO / "lib" / "sam2med" / "__init__.py")] * 2
        assert [info["threads"] for info in pool.info] == [3, 3]  # the run's count, not each worker's CPU share
        ray.kill(pool.actors[0])  # the first case goes to the first actor, which is gone
        outcomes = collect_outcomes(cases, pool.stream([[case] for case in cases], "run"), ["copy"])["copy"]
    assert not ray.is_initialized()
    lost, done = outcomes
    assert lost.case.name == "ct" and lost.failed and lost.error.startswith("the Ray worker died")
    assert done.case.name == "mr" and done.evaluated and done.volume is None  # arrays dropped after on_case
    expected = evaluate_case(cases[1], CaseEvaluator("copy", "auto", {}, [], config).method, config)
    assert [t.row() | {"seconds": ""} for t in done.targets] == [t.row() | {"seconds": ""} for t in expected.targets]


def test_an_address_that_does_not_answer_is_one_error_line():
    import ray

    from sam2med.distributed.ray_pool import RayPool
    from sam2med.errors import InputError

    with pytest.raises(InputError, match=r"cannot reach the Ray cluster at 127.0.0.1:1 \(Connection refused\)"):
        with RayPool("127.0.0.1:1", 1, 1, CaseEvaluator, "copy", "auto", {}, [], EvaluationConfig()):
            pass
    assert not ray.is_initialized()
