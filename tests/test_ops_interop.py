"""What crosses the Python boundary: torch and numpy in and out, bf16 via ml_dtypes, memory shared
rather than copied, the GIL released while the kernels run."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import reference_moe as ref
from reference_moe import assert_close, make
from rio_rt import ops

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")


def block(rng, e=6, h=16, i=8, dtype="float32", kind="numpy"):
    return (
        make(rng.standard_normal((e, h)), dtype, kind),
        make(rng.standard_normal((e, 2 * i, h)) / 4, dtype, kind),
        make(rng.standard_normal((e, h, i)) / 3, dtype, kind),
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_in_torch_out(rng, dtype):
    x64 = rng.standard_normal((5, 16))
    router, gu, down = block(rng, dtype=dtype, kind="torch")
    x = make(x64, dtype, "torch")
    out = ops.moe_forward(x, router, gu, down, top_k=2)
    assert isinstance(out, torch.Tensor) and out.dtype == getattr(torch, dtype) and out.shape == (5, 16)
    numpy_out = ops.moe_forward(*(make(ref.as64(a), dtype) for a in (x, router, gu, down)), top_k=2)
    np.testing.assert_array_equal(ref.as64(out), ref.as64(numpy_out))

    weights, experts = ops.moe_router(x, router, 2)
    assert isinstance(weights, torch.Tensor) and weights.dtype == torch.float32 and experts.dtype == torch.int32
    counts, offsets, order, position = ops.moe_dispatch(experts, 6)
    assert all(isinstance(a, torch.Tensor) and a.dtype == torch.int32 for a in (counts, offsets, order, position))


def test_numpy_bfloat16_in_and_out(rng):
    router, gu, down = block(rng, dtype="bfloat16")
    x = make(rng.standard_normal((4, 16)), "bfloat16")
    out = ops.moe_forward(x, router, gu, down, top_k=3)
    assert isinstance(out, np.ndarray) and out.dtype == ml_dtypes.bfloat16
    gates = [g[:8] for g in ref.as64(gu)]
    ups = [g[8:] for g in ref.as64(gu)]
    _, hint = ops.moe_router(x, router, 3)
    want = ref.moe_forward(x, router, gates, ups, list(ref.as64(down)), 3, hint=np.asarray(hint), tol=ref.TIE["bfloat16"])
    assert_close(out, want, "bfloat16")


def test_torch_parameters_that_require_grad_are_accepted(rng):
    router, gu, down = (torch.nn.Parameter(t) for t in block(rng, kind="torch"))
    x = make(rng.standard_normal((3, 16)), "float32", "torch")
    out = ops.moe_forward(x, router, gu, down, top_k=2)
    want = ops.moe_forward(x.numpy(), router.detach().numpy(), gu.detach().numpy(), down.detach().numpy(), top_k=2)
    np.testing.assert_array_equal(out.numpy(), want)


def test_torch_non_contiguous_views(rng):
    router, gu, down = block(rng, kind="torch")
    x = torch.from_numpy(rng.standard_normal((16, 9)).astype(np.float32)).t()
    assert not x.is_contiguous()
    down_t = down.transpose(1, 2).contiguous().transpose(1, 2)  # column-major experts
    out = ops.moe_forward(x, router, gu, down_t, top_k=2)
    want = ops.moe_forward(x.contiguous(), router, gu, down, top_k=2)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    big = torch.from_numpy(rng.standard_normal((20, 40)).astype(np.float32))
    sliced = big[3::2, 5:21]  # storage offset and a row stride: read in place
    torch.testing.assert_close(ops.moe_forward(sliced, router, gu, down, top_k=2),
                               ops.moe_forward(sliced.contiguous(), router, gu, down, top_k=2), rtol=0, atol=0)


def test_out_is_written_in_place_torch(rng):
    router, gu, down = block(rng, kind="torch")
    x = make(rng.standard_normal((4, 16)), "float32", "torch")
    out = torch.full((4, 16), float("nan"))
    ptr = out.data_ptr()
    result = ops.moe_forward(x, router, gu, down, top_k=2, out=out)
    assert result is out and out.data_ptr() == ptr
    torch.testing.assert_close(out, ops.moe_forward(x, router, gu, down, top_k=2), rtol=0, atol=0)


def test_router_results_adopt_rust_memory():
    """The routing arrays are Rust buffers handed over through DLPack, not numpy copies."""
    x = np.ones((3, 8), np.float32)
    weights, experts = ops.moe_router(x, np.eye(4, 8, dtype=np.float32), 2)
    for a in (weights, experts):
        # numpy did not allocate this memory: it adopted our DLPack export and keeps the
        # managed tensor alive in a "numpy_dltensor" capsule, the array's base.
        assert not a.flags.owndata and "dltensor" in repr(a.base) and a.flags.writeable
    weights[0, 0] = 7.0  # the adopted buffer is ordinary writable memory
    assert weights[0, 0] == 7.0


def test_gil_is_released_while_kernels_run(rng):
    """A Python thread keeps counting while one long moe_forward call runs."""
    t, e, h, i = 1024, 8, 256, 512
    x = rng.standard_normal((t, h)).astype(np.float32)
    router = rng.standard_normal((e, h)).astype(np.float32)
    gu = (rng.standard_normal((e, 2 * i, h)) / 16).astype(np.float32)
    down = (rng.standard_normal((e, h, i)) / 16).astype(np.float32)
    count = [0]
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        time.sleep(0.01)
        before = count[0]
        start = time.perf_counter()
        ops.moe_forward(x, router, gu, down, top_k=8)
        elapsed = time.perf_counter() - start
        during = count[0] - before  # no bytecode ran between the two reads except while the GIL was free
    finally:
        stop.set()
        thread.join()
    assert during > 100, f"the counter advanced {during} times during a {elapsed:.3f} s call"


def test_concurrent_calls_from_python_threads(rng):
    """With the GIL released, calls from several threads run at once and each gets its own answer."""
    router, gu, down = block(rng, e=8, h=64, i=32)
    xs = [rng.standard_normal((40, 64)).astype(np.float32) for _ in range(6)]
    want = [ops.moe_forward(x, router, gu, down, top_k=2) for x in xs]
    got = [None] * len(xs)

    def run(j):
        for _ in range(5):
            got[j] = ops.moe_forward(xs[j], router, gu, down, top_k=2)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(len(xs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_numpy_use_never_imports_torch():
    """torch stays optional: numpy-only calls must not import it (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, rio_rt\n"
        "from rio_rt import ops\n"
        "x = np.ones((3, 8), np.float32)\n"
        "w, e = ops.moe_router(x, np.eye(4, 8, dtype=np.float32), 2)\n"
        "ops.moe_dispatch(e, 4)\n"
        "ops.moe_forward(x, np.eye(4, 8, dtype=np.float32), np.ones((4, 4, 8), np.float32), np.ones((4, 8, 2), np.float32), top_k=2)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
