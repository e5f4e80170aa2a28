// Tests of the CUDA emulator itself: small kernels that use each part of the
// execution model correctly (and must pass under every schedule), and kernels
// with one seeded bug each (and must be caught, with the kernel, block and
// thread named). The out-of-bounds ones are caught by AddressSanitizer, which
// ends the process: ctest runs them as their own groups and matches the report.
//   test_cuda_emulator [group...]   (no group: every group except the oob_* ones)
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "../check.h"
#include "cuda_types.cuh"

namespace {

using pgsl::launch_kernel;
namespace emu = pgsl::emu;

// The fault `launch` raises, "" if none.
std::string fault_of(const std::function<void()>& launch) {
  try {
    launch();
  } catch (const emu::KernelFault& e) {
    return e.what();
  }
  return "";
}

// A seeded bug must be caught, and the message must name the kernel, a block,
// a thread and `what`.
void expect_fault(const std::function<void()>& launch, const char* kernel, const char* what) {
  const std::string message = fault_of(launch);
  EXPECT(!message.empty());
  if (message.empty()) return;
  std::printf("  caught: %s\n", message.c_str());
  EXPECT(message.find(std::string("kernel ") + kernel) != std::string::npos);
  EXPECT(message.find("block (") != std::string::npos);
  EXPECT(message.find("thread (") != std::string::npos);
  EXPECT(message.find(what) != std::string::npos);
}

// ---------------------------------------------------------------------------- correct kernels
// Sum of a block's values: warp shuffles, then one slot per warp in shared memory.
__global__ void block_sum(const long long* in, long long* out, int n) {
  __shared__ long long partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  long long v = i < n ? in[i] : 0;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    long long total = 0;
    for (int w = 0; w < int(blockDim.x + 31) / 32; ++w) total += partial[w];
    out[blockIdx.x] = total;
  }
}

void block_sum_tests() {
  for (int threads : {32, 96, 256}) {
    const int n = 1000, blocks = (n + threads - 1) / threads;
    std::vector<long long> in(n);
    std::iota(in.begin(), in.end(), 1);
    const std::string dependence = emu::schedule_dependence([&] {
      std::vector<long long> out(blocks, -1);
      launch_kernel<block_sum>(blocks, threads, 0, nullptr, in.data(), out.data(), n);
      EXPECT_EQ(cudaGetLastError(), cudaSuccess);
      long long total = 0;
      for (long long v : out) total += v;
      EXPECT_EQ(total, 500500LL);
      return out;
    });
    EXPECT_EQ(dependence, std::string());
  }
}

// Every shuffle variant and width, and the ballot, lane by lane.
__global__ void shuffles(int* out, int width) {
  const int t = threadIdx.x;
  const int v = 1000 + t;
  int* o = out + 5 * t;
  o[0] = __shfl_down_sync(0xffffffffu, v, 3, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 5, width);
  o[2] = __shfl_xor_sync(0xffffffffu, v, 6, width);
  o[3] = __shfl_sync(0xffffffffu, v, 7 + t, width);
  o[4] = int(__ballot_sync(0xffffffffu, t % 3 == 0));
  __syncwarp();
}

void shuffle_tests() {
  // The source lanes as the CUDA programming guide defines them.
  struct Expect {
    static int down(int t, int d, int w) { const int base = t & ~(w - 1); return t + d < base + w ? t + d : t; }
    static int up(int t, int d, int w) { const int base = t & ~(w - 1); return t - d >= base ? t - d : t; }
    static int xr(int t, int m, int w) { const int base = t & ~(w - 1); return (t ^ m) < base + w ? (t ^ m) : t; }
    static int idx(int t, int s, int w) { return (t & ~(w - 1)) + (s & (w - 1)); }
  };
  for (int width : {8, 16, 32}) {
    const int threads = 64;
    std::vector<int> out(5 * threads, 0);
    const std::string dependence = emu::schedule_dependence([&] {
      launch_kernel<shuffles>(1, threads, 0, nullptr, out.data(), width);
      return out;
    });
    EXPECT_EQ(dependence, std::string());
    for (int t = 0; t < threads; ++t) {
      const int lane = t % 32, base = t - lane;
      EXPECT_EQ(out[5 * t + 0], 1000 + base + Expect::down(lane, 3, width));
      EXPECT_EQ(out[5 * t + 1], 1000 + base + Expect::up(lane, 5, width));
      EXPECT_EQ(out[5 * t + 2], 1000 + base + Expect::xr(lane, 6, width));
      EXPECT_EQ(out[5 * t + 3], 1000 + base + Expect::idx(lane, 7 + t, width));
      unsigned ballot = 0;
      for (int k = 0; k < 32; ++k) ballot |= (base + k) % 3 == 0 ? 1u << k : 0u;
      EXPECT_EQ(unsigned(out[5 * t + 4]), ballot);
    }
  }
}

