"""What each of minigrad's CUDA functions compiles to for a GPU, read without one: registers, shared memory and
spills (ptxas's report through NVRTC) and, where ptxas and nvdisasm are found, the machine code's memory,
arithmetic and barrier instructions counted.

    python -m benchmarks.kernel_code [--arch sm_90] [--sass NAME] [--tile-shapes]

Reading the machine code costs no device time and answers what timing cannot say alone: whether the reads of
a loop go out together or one after another (each waiting for the last write), whether a product was fused
into a sum (an FFMA where the CPU rounds twice), whether a block's registers fit. ``--sass minigrad_sgemm``
prints one kernel's SASS; ``--tile-shapes`` adds the GEMM in each of ``fast.gemm.TILE_SHAPES`` (named as
``benchmarks.gemm_speed`` names them: "minigrad_sgemm 4x16 2x2"). Needs CuPy and NVRTC (``pip install
cupy-cuda12x nvidia-cuda-nvrtc-cu12``); the instruction counts also need ptxas and nvdisasm (on the PATH, or
``pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvdisasm``, whose binaries are found in the installed
packages).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from minigrad import backend, cli

# The instructions counted: global reads and writes, shared reads and writes, barriers, float arithmetic
DISASSEMBLERS = "pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvdisasm"
COUNTED = ("LDG", "STG", "LDS", "STS", "BAR", "FFMA", "FMUL", "FADD", "MUFU")


def cuda_functions():
    """{'module.Name': CudaFunction} for every CudaFunction of the library."""
    from minigrad.data import loader
    from minigrad.fast import gemm, plan

    return backend.declared_cuda(backend.CudaFunction, [loader, gemm, plan])


def labelled_functions(tile_shapes=False):
    """{label: CudaFunction}: each CudaFunction by its kernel's name, and with ``tile_shapes`` the GEMM and the
    step's products with work of their own (``fast.plan.fused_products``) in each other tile shape, labelled by
    the shape."""
    from minigrad.fast import gemm, plan

    functions = {function.name: function for function in cuda_functions().values()}
    if tile_shapes:
        for kind, shape in gemm.TILE_NAMES.items():
            if kind != "tile":
                for function in (gemm.tile_kernel(*shape), *plan.fused_products(shape)):
                    functions[f"{function.name} {kind.removeprefix('tile ')}"] = function
    return functions


def tool(name):
    """The path of a CUDA binary: on the PATH, else in an installed NVIDIA package (nvidia/*/bin), else None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sys.path:
        matches = sorted(glob.glob(os.path.join(folder, "nvidia", "*", "bin", name)))
        if matches:
            return matches[-1]
    return None


def compile_function(function, arch):
    """(NVRTC's log with ptxas's -v report, the PTX) of a CudaFunction compiled for ``arch`` (sm_XX)."""
    from cupy._core import core
    from cupy_backends.cuda.libs import nvrtc

    options = (*core.assemble_cupy_compiler_options(()), f"--gpu-architecture={arch}", "--ptxas-options=-v")
    program = nvrtc.createProgram(function.source, f"{function.name}.cu", (), ())
    try:
        nvrtc.compileProgram(program, options)
        log = nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)
    ptx_program = nvrtc.createProgram(function.source, f"{function.name}.cu", (), ())
    try:
        nvrtc.compileProgram(ptx_program, (*options[:-2], f"--gpu-architecture=compute_{arch.split('_')[1]}"))
        ptx = nvrtc.getPTX(ptx_program)
    finally:
        nvrtc.destroyProgram(ptx_program)
    return log, ptx.decode() if isinstance(ptx, bytes) else ptx


def resources(log):
    """{registers, shared bytes, spill bytes (stores + loads)} from ptxas's -v report."""

    def number(pattern):
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    spills = number(r"(\d+) bytes spill stores") + number(r"(\d+) bytes spill loads")
    return {"registers": number(r"Used (\d+) registers"), "shared": number(r"(\d+) bytes smem"), "spills": spills}


def sass(ptx, arch, ptxas, nvdisasm):
    """The machine code of ``ptx``, assembled by ptxas for ``arch`` and disassembled by nvdisasm."""
    with tempfile.TemporaryDirectory() as folder:
        source, cubin = os.path.join(folder, "kernel.ptx"), os.path.join(folder, "kernel.cubin")
        with open(source, "w") as file:
            file.write(ptx)
        subprocess.run([ptxas, f"-arch={arch}", source, "-o", cubin], check=True, capture_output=True, text=True)
        done = subprocess.run([nvdisasm, cubin], check=True, capture_output=True, text=True)
    return done.stdout


def instruction_counts(code):
    """How many of each COUNTED instruction the SASS holds (predicated ones too)."""
    opcodes = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z][A-Z0-9]*)", code)
    return {name: opcodes.count(name) for name in COUNTED}


def run(args):
    functions = labelled_functions(args.tile_shapes)
    ptxas, nvdisasm = tool("ptxas"), tool("nvdisasm")
    disassemble = ptxas is not None and nvdisasm is not None
    width = max(32, *map(len, functions))
    header = f"{'kernel':{width}s} {'registers':>9s} {'shared B':>8s} {'spills B':>8s}"
    print(header + ("".join(f" {name:>5s}" for name in COUNTED) if disassemble else ""))
    report = {}
    for label, function in functions.items():
        log, ptx = compile_function(function, args.arch)
        row = resources(log)
        line = f"{label:{width}s} {row['registers']:9d} {row['shared']:8d} {row['spills']:8d}"
        if disassemble:
            code = sass(ptx, args.arch, ptxas, nvdisasm)
            row["instructions"] = instruction_counts(code)
            line += "".join(f" {row['instructions'][name]:5d}" for name in COUNTED)
            if args.sass == label:
                print(code)
        report[label] = row
        print(line)
    if not disassemble:
        print(f"no ptxas and nvdisasm here: the instruction counts are left out ({DISASSEMBLERS})")
    return report


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m benchmarks.kernel_code", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_90", help="the GPU to compile for (default: sm_90, H100 and H200)")
    parser.add_argument("--sass", default=None, metavar="NAME", help="also print this kernel's machine code")
    parser.add_argument("--tile-shapes", action="store_true", help="also the GEMM in each of fast.gemm.TILE_SHAPES")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"sm_\d{2,3}a?", args.arch):
        parser.error(f"argument --arch: expected sm_ and a compute capability (sm_90), got {args.arch!r}")
    if backend.cupy is None:
        parser.error("this tool needs CuPy and NVRTC (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    names = sorted(labelled_functions(args.tile_shapes))
    if args.sass is not None and args.sass not in names:
        known = ", ".join(names)
        parser.error(f"argument --sass: no CUDA function {args.sass!r} (with --tile-shapes: its shapes too); {known}")
    if args.sass is not None and (tool("ptxas") is None or tool("nvdisasm") is None):
        parser.error(f"argument --sass: needs ptxas and nvdisasm, not found here ({DISASSEMBLERS})")
    return cli.exit_status(lambda: run(args), (OSError, subprocess.CalledProcessError))


if __name__ == "__main__":
    sys.exit(main())
