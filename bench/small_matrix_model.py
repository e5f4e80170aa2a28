"""A performance model, on paper, of the small-matrix svt and rpca CUDA kernels in both designs
(PGSL_SMALL_MATRIX_KERNEL=thread / group) on an H100 SXM: occupancy from ptxas's registers and
the shared memory each launch asks for, global (or L1/L2) traffic, FLOPs, and the time bound
that follows. No GPU has run these kernels; scripts/gpu_check.sh measures both designs the day
one is lent.

    python -m bench.small_matrix_model            # print the section
    python -m bench.small_matrix_model --write    # and put it into bench/RESULTS.md

The counts are per matrix and per rpca iteration (svt: per call), for a matrix whose every
Jacobi pair rotates (an upper bound: late sweeps rotate few pairs).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

# ptxas -v, sm_90, nvcc 13.0 (-O3 -std=c++20 -lineinfo --expt-relaxed-constexpr): registers and
# stack bytes per thread. tests/test_build.py checks the group kernels' registers and stack.
PTXAS = {
    ("thread", "svt", "float32"): (80, 256),
    ("thread", "svt", "float64"): (96, 512),
    ("thread", "rpca", "float32"): (128, 256),
    ("thread", "rpca", "float64"): (164, 512),
    ("group", "svt", "float32"): (64, 0),
    ("group", "svt", "float64"): (116, 0),
    ("group", "rpca", "float32"): (64, 0),
    ("group", "rpca", "float64"): (128, 0),
}

# H100 SXM5 (sm_90).
SMS = 132
CLOCK_HZ = 1.755e9  # the boost clock the 989 TFLOP/s dense-fp16 figure assumes (max 1.98 GHz)
MAX_WARPS, MAX_BLOCKS, REGISTERS = 64, 32, 65536
SHARED_PER_SM, RESERVED_PER_BLOCK, MAX_SHARED_PER_BLOCK_DEFAULT = 233472, 1024, 48 * 1024
L1_BYTES = 256 * 1024  # per SM, L1 and shared memory together
HBM_BYTES_PER_S = 3.35e12
L2_BYTES_PER_S = 5.5e12  # ~ measured by microbenchmarks (Luo et al. 2024); NVIDIA gives no figure
ISSUE_PER_CYCLE = 4  # warp instructions per SM per cycle (4 schedulers)
SHARED_LATENCY, L1_LATENCY, SHUFFLE_LATENCY = 30, 35, 25  # cycles
# Cycles of dependent latency in one rotation's scalar maths (jacobi_rotation: two IEEE sqrt,
# two divisions), and its warp instructions; float64 issues at half rate on an H100's FP64 units.
ROTATION_LATENCY = {"float32": 150, "float64": 250}
ROTATION_INSTRUCTIONS = 45
ARITHMETIC_ISSUE_COST = {"float32": 1.0, "float64": 2.0}

# Sweeps per SVT: a cold start (svt) and rpca's warm start (rpca.h: 5.5 on activation maps).
SWEEPS_COLD, SWEEPS_WARM = 7.0, 5.5
# Mean iterations of a PGSL step's rpca (bench/RESULTS.md, train-step: 47, alternating, float32).
PGSL_ITERATIONS = 47

CASES = ((8192, 14), (2048, 28), (64, 64))
STATE_ARRAYS = 5  # the alternating method's iterates (rpca_kernel.cu, rpca_state_arrays)
GROUP_LANES, GROUPS_PER_BLOCK, THREAD_BLOCK = 32, 4, 64


@dataclass
class Row:
    op: str
    n: int
    batch: int
    dtype: str
    design: str
    registers: int
    stack: int
    shared_block: int
    threads_block: int
    where: str
    warps_sm: int
    occupancy_warps: int
    global_bytes: float
    flops: float
    time_s: float
    bound: str


def resident_warps(warps_per_block: int, registers: int, shared_block: int) -> int:
    """The CUDA occupancy calculator's formula (as test_kernels_emulated.cpp's h100_resident_warps)."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    by_registers = REGISTERS // (per_warp * warps_per_block)
    by_shared = SHARED_PER_SM // (shared_block + RESERVED_PER_BLOCK)
    return min(by_registers, by_shared, MAX_WARPS // warps_per_block, MAX_BLOCKS) * warps_per_block


def group_layout(n: int, size: int, state_arrays: int) -> tuple[int, bool]:
    """(matrices per block, in shared memory): small_matrix_group.cuh's group_layout."""
    ld = n | 1
    elements = 2 * ld * n + state_arrays * n * n
    fit = MAX_SHARED_PER_BLOCK_DEFAULT // (elements * size)
    return (GROUPS_PER_BLOCK if fit >= GROUPS_PER_BLOCK or fit == 0 else fit), fit >= 1


def element_accesses(op: str, n: int, sweeps: float) -> float:
    """Loads and stores of matrix elements per matrix-iteration (both designs do the same ones)."""
    pairs = n * (n - 1) / 2
    sweep = pairs * (2 * n + 4 * n + 4 * n)  # dot products; rotations of A's and V's columns
    shrink, reconstruct = 3 * n * n, 2 * n ** 3
    if op == "svt":
        return 4 * n * n + n * n + sweeps * sweep + shrink + reconstruct + n * n
    multiply = 2 * n ** 3 + n * n
    return 6 * n * n + multiply + sweeps * sweep + shrink + reconstruct + 5 * n * n


def flops(op: str, n: int, sweeps: float) -> float:
    pairs = n * (n - 1) / 2
    sweep = pairs * (6 * n + 6 * n + 6 * n + 30)  # dots, rotate A, rotate V, the rotation
    svd = sweeps * sweep + 3 * n * n + 2 * n ** 3
    return svd if op == "svt" else svd + 2 * n ** 3 + 12 * n * n


def group_round(n: int, dtype: str) -> tuple[float, float]:
    """(warp instructions, dependent latency in cycles) of one round-robin round."""
    pairs = (n + (n & 1)) // 2
    width = GROUP_LANES
    while width > 1 and width * pairs > GROUP_LANES:
        width //= 2
    rows, vrows = math.ceil(n / width), math.ceil(n / width)
    a = ARITHMETIC_ISSUE_COST[dtype]
    dots = rows * (2 + 3 * a)
    reduce = 3 * math.log2(width) * (1 + a) if width > 1 else 0
    rotate = (rows + vrows) * (4 + 4 * a)
    instructions = dots + reduce + ROTATION_INSTRUCTIONS * a + rotate + 30  # + indices, loop, syncwarp
    latency = (SHARED_LATENCY + rows * 4 + math.log2(max(width, 1)) * SHUFFLE_LATENCY + ROTATION_LATENCY[dtype]
               + SHARED_LATENCY + rows * 4 + 10)
    return instructions, latency


def group_iteration(op: str, n: int, dtype: str, sweeps: float) -> tuple[float, float]:
    """(warp instructions, latency) of a matrix-iteration in the group design."""
    instructions, latency = group_round(n, dtype)
    rounds = n + (n & 1) - 1
    a = ARITHMETIC_ISSUE_COST[dtype]
    per_lane = math.ceil(n * n / GROUP_LANES)
    # Elementwise passes, A V and (A V^T): per element a lane's N-term sums.
    dense = per_lane * (n * (2 + a) + 20) * (2 if op == "rpca" else 1)
    shrink = math.ceil(n / GROUP_LANES) * n * (2 + 2 * a) * 2
    total = sweeps * (rounds * instructions + 10) + dense + shrink + 200
    chain = sweeps * (rounds * latency + 40) + (dense + shrink) * 1.5 + 500
    return total, chain


def model(op: str, n: int, batch: int, dtype: str, design: str) -> Row:
    size = 4 if dtype == "float32" else 8
    registers, stack = PTXAS[(design, op, dtype)]
    sweeps = SWEEPS_COLD if op == "svt" else SWEEPS_WARM
    accesses = element_accesses(op, n, sweeps)
    f = flops(op, n, sweeps)
    if design == "thread":
        warps_block, shared_block, where = THREAD_BLOCK // 32, 0, "global workspace (per thread)"
        occupancy = resident_warps(warps_block, registers, 0)
        blocks = math.ceil(batch / THREAD_BLOCK)
        sms = min(SMS, blocks)
        warps_sm = min(occupancy, math.ceil(blocks / sms) * warps_block)
        # Neighbouring threads are a workspace apart: a warp's access is 32 sectors of 32 bytes,
        # served by L1 at about one line per cycle, or by L2 when the SM's matrices overflow L1.
        workspace = (n * n + n * n) if op == "svt" else (8 * n * n + n * n + n)
        resident_bytes = min(batch, sms * warps_sm * 32) / sms * workspace * size
        matrices_sm = math.ceil(batch / sms)
        sector_bytes = matrices_sm * accesses * 32
        l1_cycles = matrices_sm / 32 * accesses * 32
        if resident_bytes > L1_BYTES:
            t = max(sector_bytes / (L2_BYTES_PER_S / SMS), l1_cycles / CLOCK_HZ)
            bound = "L2 sectors (uncoalesced)"
        else:
            t = l1_cycles / CLOCK_HZ
            bound = "L1 wavefronts (uncoalesced)"
        global_bytes = accesses * 32  # per matrix-iteration, as sectors
        threads_block = THREAD_BLOCK
    else:
        per_block, in_shared = group_layout(n, size, STATE_ARRAYS if op == "rpca" else 0)
        elements = 2 * (n | 1) * n + (STATE_ARRAYS if op == "rpca" else 0) * n * n
        shared_block = per_block * elements * size if in_shared else 0
        where = "shared memory" if in_shared else "global workspace (per warp, coalesced)"
        warps_block = per_block
        occupancy = resident_warps(warps_block, registers, shared_block)
        blocks = math.ceil(batch / per_block)
        sms = min(SMS, blocks)
        warps_sm = min(occupancy, math.ceil(blocks / sms) * warps_block)
        instructions, chain = group_iteration(op, n, dtype, sweeps)
        matrices_sm = math.ceil(batch / sms)
        issue = matrices_sm * instructions / ISSUE_PER_CYCLE / CLOCK_HZ
        latency = math.ceil(matrices_sm / warps_sm) * chain / CLOCK_HZ
        # Global traffic: the input once and the outputs once (rpca: over all its iterations,
        # so per iteration 1 / PGSL_ITERATIONS of it), or the workspace when not in shared memory.
        io = (3 if op == "svt" else 4) * n * n * size / (1 if op == "svt" else PGSL_ITERATIONS)
        global_bytes = io + (0 if in_shared else accesses * size)
        bandwidth = batch * global_bytes / (HBM_BYTES_PER_S if in_shared else L2_BYTES_PER_S)
        t = max(issue, latency, bandwidth)
        bound = ("issue" if t == issue else "latency" if t == latency else
                 "bandwidth (HBM)" if in_shared else "bandwidth (L2)")
        threads_block = per_block * 32
    return Row(op, n, batch, dtype, design, registers, stack, shared_block, threads_block, where, warps_sm,
               occupancy, global_bytes, f, t, bound)


def _time(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def section() -> str:
    rows = [model(op, n, batch, dtype, design) for op in ("svt", "rpca") for batch, n in CASES
            for dtype in ("float32", "float64") for design in ("thread", "group")]
    lines = [
        "<!-- bench:small-matrix-model -->",
        "## Small-matrix kernels: the model (no GPU has confirmed it)",
        "",
        "Written by `python -m bench.small_matrix_model --write` (the formulas and constants are in that file). "
        "A model on paper of the CUDA svt and rpca kernels for small matrices, old (`thread`: one matrix per "
        "thread) and new (`group`: one warp per matrix), on an H100 SXM (132 SMs at 1.755 GHz). Registers and "
        "stack: `ptxas -v`, sm_90, nvcc 13.0. Shared memory: what the launcher asks per block "
        "(`group_layout`). Resident warps per SM: the occupancy formula (registers in units of 256 per warp, "
        "228 KB of shared memory with 1 KB reserved per block, 64 warps, 32 blocks), then capped by the "
        "batch's blocks per SM. Global bytes: per matrix-iteration (rpca: one iteration; svt: one call); for "
        "the thread design every element access is a 32-byte sector (neighbouring threads are a workspace "
        "apart), for the group design only the input and the outputs (spread over the 47 iterations of a "
        "PGSL step for rpca) unless the matrix lives in the global workspace. FLOPs: per matrix-iteration, "
        "every pair rotating (an upper bound), 7 sweeps for svt (cold), 5.5 per rpca iteration (warm). "
        "Time: the batch, one svt call or one rpca iteration, the largest of the issue bound (warp "
        "instructions / 4 per cycle per SM), the latency bound (waves x one warp's dependent chain), the "
        "L1/L2 sector bound and the HBM bound.",
        "",
        "| op | batch x n x n | dtype | design | registers / stack (B) | threads, shared (B) per block | data in "
        "| resident warps/SM (occupancy; at this batch) | global B per matrix-iter | FLOPs per matrix-iter | "
        "time | bound |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.op} | {r.batch} x {r.n}x{r.n} | {r.dtype} | {r.design} | {r.registers} / {r.stack} | "
            f"{r.threads_block}, {r.shared_block} | {r.where} | {r.occupancy_warps}; {r.warps_sm} | "
            f"{r.global_bytes:,.0f} | {r.flops:,.0f} | {_time(r.time_s)} | {r.bound} |")
    svt_old = model("svt", 14, 8192, "float32", "thread").time_s
    svt_new = model("svt", 14, 8192, "float32", "group").time_s
    rpca_old = model("rpca", 14, 8192, "float32", "thread").time_s * PGSL_ITERATIONS
    rpca_new = model("rpca", 14, 8192, "float32", "group").time_s * PGSL_ITERATIONS
    lines += [
        "",
        f"Predicted, PGSL batch (8,192 x 14x14, float32): svt {_time(svt_old)} (thread) -> {_time(svt_new)} "
        f"(group), target <= 100 us; a PGSL step's rpca ({PGSL_ITERATIONS} iterations) {_time(rpca_old)} -> "
        f"{_time(rpca_new)}, target <= 5 ms. Only a GPU can confirm: the clock under load, the instruction "
        "counts (from the source, not from SASS), the latencies, whether L1 holds the thread design's "
        "working set, the sweeps and iterations per matrix on real activation maps, and the tail where a "
        "warp's matrices need more iterations than the mean (rpca: the max is about 2.5x the mean). "
        "`scripts/gpu_check.sh` times both designs side by side.",
        "",
        "The rpca rows are the alternating method (the default). The APG keeps 7 iterates per matrix "
        "instead of 5: at 14x14 float32, 28,672 B per block, 7 blocks, 28 resident warps per SM. The group "
        "design gives 64 x 64x64 only 64 warps on the whole GPU (and rpca's 64x64 iterates do not fit a "
        "block's 48 KB, so they live in the global workspace): a block per matrix, as MAGMA does, would "
        "suit that size better; it is not built.",
        "",
        "<!-- /bench:small-matrix-model -->",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.small_matrix_model")
    parser.add_argument("--write", action="store_true", help="put the section into bench/RESULTS.md")
    args = parser.parse_args(argv)
    text = section()
    print(text)
    if args.write:
        from bench.results import DEFAULT_RESULTS, update_results  # imports pgsl_ext: only to write

        update_results(DEFAULT_RESULTS, {"small-matrix-model": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