// Shared memory is private to the block and holds garbage (0xff bytes) when it starts.
__global__ void shared_private(int* seen_at_start, int* seen_after) {
  __shared__ int slot;
  if (threadIdx.x == 0) {
    seen_at_start[blockIdx.x] = slot;
    slot = int(blockIdx.x);
  }
  __syncthreads();
  seen_after[blockIdx.x * blockDim.x + threadIdx.x] = slot;
}

void shared_memory_tests() {
  const int blocks = 5, threads = 40;
  std::vector<int> start(blocks), after(blocks * threads);
  launch_kernel<shared_private>(blocks, threads, 0, nullptr, start.data(), after.data());
  for (int b = 0; b < blocks; ++b) {
    EXPECT_EQ(start[b], -1);  // not the previous block's value
    for (int t = 0; t < threads; ++t) EXPECT_EQ(after[b * threads + t], b);
  }
}

// Dynamic shared memory: each thread writes its slot, then reads its neighbour's.
__global__ void dynamic_rotate(int* out) {
  PGSL_DYNAMIC_SHARED(int, buffer);
  buffer[threadIdx.x] = int(blockIdx.x * 1000 + threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buffer[(threadIdx.x + 1) % blockDim.x];
}

void dynamic_shared_tests() {
  const int blocks = 3, threads = 70;
  const std::string dependence = emu::schedule_dependence([&] {
    std::vector<int> out(blocks * threads);
    launch_kernel<dynamic_rotate>(blocks, threads, threads * sizeof(int), nullptr, out.data());
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < threads; ++t) EXPECT_EQ(out[b * threads + t], b * 1000 + (t + 1) % threads);
    return out;
  });
  EXPECT_EQ(dependence, std::string());
}

__global__ void count_and_max(unsigned long long* count, int* largest, float* sum) {
  atomicAdd(count, 1ull);
  atomicMax(largest, int(blockIdx.x * blockDim.x + threadIdx.x));
  atomicAdd(sum, 0.5f);
}

// A 2-d grid of 3-d blocks: every thread counted once, coordinates in range.
__global__ void coordinates(int* hits, dim3 grid, dim3 block) {
  const int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const bool dims = gridDim.x == grid.x && gridDim.y == grid.y && gridDim.z == grid.z &&
                    blockDim.x == block.x && blockDim.y == block.y && blockDim.z == block.z;
  atomicAdd(hits + b * blockDim.x * blockDim.y * blockDim.z + t, dims ? 1 : 1000);
}

void atomics_and_coordinates_tests() {
  unsigned long long count = 0;
  int largest = -1;
  float sum = 0;
  launch_kernel<count_and_max>(7, 100, 0, nullptr, &count, &largest, &sum);
  EXPECT_EQ(count, 700ull);
  EXPECT_EQ(largest, 699);
  EXPECT_EQ(sum, 350.0f);
  const dim3 grid(3, 2, 1), block(5, 3, 2);
  std::vector<int> hits(6 * 30, 0);
  launch_kernel<coordinates>(grid, block, 0, nullptr, hits.data(), grid, block);
  for (int h : hits) EXPECT_EQ(h, 1);
}

__global__ void nothing() {}

