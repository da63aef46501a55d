"""Hypothesis state machine: the table against a Python dict + numpy model.

Every operation is checked against the model, and after each step the whole
table (keys, rows, scores) must equal the model with exact accounting:
inserted = resident + evicted + erased.
"""

import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import jax_hypereca as h
from jax_hypereca.errors import insert_status_dict

DIM = 3
KEYS = st.integers(min_value=-3, max_value=80).filter(lambda k: k != h.ERASED_KEY)


class TableModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.spec = h.TableSpec(name="t", dim=DIM, capacity=32, bucket_size=8,
                                optimizer=h.SGD(learning_rate=0.5), initializer=h.uniform(1.0),
                                seed=5)
        self.state = h.init_table(self.spec)
        self.model: dict[int, list] = {}  # key -> [row, last_step, freq]
        self.step = 1
        self.evicted = 0
        self.erased = 0
        self.inserted = 0

    @rule(keys=st.lists(KEYS | st.just(h.PADDING_ID), min_size=1, max_size=12),
          advance=st.booleans(), policy_pin=st.booleans())
    def insert(self, keys, advance, policy_pin):
        self.step += int(advance)
        pin_from = self.step if policy_pin else self.step - 1
        q = np.asarray(keys, np.int64)
        self.state, r = h.find_or_insert(self.spec, self.state, q, step=self.step,
                                         pin_from=pin_from)
        slots, found = np.asarray(r.slots), np.asarray(r.found)
        s = insert_status_dict(r.status)
        table_keys = np.asarray(self.state.keys)
        before = set(self.model)
        # evicted rows first: they were resident, not asked for now, and unpinned
        n_ev = s["evicted"]
        ev_keys = np.asarray(r.evicted.keys)
        assert (ev_keys[n_ev:] == h.EMPTY_KEY).all()
        for i, k in enumerate(ev_keys[:n_ev].tolist()):
            assert k in self.model and k not in keys
            row, last, freq = self.model.pop(k)
            np.testing.assert_array_equal(np.asarray(r.evicted.values[i]), row)
            assert int(r.evicted.last_step[i]) == last < min(pin_from, self.step)
            assert int(r.evicted.freq[i]) == freq
        self.evicted += n_ev
        if n_ev:
            event("evicted rows")
        if s["failed"]:
            event("refused inserts")
        seen_now = set()
        for i, k in enumerate(keys):
            if k == h.PADDING_ID:
                assert slots[i] == -1 and not found[i]
                continue
            assert found[i] == (k in before)  # resident before this call
            if slots[i] < 0:
                assert k not in before and k not in self.model
                continue
            assert table_keys[slots[i]] == k
            if k not in self.model:
                init = h.init_rows(5, np.asarray([k]), DIM, self.spec.initializer)[0]
                self.model[k] = [init, self.step, 0]
                self.inserted += 1
            self.model[k][1] = self.step
            self.model[k][2] += 1
            seen_now.add(k)
        assert s["inserted"] == len(seen_now - before)
        assert s["failed"] == sum(1 for i, k in enumerate(keys)
                                  if k != h.PADDING_ID and slots[i] < 0)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def apply(self, data):
        keys = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=8))
        grads = data.draw(st.lists(st.floats(-2, 2, width=32), min_size=len(keys) * DIM,
                                   max_size=len(keys) * DIM))
        g = np.asarray(grads, np.float32).reshape(len(keys), DIM)
        rows, found = h.find(self.spec, self.state, np.asarray(keys, np.int64))
        assert np.asarray(found).all()
        slots = [int(np.flatnonzero(np.asarray(self.state.keys) == k)[0]) for k in keys]
        self.state, _ = h.apply_gradients(self.spec, self.state, jnp.asarray(slots, jnp.int32),
                                          g, step=0)
        total: dict[int, np.ndarray] = {}
        for k, gi in zip(keys, g):
            total[k] = total.get(k, np.zeros(DIM, np.float32)) + gi
        for k, gk in total.items():
            self.model[k][0] = (self.model[k][0] - np.float32(0.5) * gk).astype(np.float32)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=6))
    def erase(self, keys):
        self.state, erased = h.erase(self.spec, self.state, np.asarray(keys, np.int64))
        erased = np.asarray(erased)
        gone = set()
        for k, e in zip(keys, erased):
            assert e == (k in self.model and k not in gone)
            if e:
                gone.add(k)
                self.model.pop(k)
        self.erased += len(gone)

    @rule(below=st.integers(0, 12))
    def erase_if(self, below):
        self.state, count = h.erase_if(self.spec, self.state, below=below)
        old = [k for k, v in self.model.items() if v[1] < below]
        assert int(count) == len(old)
        for k in old:
            self.model.pop(k)
        self.erased += len(old)

    @precondition(lambda self: self.state.capacity < 256)
    @rule()
    def grow(self):
        self.state = h.grow(self.spec, self.state, self.state.capacity * 2)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=6))
    def find(self, keys):
        rows, found = h.find(self.spec, self.state, np.asarray(keys, np.int64))
        for k, row, f in zip(keys, np.asarray(rows), np.asarray(found)):
            assert f == (k in self.model)
            if f:
                np.testing.assert_array_equal(row, self.model[k][0])
            else:
                assert not row.any()

    @invariant()
    def table_equals_model(self):
        rows = list(h.export(self.spec, self.state, chunk_size=16))
        got = h.Rows.concat(rows) if rows else None
        keys = [] if got is None else got.keys.tolist()
        assert sorted(keys) == sorted(self.model)
        for i, k in enumerate(keys):
            row, last, freq = self.model[k]
            np.testing.assert_array_equal(got.values[i], row)
            assert got.last_step[i] == last and got.freq[i] == freq
        c = h.counters_dict(self.state)
        assert c["size"] == len(self.model)
        assert c["inserted"] == self.inserted and c["evicted"] == self.evicted
        assert c["erased"] == self.erased
        assert c["inserted"] == c["size"] + c["evicted"] + c["erased"]


TableModel.TestCase.settings = settings(
    max_examples=80, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_table_against_dict = TableModel.TestCase
