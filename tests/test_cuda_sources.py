"""Every CUDA kernel in minigrad compiles, checked without a GPU: CuPy writes each ElementwiseKernel's source for
the argument types the code passes it (the same code generation a GPU run uses), and NVRTC compiles that for
compute_90 (H100, H200) with CuPy's headers. Each CudaFunction (a RawKernel) is compiled as it is, and for sm_90
with ptxas's report, whose registers and shared memory must fit the block its caller launches.

This needs CuPy and NVRTC, not a GPU: CI installs cupy-cuda12x and nvidia-cuda-nvrtc-cu12; elsewhere it is
skipped. It reaches into CuPy's code generation (``cupy._core._kernel``), so the CuPy version matters: CI pins it.
"""

import numpy as np
import pytest

from benchmarks.kernel_code import resources
from minigrad import backend, ops, optim
from minigrad import random as mg_random
from minigrad.backend import CudaFunction, CudaKernel
from minigrad.data import loader as data_loader
from minigrad.fast import gemm, plan
from minigrad.fast.plan import COLUMN_THREADS, LOSS_THREADS, THREADS


def nvrtc_or_skip():
    if backend.cupy is None:
        pytest.skip("CuPy is not installed (CI installs cupy-cuda12x): the CUDA sources are not compiled")
    from cupy_backends.cuda.libs import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as error:  # noqa: BLE001 - the library is missing or unusable
        pytest.skip(f"NVRTC is not usable ({error}; pip install nvidia-cuda-nvrtc-cu12)")
    return nvrtc


def compile_cuda(source, name, options=("--gpu-architecture=compute_90",), ptx=False):
    """NVRTC's log for ``source`` compiled for compute_90 (or with ``options``), or with ``ptx`` its PTX; raises
    AssertionError with the log when it fails."""
    nvrtc = nvrtc_or_skip()
    from cupy._core import core

    options = (*core.assemble_cupy_compiler_options(()), *options)
    program = nvrtc.createProgram(source, f"{name}.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            raise AssertionError(f"{name} does not compile:\n{nvrtc.getProgramLog(program)}") from None
        if ptx:
            code = nvrtc.getPTX(program)
            return code.decode() if isinstance(code, bytes) else code
        return nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)


def array(dtype, ndim=1, contiguous=True):
    """CuPy's description of an array argument (raw arrays keep their dimensions; others are flattened)."""
    from cupy._core import _kernel

    return _kernel._ArgInfo(1, backend.cupy.ndarray, np.dtype(dtype), ndim, contiguous, True)


def scalar(dtype):
    from cupy._core import _kernel, _scalar

    return _kernel._ArgInfo(3, _scalar.CScalar, np.dtype(dtype), 0, True, True)


def elementwise_source(kernel, arguments):
    """The CUDA source CuPy makes of ``kernel`` (a CudaKernel) called with ``arguments`` (from array/scalar)."""
    from cupy._core import _carray, _kernel, core

    in_params, out_params, operation, name = kernel.source
    cupy_kernel = backend.cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=kernel.preamble)
    types = [info.dtype.type if info.arg_kind == 1 else None for info in arguments]
    _, _, type_map = cupy_kernel._decide_params_type(tuple(types[: cupy_kernel.nin]), tuple(types[cupy_kernel.nin :]))
    indexer = _kernel._ArgInfo(2, _carray.Indexer, None, 1, True, True)
    code = _kernel._get_elementwise_kernel_code(
        (*arguments, indexer), type_map, cupy_kernel.params, operation, name, kernel.preamble
    )
    return "".join(f"#include <{header}>\n" for header in core._cupy_header_list) + code


# Each kernel with the argument types its caller passes (T: float32 for training, float64 in the tests; the
# kernels without T ignore it).
CALLS = {
    "ops.ReLU.backward_gpu": lambda T: [array(T), array(T), array(T)],
    "ops.Dropout.forward_gpu": lambda T: [
        array(T),
        array("u8"),
        array("u8"),
        scalar("u4"),
        scalar(T),
        array(T),
        array(T),
    ],
    "ops.SoftmaxCrossEntropy.forward_gpu": lambda T: [array(T, 2), array("i8"), scalar("i8"), array(T), array(T, 2)],
    "ops.SoftmaxCrossEntropy.backward_gpu": lambda T: [
        array(T),
        array("i8"),
        scalar("i8"),
        array(T, contiguous=False),
        scalar(T),
        array(T),
    ],
    "optim.SGD.plain_step_gpu": lambda T: [array(T), scalar(T), scalar(T), array(T)],
    "random._philox_words_gpu": lambda T: [array("u8"), array("u8"), array("u4")],
    "random._philox_advance_gpu": lambda T: [scalar("u8"), array("u8")],
    "loader.BatchCursor.advance_gpu": lambda T: [scalar("i8"), array("i8")],
}