void launch_configuration_tests() {
  launch_kernel<nothing>(0, 32, 0, nullptr);  // an empty grid is an error on a GPU
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  launch_kernel<nothing>(1, 1025, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  launch_kernel<nothing>(1, 32, 64 * 1024, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  launch_kernel<nothing>(dim3(1, 70000), 32, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
}

// ---------------------------------------------------------------------------- seeded bugs
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_exit_before_barrier(const int* in, int* out, int n) {
  __shared__ int staged[64];
  const int i = threadIdx.x;
  if (i >= n) return;  // the bug: these threads never reach the barrier below
  staged[i] = in[i];
  __syncthreads();
  out[i] = staged[(i + 1) % n];
}

__global__ void shuffle_full_mask_partial_warp(int* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void shuffle_after_early_exit(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void shuffle_mask_without_caller(int* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 0);
}

__global__ void shuffle_reads_inactive_lane(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, int(threadIdx.x), 8);
}

__global__ void shuffle_masks_disagree(int* out) {
  const unsigned mask = threadIdx.x == 0 ? 0x3u : 0xffffffffu;
  out[threadIdx.x] = __shfl_sync(mask, int(threadIdx.x), 0);
}

// The bug: no barrier between the shared writes and the reads of other threads' slots.
__global__ void missing_barrier(const int* in, int* out) {
  __shared__ int staged[128];
  staged[threadIdx.x] = in[threadIdx.x];
  out[threadIdx.x] = staged[(threadIdx.x + 1) % blockDim.x];
}

// Two block reductions through the same shared slots. The bug: no barrier before the
// second round's writes, so a warp that runs ahead overwrites a slot another warp has
// not read yet (caught only because a warp can run ahead of the others).
__global__ void slots_reused_without_barrier(const int* in, int* out) {
  __shared__ int partial[4];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int v = in[threadIdx.x];
  for (int round = 0; round < 2; ++round) {
    int sum = v;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) partial[warp] = sum;
    __syncthreads();
    int total = 0;
    for (int w = 0; w < 4; ++w) total += partial[w];
    v = total + int(threadIdx.x);
  }
  out[threadIdx.x] = v;
}

void seeded_bug_tests() {
  std::vector<int> in(128), out(128);
  std::iota(in.begin(), in.end(), 0);
  std::puts("  seeded bugs, each must be caught:");
  expect_fault([&] { launch_kernel<divergent_barrier>(2, 64, 0, nullptr, out.data()); },
               "divergent_barrier", "divergent __syncthreads");
  expect_fault([&] { launch_kernel<early_exit_before_barrier>(1, 64, 0, nullptr, in.data(), out.data(), 50); },
               "early_exit_before_barrier", "has exited");
  expect_fault([&] { launch_kernel<shuffle_full_mask_partial_warp>(1, 48, 0, nullptr, out.data()); },
               "shuffle_full_mask_partial_warp", "does not exist");
  expect_fault([&] { launch_kernel<shuffle_after_early_exit>(1, 32, 0, nullptr, out.data()); },
               "shuffle_after_early_exit", "has exited");
  expect_fault([&] { launch_kernel<shuffle_mask_without_caller>(1, 32, 0, nullptr, out.data()); },
               "shuffle_mask_without_caller", "does not name the caller");
  expect_fault([&] { launch_kernel<shuffle_reads_inactive_lane>(1, 32, 0, nullptr, out.data()); },
               "shuffle_reads_inactive_lane", "not in the mask");
  expect_fault([&] { launch_kernel<shuffle_masks_disagree>(1, 32, 0, nullptr, out.data()); },
               "shuffle_masks_disagree", "another mask");
  // The race shows as results that depend on the thread order.
  const std::string dependence = emu::schedule_dependence([&] {
    std::vector<int> result(128, -1);
    launch_kernel<missing_barrier>(1, 128, 0, nullptr, in.data(), result.data());
    return result;
  });
  std::printf("  caught: missing_barrier: %s\n", dependence.c_str());
  EXPECT(!dependence.empty());
  const std::string reuse = emu::schedule_dependence([&] {
    std::vector<int> result(128, -1);
    launch_kernel<slots_reused_without_barrier>(1, 128, 0, nullptr, in.data(), result.data());
    return result;
  });
  std::printf("  caught: slots_reused_without_barrier: %s\n", reuse.c_str());
  EXPECT(!reuse.empty());
  // Every fault left the emulator usable.
  block_sum_tests();
}

// ---------------------------------------------------------------------------- out of bounds
// Each ends the process with an AddressSanitizer report (ctest matches it).
__global__ void write_past_end(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = i;  // the bug: <= instead of <
}

__global__ void shared_past_end(int* out) {
  __shared__ int staged[32];
  staged[threadIdx.x] = int(threadIdx.x);  // the bug: the block has 33 threads
  __syncthreads();
  out[threadIdx.x] = staged[0];
}

__global__ void dynamic_shared_past_end(int* out) {
  PGSL_DYNAMIC_SHARED(int, buffer);
  buffer[threadIdx.x + 1] = 1;  // the bug: one past the dynamic size
  __syncthreads();
  out[threadIdx.x] = buffer[0];
}

void oob_global_tests() {
  std::vector<int> out(100);
  launch_kernel<write_past_end>(4, 32, 0, nullptr, out.data(), 100);
  std::puts("not caught: write_past_end");
}

void oob_shared_tests() {
  std::vector<int> out(33);
  launch_kernel<shared_past_end>(1, 33, 0, nullptr, out.data());
  std::puts("not caught: shared_past_end");
}

void oob_dynamic_shared_tests() {
  std::vector<int> out(32);
  launch_kernel<dynamic_shared_past_end>(1, 32, 32 * sizeof(int), nullptr, out.data());
  std::puts("not caught: dynamic_shared_past_end");
}

}  // namespace

int main(int argc, char** argv) {
  static const pgsl_test::Group groups[] = {
      {"block_sum", block_sum_tests},
      {"shuffles", shuffle_tests},
      {"shared_memory", shared_memory_tests},
      {"dynamic_shared", dynamic_shared_tests},
      {"atomics_and_coordinates", atomics_and_coordinates_tests},
      {"launch_configuration", launch_configuration_tests},
      {"seeded_bugs", seeded_bug_tests},
      {"oob_global", oob_global_tests},
      {"oob_shared", oob_shared_tests},
      {"oob_dynamic_shared", oob_dynamic_shared_tests},
  };
  if (argc < 2) {
    std::fprintf(stderr, "name the groups to run (the oob_* groups end the process)\n");
    return 2;
  }
  try {
    return pgsl_test::run_groups(groups, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uncaught exception: %s\n", e.what());
    return 1;
  }
}
