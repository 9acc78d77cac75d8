"""fast.cublas: cuBLAS's sgemm called through ctypes so that a graph can record it. On every machine: the
row-major to column-major translation of each product the planned step makes, checked by a NumPy model of
cublasSgemm's column-major contract. On a GPU: against CuPy's matmul, eagerly and recorded in a CUDA graph."""

import ctypes

import numpy as np
import pytest

import minigrad as mg
from minigrad.fast.cublas import OP_N, column_major_arguments

needs_cuda = pytest.mark.skipif(not mg.cuda_available(), reason="no CUDA: CuPy is not installed or finds no GPU")


def column_major(flat, transposed, rows, columns, ld):
    """op(X) (rows x columns) of the column-major X in ``flat`` with leading dimension ``ld``, as cuBLAS reads it."""
    stored = (columns, rows) if transposed else (rows, columns)
    assert ld >= stored[0] and stored[0] - 1 + (stored[1] - 1) * ld < flat.size, "cuBLAS would read past the matrix"
    x = np.lib.stride_tricks.as_strided(flat, stored, (flat.itemsize, ld * flat.itemsize), writeable=False)
    return x.T if transposed else x


def sgemm_model(transa, transb, m, n, k, a, lda, b, ldb, ldc):
    """cublasSgemm with alpha 1, beta 0, in NumPy: C (m x n, column-major, ld ldc) = op(A) op(B), flat."""
    c = np.zeros(ldc * n, np.float32)
    column_major(c, False, m, n, ldc)  # (checks that C fits)
    product = column_major(a, transa != OP_N, m, k, lda) @ column_major(b, transb != OP_N, k, n, ldb)
    np.lib.stride_tricks.as_strided(c, (m, n), (4, ldc * 4))[...] = product
    return c