def declared(kind):
    """Every ``kind`` (CudaKernel or CudaFunction) in the modules that have them: {'module.Name': kernel}."""
    return backend.declared_cuda(kind, [backend, data_loader, gemm, plan, ops, optim, mg_random])


def declared_kernels():
    return declared(CudaKernel)


def test_every_cuda_kernel_has_a_compile_case():
    assert set(declared_kernels()) == set(CALLS)


def generic(name):
    """Whether the kernel's types include the placeholder T (then it is compiled for float32 and float64)."""
    in_params, out_params = declared_kernels()[name].source[:2]
    return "T" in f"{in_params} {out_params}".replace(",", " ").split()


@pytest.mark.parametrize(
    "name, dtype", [(name, dtype) for name in sorted(CALLS) for dtype in (("f4", "f8") if generic(name) else ("f4",))]
)
def test_the_kernel_compiles_for_the_types_it_is_called_with(name, dtype):
    nvrtc_or_skip()
    kernel = declared_kernels()[name]
    compile_cuda(elementwise_source(kernel, CALLS[name](dtype)), kernel.source[3])


FUNCTIONS = {  # every CudaFunction, each built for the host and checked against NumPy in the test named
    "gemm.GEMM": "test_graphs.py::test_the_graphs_gemm_source_multiplies_correctly_when_emulated_on_the_host",
    "loader.BatchCursor.gather_gpu": "test_step_kernels.py::test_the_gather_kernel_gives_the_cursors_batch_and_...",
    "plan.Plan.ACTIVATE": "test_step_kernels.py::test_the_activate_kernel_equals_the_numpy_passes",
    "plan.ACTIVATED_PRODUCT": "test_step_kernels.py::test_the_activated_product_equals_the_product_then_the_...",
    "plan.GATHERED_PRODUCT": "test_step_kernels.py::test_the_gathered_product_equals_the_gather_then_the_...",
    "plan.MASKED_PRODUCT": "test_step_kernels.py::test_the_backward_products_equal_the_product_then_backward_...",
    "plan.SGD_PRODUCT": "test_step_kernels.py::test_the_backward_products_equal_the_product_then_backward_...",
    "plan.LOSS_PRODUCT": "test_step_kernels.py::test_the_loss_product_equals_the_product_then_the_loss_kernel",
    "plan.Plan.LOSS": "test_step_kernels.py::test_the_loss_kernel_equals_the_numpy_loss_and_gradient",
    "plan.PlannedStep.BACKWARD_MASK": "test_step_kernels.py::test_the_backward_mask_kernel_equals_the_numpy_passes",
    "plan.PlannedStep.UPDATE": "test_step_kernels.py::test_the_update_kernel_equals_sgds_passes",
}


def test_every_cuda_function_has_a_compile_case():
    assert set(declared(CudaFunction)) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_the_cuda_function_compiles(name):
    function = declared(CudaFunction)[name]
    compile_cuda(function.source, function.name)


# Each CudaFunction's threads per block, as its caller launches it
LAUNCHED_THREADS = {
    "gemm.GEMM": 16 * 16 * gemm.GROUPS,
    "loader.BatchCursor.gather_gpu": data_loader.GATHER_THREADS,
    "plan.Plan.ACTIVATE": THREADS,
    "plan.ACTIVATED_PRODUCT": 16 * 16 * gemm.GROUPS,
    "plan.GATHERED_PRODUCT": 16 * 16 * gemm.GROUPS,
    "plan.MASKED_PRODUCT": 16 * 16 * gemm.GROUPS,
    "plan.SGD_PRODUCT": 16 * 16 * gemm.GROUPS,
    "plan.LOSS_PRODUCT": 16 * 16 * gemm.GROUPS,
    "plan.Plan.LOSS": LOSS_THREADS,
    "plan.PlannedStep.BACKWARD_MASK": COLUMN_THREADS,
    "plan.PlannedStep.UPDATE": THREADS,
}
HOPPER = {"registers per block": 65536, "static shared memory per block": 48 * 1024, "threads per block": 1024}


def launch_resources(log):
    """(registers per thread, static shared bytes) from ptxas's -v report (benchmarks.kernel_code reads it)."""
    used = resources(log)
    assert used["registers"] > 0, f"no register count in the log:\n{log}"
    return used["registers"], used["shared"]


