"""Exchange strategies (jax_hypereca/exchange.py): every strategy is the same
block transpose over the mesh axis, bit for bit, with the designed
collectives in the compiled HLO and the same byte accounting."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca import exchange as ex

AX = "shard"
STRATEGIES = (ex.AllToAll(), ex.Ring())
I64 = np.iinfo(np.int64)
# bfloat16 bit patterns: denormals, -0, +-inf, a quiet and two signalling NaNs
BF16_SPECIAL = np.array([0x0001, 0x8001, 0x0080, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC1],
                        np.uint16)
F32_SPECIAL = np.array([0x00000001, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                        0xFFA00001], np.uint32)


def mesh_of(n: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), (AX,))


def put(mesh: Mesh, a: np.ndarray) -> jax.Array:
    """Global (W, W, ...) host array, rank r holding a[r] (dtype kept)."""
    return jax.device_put(jnp.asarray(a, a.dtype), NamedSharding(mesh, P(AX)))


def three_exchanges(strategy: ex.Exchange, mesh: Mesh):
    """The step's uses: ids out, f32 and bf16 rows back, gradients out. Each
    argument is global (W, W, cap, ...), rank r holding its (W, cap, ...) send
    buffer; rank r also adds r to its id keys (per-rank content made on the
    device)."""
    w = mesh.shape[AX]

    def body(ids, rows32, rows16, grads):
        me = lax.axis_index(AX).astype(jnp.int64)
        ids = ids[0].at[..., 1].add(me)  # tags depend on the rank
        return (strategy.send_ids(ids, AX, w)[None], strategy.return_rows(rows32[0], AX, w)[None],
                strategy.return_rows(rows16[0], AX, w)[None],
                strategy.send_grads(grads[0], AX, w)[None])

    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(AX),) * 4,
                                 out_specs=(P(AX),) * 4))


def host_inputs(n: int, cap: int = 5, dim: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed + n)
    ids = rng.integers(I64.min, I64.max, size=(n, n, cap, 2), dtype=np.int64, endpoint=True)
    flat = ids.reshape(-1)
    flat[:6] = [I64.min, I64.max, -1, 0, 1, I64.min + 1][:flat.size]
    rows32 = rng.standard_normal((n, n, cap, dim)).astype(np.float32)
    rows32.reshape(-1).view(np.uint32)[:len(F32_SPECIAL)] = F32_SPECIAL[:rows32.size]
    rows16 = rng.standard_normal((n, n, cap, dim)).astype(jnp.bfloat16)
    rows16.reshape(-1).view(np.uint16)[:len(BF16_SPECIAL)] = BF16_SPECIAL[:rows16.size]
    grads = rng.standard_normal((n, n, cap, dim)).astype(np.float32) * np.arange(1, n + 1)[
        :, None, None, None]
    return ids, rows32, rows16, grads


def bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view({8: np.uint64, 4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_ring_equals_all_to_all_bit_for_bit_and_the_transpose(n):
    mesh = mesh_of(n)
    host = host_inputs(n)
    args = [put(mesh, a) for a in host]
    out = {s.name: [np.asarray(o) for o in three_exchanges(s, mesh)(*args)] for s in STRATEGIES}
    for a, r in zip(out["all_to_all"], out["ring"]):
        assert a.dtype == r.dtype and a.shape == r.shape
        np.testing.assert_array_equal(bits(a), bits(r))

    # result[r][w] == input[w][r], the ids' tags having been raised by the sender w
    ids = host[0].copy()
    ids[..., 1] += np.arange(n, dtype=np.int64)[:, None, None]
    want = [np.swapaxes(a, 0, 1) for a in (ids, *host[1:])]
    got = out["ring"]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(bits(got[1]), bits(want[1]))  # f32: NaN payloads kept
    np.testing.assert_array_equal(bits(got[3]), bits(want[3]))
    # bf16: every bit kept except signalling NaNs, which the CPU backend quiets
    # (it moves bf16 as f32) -- for both strategies alike (checked above)
    nan = np.isnan(want[2].astype(np.float32))
    assert np.array_equal(np.isnan(got[2].astype(np.float32)), nan)
    np.testing.assert_array_equal(bits(got[2])[~nan], bits(want[2])[~nan])


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_block_from_rank_w_lands_at_position_w(strategy):
    """Made on the devices: rank r's block for w holds r*W + w, so after the
    exchange rank r's block w holds w*W + r."""
    n = 8
    mesh = mesh_of(n)

    def body(_):
        me = lax.axis_index(AX)
        blocks = jnp.broadcast_to((me * n + jnp.arange(n))[:, None], (n, 4)).astype(jnp.int64)
        return strategy.exchange(blocks, AX, n)[None]

    got = np.asarray(jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(AX), out_specs=P(AX)))(
        jnp.zeros((n,), jnp.int32)))
    want = np.arange(n)[None, :] * n + np.arange(n)[:, None]
    np.testing.assert_array_equal(got, np.broadcast_to(want[..., None], (n, n, 4)))


