"""A hypothesis state machine over both tiers (issue 14): train steps that
insert, evict to the host tier and promote back, erases, and checkpoint
save/restore, in any order, against a dict of the ids that must exist and
against a collection with room for every row on the device that sees the
same steps and erases; table b admits ids from their 2nd step on (admission,
the sketch kept across checkpoints). After every rule: no id lost or duplicated (I1), the
accounting exact (I3: device inserted - promoted == device + host + erased
on either tier), and every row, values and optimizer state, bit-identical
to the all-on-device collection's."""

import os

import jax
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import jax_hypereca as h
from jax_hypereca.checkpoint import CheckpointManager
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.placement import make_mesh

import test_collection as tc
import test_tiers as tt

DEVICES = 2
POOL = 6  # batches the steps draw from (one shape: one compile; few, so ids come back)
ADMIT = {"b": 2}  # table b admits an id in the step it is seen in for the 2nd time


@pytest.fixture(scope="module")
def world():
    """The tiered collection and the all-on-device one, compiled once; each
    example starts both from a fresh state (and an empty host tier)."""
    batches = tt.wide(tc.make_batches(seed=11, steps=POOL))
    mesh = make_mesh(jax.devices()[:DEVICES])
    big = EmbeddingCollection(tt.specs(None, admit=ADMIT), tc.FEATURES, mesh=mesh)
    small = tt.tiered(DEVICES, admit=ADMIT)
    tx = optax.adam(0.01)
    return dict(batches=batches, small=small, big=big, tx=tx,
                steps={c: c.make_train_step(tc.head_loss, tx) for c in (small, big)})


def ids_of(batch) -> dict[str, set[int]]:
    out = {t: set() for t in tc.DIMS}
    for f in tc.FEATURES:
        ids = np.asarray(batch["ids"][f.name]).ravel()
        out[f.table] |= set(int(i) for i in ids[ids != h.PADDING_ID])
    return out


class Tiers(RuleBasedStateMachine):
    world: dict = {}
    tmp = None
    seen = {"demoted": 0, "promoted": 0, "erased": 0, "erased_on_host": 0, "restores": 0}

    def __init__(self):
        super().__init__()
        w = self.world
        w["small"].host_tier.load({})
        self.state = {c: c.init_train_state(tc.init_params(), w["tx"])
                      for c in (w["small"], w["big"])}
        self.live = {t: set() for t in tc.DIMS}  # the model: ids that must exist
        self.seen_in = {t: {} for t in tc.DIMS}  # steps each id was looked up in (admission)
        self.erased = {t: 0 for t in tc.DIMS}
        self.saves = 0

    @rule(first=st.integers(0, POOL - 1), steps=st.integers(1, 6))
    def train(self, first, steps):
        for i in range(first, first + steps):
            b = self.world["batches"][i % POOL]
            for c, step in self.world["steps"].items():
                self.state[c], _ = step(self.state[c], b)
            for t, ids in ids_of(b).items():
                for i in ids:
                    self.seen_in[t][i] = self.seen_in[t].get(i, 0) + 1
                # erasing keeps the count: an erased id seen again has its row at once
                self.live[t] |= {i for i in ids if self.seen_in[t][i] >= ADMIT.get(t, 1)}

    @rule(data=st.data(), table=st.sampled_from(sorted(tc.DIMS)))
    def erase(self, data, table):
        known = sorted(self.live[table])
        picked = data.draw(st.lists(st.sampled_from(known), max_size=12, unique=True)
                           if known else st.just([]))
        never = data.draw(st.lists(st.integers(0, 2**62), max_size=3))  # held nowhere
        q = np.array(picked + never, np.int64)
        for c in self.state:
            self.state[c], n = c.erase(self.state[c], {table: q})
            assert n[table] == len(set(picked)), (c is self.world["small"], n)
        self.live[table] -= set(picked)
        self.erased[table] += len(picked)

    @rule()
    def checkpoint(self):
        small = self.world["small"]
        ckpt = CheckpointManager(self.tmp / f"ck{id(self)}-{self.saves}")
        self.saves += 1
        ckpt.save(self.state[small], small)
        ckpt.wait()
        template = small.init_train_state(tc.init_params(), self.world["tx"])
        small.host_tier.load({})
        self.state[small], _ = ckpt.restore(template, small)
        self.seen["restores"] += 1

    @invariant()
    def every_row_is_where_the_model_says_and_equals_the_reference(self):
        small, big = self.world["small"], self.world["big"]
        stats = small.table_stats(self.state[small].tables)
        for t in tc.DIMS:
            want = tt.assert_same_rows(small, self.state[small], big, self.state[big], t)  # and I1
            assert want.keys() == self.live[t], t
            s = stats[t]
            assert s["erased"] + s["erased_on_host"] == self.erased[t]
            assert (s["inserted"] - s["promoted"] == s["size"] + s["host_rows"]
                    + s["erased"] + s["erased_on_host"]), (t, s)

    def teardown(self):
        stats = self.world["small"].table_stats(self.state[self.world["small"]].tables)
        for k in ("demoted", "promoted", "erased", "erased_on_host"):
            self.seen[k] += sum(s[k] for s in stats.values())


def test_any_sequence_of_steps_erases_and_checkpoints_loses_no_row(world, tmp_path):
    Tiers.world, Tiers.tmp = world, tmp_path
    run_state_machine_as_test(Tiers, settings=settings(
        max_examples=40 if os.environ.get("HYPERECA_SLOW_TESTS") == "1" else 3,
        stateful_step_count=8, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
    # the examples went through every path: rows left for the host and came
    # back, were erased on the device and on the host, checkpoints restored
    assert all(v > 0 for v in Tiers.seen.values()), Tiers.seen
