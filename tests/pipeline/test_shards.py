"""Several processes sharing the default path (variational.ddp.Shard), checked in one process:
two threads stand for two torchrun ranks, their collectives summing through a barrier. Every
statistic, the recovery and a whole compress_ must equal the one-process result up to float
summation order, and the two ranks must end with identical weights.
(The real torchrun launch: tests/pipeline/test_torchrun.py, slow tier.)"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

from bmr_compress.errors import InputError
from bmr_compress.variational.ddp import Shard, current_shard, local_batches, sharded
from tests.tiny_models import TinyMLP, tiny_bert


class ThreadGroup:
    """`world` threads, each one rank, whose sum_ / broadcast_ meet at a barrier."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world, timeout=60)
        self.slots: list[torch.Tensor | None] = [None] * world

    def _sum(self, rank: int, t: torch.Tensor) -> None:
        self.slots[rank] = t.detach().clone()
        self.barrier.wait()
        total = self.slots[0].clone()
        for s in self.slots[1:]:
            total += s
        self.barrier.wait()  # nobody writes a slot before everyone has read them
        t.copy_(total)

    def _broadcast(self, rank: int, t: torch.Tensor) -> None:
        self.slots[rank] = t.detach().clone()
        self.barrier.wait()
        root = self.slots[0].clone()
        self.barrier.wait()
        t.copy_(root)

    def shard(self, rank: int) -> Shard:
        return Shard(rank, self.world, lambda t: self._sum(rank, t),
                     lambda t: self._broadcast(rank, t))

    def run(self, fn: Callable[[int], Any]) -> list[Any]:
        """fn(rank) on every rank at once, each under its Shard; the results by rank."""
        out: list[Any] = [None] * self.world
        errors: list[BaseException] = []

        def body(rank: int) -> None:
            try:
                with sharded(self.shard(rank)):
                    out[rank] = fn(rank)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out