def collectives(hlo: str) -> list[tuple[str, str]]:
    """(op, rest of line) of every all-to-all / collective-permute instruction
    in compiled HLO; an async -start/-done pair counts once (its -start)."""
    out = []
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = .+? "
                     r"(all-to-all|collective-permute)(?:-start)?\((.*)", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_compiled_hlo_holds_the_designed_collectives(n):
    mesh = mesh_of(n)
    args = [put(mesh, a) for a in host_inputs(n, cap=4, dim=2)]
    for s in STRATEGIES:
        ops = collectives(three_exchanges(s, mesh).lower(*args).compile().as_text())
        kinds = [k for k, _ in ops]
        if n == 1:
            assert kinds == [], (s.name, ops)
        elif s.name == "all_to_all":
            assert kinds.count("all-to-all") == 4 and "collective-permute" not in kinds, ops
        else:
            assert kinds.count("collective-permute") == 4 * (n - 1), ops
            assert "all-to-all" not in kinds, ops
            # each step is one shift of the ring: rank r -> (r + s) % n
            shifts = []
            for _, rest in ops:
                pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", rest).group(1)
                pairs = [tuple(map(int, p.strip("{}").split(","))) for p in pairs.split("},{")]
                assert sorted(pairs) == [(r, (r + pairs[0][1] - pairs[0][0]) % n)
                                         for r in range(n)], pairs
                shifts.append((pairs[0][1] - pairs[0][0]) % n)
            assert sorted(shifts) == sorted(list(range(1, n)) * 4)


def test_bytes_per_step_exact_and_the_same_for_every_strategy():
    # W=4, cap=10, dim=8, bfloat16 rows: 3 remote blocks of 10 entries each
    want = {"ids": 3 * 10 * 16, "rows": 3 * 10 * 8 * 2, "grads": 3 * 10 * 8 * 4}
    assert want == {"ids": 480, "rows": 480, "grads": 960}
    assert ex.bytes_per_step(4, 10, 8, 2) == want
    for s in STRATEGIES:
        assert s.bytes_per_step(4, 10, 8, 2) == want
        assert s.bytes_per_step(8, 1000, 16, 4) == ex.bytes_per_step(8, 1000, 16, 4) == {
            "ids": 112_000, "rows": 448_000, "grads": 448_000}
        assert s.bytes_per_step(1, 1000, 16, 4) == {"ids": 0, "rows": 0, "grads": 0}


def test_get_exchange_names_and_errors():
    assert ex.get_exchange("all_to_all") == ex.AllToAll()
    assert ex.get_exchange("ring") == ex.Ring()
    assert ex.get_exchange("ring").name == "ring" and ex.AllToAll().name == "all_to_all"
    for bad in ("Ring", "auto", "", None):
        with pytest.raises(ValueError, match=r"'all_to_all', 'ring'") as e:
            ex.get_exchange(bad)
        assert repr(bad) in str(e.value)


def test_strategies_are_hashable_jit_keys():
    assert hash(ex.Ring()) == hash(ex.Ring()) and ex.Ring() == ex.Ring()
    assert ex.Ring() != ex.AllToAll()
    assert len({ex.Ring(), ex.AllToAll(), ex.get_exchange("ring")}) == 2
    with pytest.raises(Exception):
        ex.Ring().name = "x"  # frozen (a class constant, not per instance)


def test_wrong_leading_dimension_is_a_clear_error():
    mesh = mesh_of(4)
    for s in STRATEGIES:
        f = jax.shard_map(lambda b, s=s: s.exchange(b, AX, 4), mesh=mesh, in_specs=P(AX),
                          out_specs=P(AX))
        with pytest.raises(ValueError, match=r"num_shards=4"):
            jax.jit(f)(jnp.zeros((4 * 3, 2), jnp.float32))


def test_trial_takes_turns_then_keeps_the_faster_with_a_margin():
    t = ex.ExchangeTrial(rounds=2)
    turns = []
    for seconds in ({"all_to_all": 1.0, "ring": 0.9}[n] for n in ["all_to_all", "ring"] * 2):
        turns.append(t.current().name)
        assert t.chosen is None
        t.record(turns[-1], seconds)
    assert turns == ["all_to_all", "ring", "all_to_all", "ring"]
    assert t.chosen == ex.Ring() and t.timings == {"all_to_all": 1.0, "ring": 0.9}
    t.record("all_to_all", 0.01)  # decided: later steps change nothing
    assert t.current() == ex.Ring()

    close = ex.ExchangeTrial(rounds=1)  # the ring within the margin: AllToAll stays
    close.record("all_to_all", 1.0)
    close.record("ring", 1.0 - ex.RING_MARGIN / 2)
    assert close.chosen == ex.AllToAll()
    with pytest.raises(ValueError, match="rounds=0; set rounds to at least 1"):
        ex.ExchangeTrial(rounds=0)