def strides(view):
    return tuple(s // view.itemsize for s in view.strides)


@pytest.mark.parametrize("padding", [0, 5])  # 5: each matrix a view of a wider one, its leading dimension larger
@pytest.mark.parametrize("batch, inputs, outputs", [(37, 29, 23), (256, 784, 256), (256, 256, 10)])
def test_each_product_of_the_planned_step_maps_onto_cublass_column_major_call(batch, inputs, outputs, padding):
    rng = np.random.default_rng(0)
    x, w, gy = (
        rng.standard_normal((rows, columns + padding)).astype(np.float32)[:, :columns]
        for rows, columns in ((batch, inputs), (outputs, inputs), (batch, outputs))
    )
    for a, b in ((x, w.T), (gy, w), (gy.T, x)):  # x W^T, dL/dx = gy W, dL/dW = gy^T x
        transa, transb, m, n, k, lda, ldb, ldc = column_major_arguments(a.shape, strides(a), b.shape, strides(b))
        flat_b = (b if b.base is None else b.base).ravel()
        flat_a = (a if a.base is None else a.base).ravel()
        c = sgemm_model(transa, transb, m, n, k, flat_b, lda, flat_a, ldb, ldc)
        np.testing.assert_allclose(c.reshape(a.shape[0], b.shape[1]), a @ b, rtol=1e-5, atol=1e-4)


def test_a_view_without_a_unit_stride_is_refused():
    x = np.zeros((8, 8), np.float32)[::2, ::2]
    with pytest.raises(ValueError, match="unit stride"):
        column_major_arguments(x.shape, strides(x), (4, 3), (3, 1))
    with pytest.raises(ValueError, match="cannot multiply"):
        column_major_arguments((4, 3), (3, 1), (4, 3), (3, 1))


class FakeCublas:
    """The four cuBLAS calls ``Cublas`` makes, on host memory (NumPy arrays' addresses): sgemm by the model of
    its column-major contract above; the calls are logged in order."""

    def __init__(self):
        self.calls = []

        def create(handle):
            self.calls.append("create")
            return 0

        def set_stream(handle, stream):
            self.calls.append(("stream", stream.value))
            return 0

        def set_workspace(handle, workspace, size):
            self.calls.append(("workspace", workspace.value, size.value))
            return 0

        def sgemm(handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
            self.calls.append("sgemm")
            (rows_a, columns_a), (rows_b, columns_b) = (
                ((m, k) if transa == OP_N else (k, m)),
                ((k, n) if transb == OP_N else (n, k)),
            )
            flat_a, flat_b = memory(a, lda * (columns_a - 1) + rows_a), memory(b, ldb * (columns_b - 1) + rows_b)
            out = memory(c, ldc * (n - 1) + m)
            product = sgemm_model(transa, transb, m, n, k, flat_a, lda, flat_b, ldb, ldc)[: out.size]
            beta = beta._obj.value  # cuBLAS does not read C when beta is 0
            out[...] = alpha._obj.value * product + (beta * out if beta else 0)
            return 0

        self.cublasCreate_v2, self.cublasSetStream_v2 = create, set_stream
        self.cublasSetWorkspace_v2, self.cublasSgemm_v2 = set_workspace, sgemm


def memory(pointer, count):
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(pointer.value))


def test_cublas_gemm_calls_cublas_as_capture_needs_and_multiplies_the_right_operands(monkeypatch):
    """Cublas.gemm on a stand-in library: at every call the stream, then the workspace (setting the stream
    forgets it), then sgemm; and the operands passed so that the result is a @ b for each product of the step."""
    from types import SimpleNamespace

    from minigrad import backend
    from minigrad.fast import cublas

    fake = FakeCublas()
    monkeypatch.setattr(cublas, "_library", lambda: fake)
    monkeypatch.setattr(backend, "cupy", SimpleNamespace(empty=np.empty))
    stream = SimpleNamespace(ptr=0xABC)
    monkeypatch.setattr(backend, "current_stream", lambda: stream)
    blas = cublas.Cublas()
    rng = np.random.default_rng(0)
    x, w, gy = (
        rng.standard_normal((rows, columns + 3)).astype(np.float32)[:, :columns]
        for rows, columns in ((37, 29), (23, 29), (37, 23))
    )
    for a, b in ((x, w.T), (gy, w), (gy.T, x)):
        fake.calls.clear()
        out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
        assert blas.gemm(a, b, out) is out
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
        workspace = ("workspace", blas.workspaces[0xABC].ctypes.data, cublas.WORKSPACE_BYTES)
        assert fake.calls == [("stream", 0xABC), workspace, "sgemm"]
    with pytest.raises(ValueError, match="C-contiguous"):
        blas.gemm(x, w.T, np.empty((23, 37), np.float32).T)
    # another stream's products (which may run at the same time as the first's) get a workspace of their own
    first = blas.workspaces[0xABC]
    stream = SimpleNamespace(ptr=0xDEF)
    fake.calls.clear()
    blas.gemm(x, w.T, np.empty((37, 23), np.float32))
    second = blas.workspaces[0xDEF]
    assert not np.shares_memory(first, second) and second.nbytes == cublas.WORKSPACE_BYTES
    assert fake.calls == [("stream", 0xDEF), ("workspace", second.ctypes.data, cublas.WORKSPACE_BYTES), "sgemm"]
    assert blas.workspaces == {0xABC: first, 0xDEF: second}


@needs_cuda
def test_cuda_cublas_products_equal_cupys_eagerly_and_replayed_from_a_graph():
    import cupy

    from minigrad.fast.cublas import Cublas

    blas = Cublas()
    rng = np.random.default_rng(0)
    x, w, gy = (cupy.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((256, 784), (256, 784), (256, 256)))
    w = w[:256]
    cases = ((x, w.T), (gy, w), (gy.T, x))
    outs = [cupy.full((a.shape[0], b.shape[1]), np.nan, np.float32) for a, b in cases]
    for (a, b), out in zip(cases, outs):
        np.testing.assert_allclose(cupy.asnumpy(blas.gemm(a, b, out)), cupy.asnumpy(a @ b), rtol=1e-4, atol=1e-4)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        for (a, b), out in zip(cases, outs):  # warm up on the capture stream
            blas.gemm(a, b, out)
        stream.begin_capture()
        for (a, b), out in zip(cases, outs):
            blas.gemm(a, b, out)
        graph = stream.end_capture()
        for out in outs:
            out.fill(np.nan)
        graph.launch()
    stream.synchronize()
    for (a, b), out in zip(cases, outs):
        np.testing.assert_allclose(cupy.asnumpy(out), cupy.asnumpy(a @ b), rtol=1e-4, atol=1e-4)