def _text_batches() -> list[dict[str, torch.Tensor]]:
    """Odd sizes (uneven slices) and padding (the masks must travel with their rows)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for n, t in ((5, 9), (7, 6)):
        ids = torch.randint(5, 97, (n, t), generator=g)
        mask = torch.ones(n, t, dtype=torch.long)
        mask[::2, t - 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_slices_cover_every_example_once_and_refuse_too_small_batches() -> None:
    group = ThreadGroup(3)
    batch = {"x": torch.arange(7), "pos": torch.zeros(1, 4), "flag": True}
    parts = [group.shard(r).local(batch) for r in range(3)]
    assert [p["x"].tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert all(p["pos"].shape == (1, 4) and p["flag"] is True for p in parts)  # not per example
    with pytest.raises(InputError, match="2 examples cannot be shared by 3 processes"):
        group.shard(0).local({"x": torch.arange(2)})
    assert current_shard() is None and local_batches([batch]) == [batch]


def test_statistics_equal_one_process() -> None:
    from bmr_compress.scoring.unit_posterior import input_moments, output_scale, row_scales
    from bmr_compress.scoring.precision import embedding_factors

    model, batches = tiny_bert(), _text_batches()
    names = ["encoder.layer.0.output.dense", "encoder.layer.1.attention.output.dense"]

    def stats(_rank: int) -> tuple[Any, ...]:
        m = copy.deepcopy(model)
        scale = output_scale(m, batches, "embedding")
        a = input_moments(m, names, batches)
        b = row_scales(m, names, batches, "embedding", scale, a)
        return scale, a, b, embedding_factors(m, batches, "embedding", scale)

    one = stats(0)
    both = ThreadGroup(2).run(stats)
    assert all(torch.equal(both[0][3][1][k], both[1][3][1][k]) for k in one[3][1])
    for two in both:
        assert two[0] == pytest.approx(one[0], rel=1e-12)
        for k in names:
            torch.testing.assert_close(two[1][k], one[1][k], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(two[2][k], one[2][k], rtol=1e-9, atol=1e-12)
        # the token table's statistics are per example; a table read at shared positions
        # (position ids (1, tokens)) sums its gradient over the batch, so it depends on the
        # split and is only the same on every rank
        torch.testing.assert_close(two[3][0], one[3][0], rtol=1e-9, atol=1e-12)
        word = "embeddings.word_embeddings"
        torch.testing.assert_close(two[3][1][word], one[3][1][word], rtol=1e-9, atol=1e-12)
    assert all(float(v.abs().sum()) > 0 for v in one[2].values())  # not trivially equal


@pytest.mark.parametrize("task,hidden", [("embedding", 1.0), ("classification", 0.0)])
def test_recovery_equals_one_process_and_ranks_agree(task: str, hidden: float) -> None:
    from bmr_compress.algorithms import recover_
    from bmr_compress.algorithms.targets import TeacherTargets

    if task == "embedding":
        teacher, batches = tiny_bert(), _text_batches()
    else:
        torch.manual_seed(2)
        teacher = TinyMLP().eval()
        g = torch.Generator().manual_seed(3)
        batches = [{"pixel_values": torch.randn(n, 64, generator=g),
                    "labels": torch.randint(0, 10, (n,), generator=g)} for n in (6, 9)]
        batches[1]["labels"][::3] = -100  # ignored labels count in neither share
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # a perturbed student, so there is something to recover
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))

    def run(_rank: int) -> tuple[dict[str, torch.Tensor], Any]:
        m = copy.deepcopy(student)
        targets = TeacherTargets.compute(teacher, local_batches(batches), task,
                                         hidden=hidden > 0)
        rec = recover_(m, teacher, batches, task, steps=4, lr=1e-3, targets=targets,
                       hidden_weight=hidden)
        return {k: v.detach().clone() for k, v in m.state_dict().items()}, rec

    one, rec1 = run(0)
    (w0, rec0), (w1, _) = ThreadGroup(2).run(run)
    moved = max(float((one[k] - v).abs().max()) for k, v in student.state_dict().items())
    assert moved > 1e-4
    for k, v in one.items():
        assert torch.equal(w0[k], w1[k]), k  # every rank ends with the same weights
        if k.endswith("attention.self.key.bias"):
            # its exact gradient is zero (a key bias adds one constant to every score of a
            # query, which the softmax removes): Adam turns the float noise left in it into
            # lr-sized steps, different for any other summation order
            continue
        torch.testing.assert_close(w0[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert rec0.first_loss == pytest.approx(rec1.first_loss, rel=1e-5)
    assert rec0.last_loss == pytest.approx(rec1.last_loss, rel=1e-5)


def test_compress_equals_one_process() -> None:
    """A whole default-path reduction: the same kept units and (close) weights."""
    import bmr_compress as bc
    from tests.pipeline.test_compress_api import CONFIG, _batches

    torch.manual_seed(4)
    model, batches = TinyMLP().eval(), _batches(640)

    def run(_rank: int) -> Any:
        return bc.compress_(copy.deepcopy(model), batches, CONFIG, task="classification")

    one = run(0)
    two = ThreadGroup(2).run(run)
    assert any(len(g["kept"]) < g["num_units"] for g in one.surgery.groups.values())
    assert one.processes == 1 and [r.processes for r in two] == [2, 2]
    for rec in two:
        assert rec.plan.keep == one.plan.keep
        assert [r["removed_units"] for r in rec.rounds] == [r["removed_units"] for r in one.rounds]
        for k, v in one.model.state_dict().items():
            torch.testing.assert_close(rec.model.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    a, b = (r.model.state_dict() for r in two)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_environment_without_a_group(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Under torchrun's environment: the variational path is refused before any process group
    is opened, rank 1 logs warnings only, and without a group there is no Shard."""
    import logging

    from bmr_compress.cli.runtime import setup_logging
    from bmr_compress.pipeline import build_config, compress
    from bmr_compress.variational.ddp import process_shard

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(InputError, match="variational.ddp"):
        compress(build_config({"source": "zoo:mlp-digits", "steps": 3}), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert process_shard() is None  # torch.distributed has no group in this process
    try:
        setup_logging(verbose=True, debug=False)
        assert logging.getLogger("bmr_compress").level == logging.WARNING
        assert logging.getLogger("bmr_compress.progress").level == logging.WARNING
        monkeypatch.setenv("RANK", "0")
        setup_logging(verbose=True, debug=False)
        assert logging.getLogger("bmr_compress").level == logging.INFO
        assert logging.getLogger("bmr_compress.progress").level == logging.INFO
    finally:
        monkeypatch.delenv("WORLD_SIZE")
        setup_logging(verbose=False, debug=False)