def test_every_cuda_function_has_its_launch_size():
    assert set(LAUNCHED_THREADS) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_the_cuda_function_fits_its_launch_on_hopper(name):
    """A block needs its threads' registers and its shared memory on one multiprocessor, or the launch fails
    ("too many resources requested"), which only a GPU would show: ptxas says what the kernel uses on sm_90."""
    function = declared(CudaFunction)[name]
    log = compile_cuda(function.source, function.name, ("--gpu-architecture=sm_90", "--ptxas-options=-v"))
    registers, shared = launch_resources(log)
    threads = LAUNCHED_THREADS[name]
    allocated = -(-registers // 8) * 8  # a thread's registers are allocated in units of 8
    assert threads <= HOPPER["threads per block"]
    assert allocated * threads <= HOPPER["registers per block"], f"{registers} registers x {threads} threads"
    assert shared <= HOPPER["static shared memory per block"], f"{shared} bytes of shared memory"


@pytest.mark.parametrize("shape", gemm.TILE_SHAPES, ids=gemm.shape_name)
def test_each_gemm_tile_shape_compiles_and_fits_its_launch_on_hopper(shape):
    """The tile shapes benchmarks.gemm_speed times on a GPU: each compiles, its block of side x side x groups
    threads fits a multiprocessor, and its shared memory is what gemm_source's check of a shape counts; the
    same for the step's products with work of their own in that shape (fast.plan.fused_products: the one that
    also sums A's rows has their partial sums too, the one that takes the loss the loss's: LOSS_SHARED_BYTES)."""
    groups, _, _, side = shape
    threads = side * side * groups
    assert threads <= HOPPER["threads per block"]
    for function in (gemm.tile_kernel(*shape), *plan.fused_products(shape)):
        log = compile_cuda(function.source, function.name, ("--gpu-architecture=sm_90", "--ptxas-options=-v"))
        registers, shared = launch_resources(log)
        assert -(-registers // 8) * 8 * threads <= HOPPER["registers per block"], (function.name, registers)
        row_sums = function.name == "minigrad_sgemm_sgd"
        loss = plan.LOSS_SHARED_BYTES if function.name == "minigrad_sgemm_loss" else 0
        expected = gemm.shared_bytes(*shape, row_sums=row_sums) + loss
        assert shared == expected <= HOPPER["static shared memory per block"], function.name


def test_the_gemm_reads_the_next_slice_before_its_barrier():
    """The tile kernel's loop reads its next slice before the barrier that precedes its products, with ordinary
    loads, which no barrier lets the compiler move past: read-only ones (ld.global.nc, what const __restrict__
    operands give) were scheduled after most of the products on sm_90, leaving the read's latency unhidden."""
    ptx = compile_cuda(gemm.GEMM.source, gemm.GEMM.name, ptx=True)
    assert "ld.global.nc" not in ptx
    loop = ptx[ptx.index("st.shared.f32") :]  # the first store of a slice to shared memory opens the loop
    before_barrier = loop[: loop.index("bar.sync")]
    loads = 2 * gemm.PER_THREAD * gemm.SLICE // gemm.SIDE  # the next slice's elements of A and of B a thread reads
    assert before_barrier.count("ld.global.f32") == loads, before_barrier


def test_the_launch_check_reads_ptxas_report():
    """The check can fail: a kernel whose threads each hold a large array in registers uses more than 64."""
    source = r"""
extern "C" __global__ void minigrad_heavy(float* out) {
    float r[96];
    #pragma unroll
    for (int i = 0; i < 96; ++i) r[i] = out[i * blockDim.x + threadIdx.x] * 1.5f;
    float s = 0.0f;
    #pragma unroll
    for (int i = 0; i < 96; ++i) s += r[i] * r[95 - i];
    out[threadIdx.x] = s;
}
"""
    log = compile_cuda(source, "minigrad_heavy", ("--gpu-architecture=sm_90", "--ptxas-options=-v"))
    registers, shared = launch_resources(log)
    assert registers * 1024 > HOPPER["registers per block"] and shared == 0


def test_a_kernel_that_does_not_compile_is_caught():
    """The check can fail: an undefined function, with NVRTC's message."""
    nvrtc_or_skip()
    broken = CudaKernel("T x", "T y", "y = no_such_function(x)", "minigrad_broken")
    with pytest.raises(AssertionError, match='identifier "no_such_function" is undefined'):
        compile_cuda(elementwise_source(broken, [array("f4"), array("f4")]), "minigrad_broken")
