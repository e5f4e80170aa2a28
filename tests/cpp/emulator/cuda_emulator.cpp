// The scheduler behind pgsl_cuda_emulator.h: blocks one after another, the
// threads of a block as fibers; a warp collective completes as soon as its lanes
// have arrived, a barrier when every thread of the block waits at it.
#include "pgsl_cuda_emulator.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define PGSL_EMU_ASAN 1
#endif

// Bounds of the section holding every __shared__ variable (the linker defines
// them; weak, for a program without any).
extern "C" {
extern unsigned char __start_pgsl_emu_shared[] __attribute__((weak));
extern unsigned char __stop_pgsl_emu_shared[] __attribute__((weak));
}

namespace pgsl::emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr std::size_t kMaxSharedBytes = 48 * 1024;

enum class State { Runnable, AtBarrier, AtCollective, Done, Faulted };

struct Fiber {
  ucontext_t context;
  unsigned char* stack = nullptr;  // kStackBytes, above a guard page
  State state = State::Runnable;
  uint3 index{};
  unsigned linear = 0;
  // What the fiber waits at.
  std::source_location where;
  Collective kind = Collective::SyncWarp;
  unsigned mask = 0;
  int arg = 0, width = warpSize;
  std::uint64_t value = 0, result = 0;
  std::exception_ptr error;
  void* fake_stack = nullptr;  // AddressSanitizer's, while switched out
};

struct Launch {
  const char* name = nullptr;
  dim3 grid, block;
  uint3 block_index{};
  KernelBody body = nullptr;
  const void* args = nullptr;
  std::unique_ptr<unsigned char[]> dynamic_shared;
  std::size_t dynamic_bytes = 0;
};

Schedule g_schedule;
unsigned g_grid_cap = 0;  // not lowered: the launchers' kMaxGridBlocks
unsigned g_shared_cap = 0;  // not lowered: the launchers' kMaxDynamicSharedBytes
Stats g_stats;
std::vector<std::string> g_launched;
cudaError_t g_last_error = cudaSuccess;

// The launch and fiber running now (launches never nest and stay on one thread).
Launch* g_launch = nullptr;
Fiber* g_current = nullptr;
std::vector<Fiber> g_fibers;
ucontext_t g_scheduler_context;
const void* g_scheduler_stack = nullptr;
std::size_t g_scheduler_stack_size = 0;

std::string describe(const uint3& v) {
  std::ostringstream out;
  out << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return out.str();
}

std::string describe(const std::source_location& where) {
  std::string file = where.file_name();
  const std::size_t slash = file.rfind("/csrc/");
  if (slash != std::string::npos) file = file.substr(slash + 1);
  return file + ":" + std::to_string(where.line());
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         std::strcmp(a.file_name(), b.file_name()) == 0;
}

const char* collective_name(Collective kind) {
  switch (kind) {
    case Collective::ShflDown: return "__shfl_down_sync";
    case Collective::ShflUp: return "__shfl_up_sync";
    case Collective::ShflXor: return "__shfl_xor_sync";
    case Collective::ShflIdx: return "__shfl_sync";
    case Collective::Ballot: return "__ballot_sync";
    case Collective::SyncWarp: return "__syncwarp";
  }
  return "?";
}

std::string where_is(const Fiber& f) {
  switch (f.state) {
    case State::Runnable: return "is running";
    case State::Done: return "has exited";
    case State::Faulted: return "faulted";
    case State::AtBarrier: return "waits at __syncthreads at " + describe(f.where);
    case State::AtCollective:
      return "waits at " + std::string(collective_name(f.kind)) + " at " + describe(f.where);
  }
  return "?";
}

[[noreturn]] void fault(const std::string& what, const Fiber* thread) {
  std::ostringstream out;
  out << "CUDA emulator: kernel " << g_launch->name << ", block " << describe(g_launch->block_index);
  if (thread != nullptr) out << ", thread " << describe(thread->index);
  out << ": " << what;
  throw KernelFault(out.str());
}

// A byte loop the sanitizer does not check: ASan's redzones around the shared
// variables sit inside the section.
#if defined(PGSL_EMU_ASAN)
__attribute__((no_sanitize_address))
#endif
void poison(unsigned char* begin, unsigned char* end) {
  for (volatile unsigned char* p = begin; p < end; ++p) *p = 0xff;
}

// ---------------------------------------------------------------------------- fibers
void switch_to_fiber(Fiber& f) {
  g_current = &f;
#if defined(PGSL_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  swapcontext(&g_scheduler_context, &f.context);
#if defined(PGSL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_current = nullptr;
}

void switch_to_scheduler(Fiber& f, bool exiting) {
#if defined(PGSL_EMU_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, g_scheduler_stack,
                                 g_scheduler_stack_size);
#else
  (void)exiting;
#endif
  swapcontext(&f.context, &g_scheduler_context);
#if defined(PGSL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void fiber_main() {
  Fiber& f = *g_current;
#if defined(PGSL_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_scheduler_stack, &g_scheduler_stack_size);
#endif
  try {
    g_launch->body(g_launch->args);
    f.state = State::Done;
  } catch (...) {
    f.error = std::current_exception();
    f.state = State::Faulted;
  }
  switch_to_scheduler(f, true);
  std::abort();  // never resumed
}

unsigned char* new_stack() {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("CUDA emulator: cannot map a fiber stack");
  mprotect(mem, page, PROT_NONE);  // a stack overflow faults instead of corrupting
  return static_cast<unsigned char*>(mem) + page;
}

// The order in which a launch runs its blocks.
std::vector<unsigned> order_of(unsigned count, std::mt19937_64& rng) {
  std::vector<unsigned> order(count);
  std::iota(order.begin(), order.end(), 0u);
  if (g_schedule.order == Order::Reversed) std::reverse(order.begin(), order.end());
  if (g_schedule.order == Order::Shuffled) std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// ---------------------------------------------------------------------------- resolution
// The lane a shuffle of `f` reads (its own lane when the source is outside its segment).
unsigned source_lane(const Fiber& f, unsigned lane) {
  const unsigned width = static_cast<unsigned>(f.width);
  const unsigned base = lane & ~(width - 1);
  switch (f.kind) {
    case Collective::ShflDown: {
      const unsigned src = lane + static_cast<unsigned>(f.arg);
      return src < base + width ? src : lane;
    }
    case Collective::ShflUp:
      return lane >= base + static_cast<unsigned>(f.arg) ? lane - static_cast<unsigned>(f.arg) : lane;
    case Collective::ShflXor: {
      const unsigned src = lane ^ static_cast<unsigned>(f.arg);
      return src < base + width ? src : lane;
    }
    case Collective::ShflIdx:
      return base + (static_cast<unsigned>(f.arg) & (width - 1));
    default:
      return lane;
  }
}

std::string hex(unsigned mask) {
  std::ostringstream out;
  out << "0x" << std::hex << mask;
  return out.str();
}

// Completes the warp collective thread t waits at if every lane its mask names
// has arrived at it; returns whether it did. A lane that does not exist or has
// exited can never arrive: a fault. With `stuck` (no thread can run any more),
// a lane waiting anywhere else is a fault too.
bool complete_collective(unsigned t, unsigned threads, bool stuck) {
  Fiber& f = g_fibers[t];
  const unsigned warp_base = t & ~31u;
  for (unsigned k = 0; k < 32; ++k) {
    if (!(f.mask >> k & 1u)) continue;
    const unsigned other = warp_base + k;
    if (other >= threads)
      fault("mask " + hex(f.mask) + " of " + collective_name(f.kind) + " at " + describe(f.where) +
                " names lane " + std::to_string(k) + ", which does not exist (the block has " +
                std::to_string(threads) + " threads)",
            &f);
    const Fiber& g = g_fibers[other];
    const bool same = g.state == State::AtCollective && same_site(g.where, f.where) &&
                      g.kind == f.kind && g.mask == f.mask;
    if (same) continue;
    if (g.state == State::Done || stuck)
      fault(std::string(collective_name(f.kind)) + " at " + describe(f.where) + " names lane " +
                std::to_string(k) + " in its mask, but that thread " + describe(g.index) + " " +
                where_is(g) +
                (g.state == State::AtCollective && same_site(g.where, f.where) ? " with another mask" : ""),
            &f);
    return false;
  }
  // Every named lane has arrived: compute each lane's result, then release them.
  if (f.kind == Collective::Ballot) {
    std::uint64_t ballot = 0;
    for (unsigned k = 0; k < 32; ++k)
      if ((f.mask >> k & 1u) && g_fibers[warp_base + k].value) ballot |= 1ull << k;
    for (unsigned k = 0; k < 32; ++k)
      if (f.mask >> k & 1u) g_fibers[warp_base + k].result = ballot;
  } else if (f.kind != Collective::SyncWarp) {
    for (unsigned k = 0; k < 32; ++k) {
      if (!(f.mask >> k & 1u)) continue;
      Fiber& reader = g_fibers[warp_base + k];
      const unsigned src = source_lane(reader, k);
      if (!(f.mask >> src & 1u))
        fault(std::string(collective_name(f.kind)) + " at " + describe(f.where) + " reads lane " +
                  std::to_string(src) + ", which is not in the mask (an inactive lane: undefined)",
              &reader);
      reader.result = g_fibers[warp_base + src].value;
    }
  }
  for (unsigned k = 0; k < 32; ++k)
    if (f.mask >> k & 1u) g_fibers[warp_base + k].state = State::Runnable;
  return true;
}

// Every thread is blocked at a barrier or done: release the barrier, or fault.
// Returns false when the block has finished.
bool resolve_barrier(unsigned threads) {
  const Fiber* waiting = nullptr;
  const Fiber* exited = nullptr;
  for (unsigned t = 0; t < threads; ++t) {
    const Fiber& f = g_fibers[t];
    if (f.state == State::Done) {
      if (exited == nullptr) exited = &f;
      continue;
    }
    if (waiting == nullptr) {
      waiting = &f;
    } else if (!same_site(waiting->where, f.where)) {
      fault("divergent __syncthreads: this thread waits at " + describe(waiting->where) +
                ", thread " + describe(f.index) + " at " + describe(f.where),
            waiting);
    }
  }
  if (waiting == nullptr) return false;
  if (exited != nullptr)
    fault("__syncthreads at " + describe(waiting->where) + " is not reached by every thread: thread " +
              describe(exited->index) + " has exited (an early return before a barrier)",
          waiting);
  for (unsigned t = 0; t < threads; ++t) g_fibers[t].state = State::Runnable;
  return true;
}

// The runnable thread to resume next: the lowest index (in order), the highest
// (reversed) or a random one (shuffled); -1 if none. A warp whose collective
// completes can thus run ahead of the others, as warps do on a GPU.
int next_thread(unsigned threads, std::mt19937_64& rng) {
  if (g_schedule.order == Order::InOrder) {
    for (unsigned t = 0; t < threads; ++t)
      if (g_fibers[t].state == State::Runnable) return int(t);
    return -1;
  }
  if (g_schedule.order == Order::Reversed) {
    for (unsigned t = threads; t-- > 0;)
      if (g_fibers[t].state == State::Runnable) return int(t);
    return -1;
  }
  int chosen = -1;
  unsigned seen = 0;
  for (unsigned t = 0; t < threads; ++t)
    if (g_fibers[t].state == State::Runnable && rng() % ++seen == 0) chosen = int(t);
  return chosen;
}

void run_block(unsigned threads, std::mt19937_64& rng) {
  while (g_fibers.size() < threads) {
    g_fibers.emplace_back();
    g_fibers.back().stack = new_stack();
  }
  const dim3 b = g_launch->block;
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = g_fibers[t];
    unsigned char* stack = f.stack;
    f = Fiber{};
    f.stack = stack;
    f.linear = t;
    f.index = uint3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  if (__start_pgsl_emu_shared != nullptr) poison(__start_pgsl_emu_shared, __stop_pgsl_emu_shared);
  if (g_launch->dynamic_bytes > 0)
    poison(g_launch->dynamic_shared.get(), g_launch->dynamic_shared.get() + g_launch->dynamic_bytes);
  for (;;) {
    const int next = next_thread(threads, rng);
    if (next >= 0) {
      Fiber& f = g_fibers[next];
      switch_to_fiber(f);
      if (f.state == State::Faulted) {
        try {
          std::rethrow_exception(f.error);
        } catch (const KernelFault&) {
          throw;
        } catch (const std::exception& e) {
          fault(std::string("exception: ") + e.what(), &f);
        }
      }
      if (f.state == State::AtCollective) complete_collective(unsigned(next), threads, false);
      continue;
    }
    // Nothing can run: a collective still waiting can never complete (this faults).
    for (unsigned t = 0; t < threads; ++t)
      if (g_fibers[t].state == State::AtCollective) complete_collective(t, threads, true);
    if (!resolve_barrier(threads)) break;
  }
}

}  // namespace

// ---------------------------------------------------------------------------- public API
std::string Schedule::describe() const {
  switch (order) {
    case Order::InOrder: return "in-order";
    case Order::Reversed: return "reversed";
    case Order::Shuffled: return "shuffled(seed " + std::to_string(seed) + ")";
  }
  return "?";
}

std::string kernel_name_from(std::string_view pretty) {
  const std::size_t start = pretty.find("Kernel = ");
  if (start == std::string_view::npos) return std::string(pretty);
  std::string_view rest = pretty.substr(start + 9);
  std::string out(rest.substr(0, rest.find_first_of(";]")));
  for (const char* noise : {"pgsl::", "{anonymous}::", "(anonymous namespace)::"})
    for (std::size_t at; (at = out.find(noise)) != std::string::npos;) out.erase(at, std::strlen(noise));
  return out;
}

void set_schedule(const Schedule& schedule) { g_schedule = schedule; }
const Schedule& schedule() { return g_schedule; }
std::vector<Schedule> test_schedules() {
  return {{Order::InOrder, 0}, {Order::Reversed, 0}, {Order::Shuffled, 1}, {Order::Shuffled, 2}};
}
void set_grid_cap(unsigned blocks) { g_grid_cap = blocks; }
unsigned grid_cap() { return g_grid_cap; }
void set_shared_cap(unsigned bytes) { g_shared_cap = bytes; }
unsigned shared_cap() { return g_shared_cap; }
const Stats& stats() { return g_stats; }
const std::vector<std::string>& launched_kernels() { return g_launched; }

const uint3& thread_idx() { return g_current->index; }
const uint3& block_idx() { return g_launch->block_index; }
const dim3& block_dim() { return g_launch->block; }
const dim3& grid_dim() { return g_launch->grid; }

void* dynamic_shared_bytes() { return g_launch->dynamic_shared.get(); }

void syncthreads(const std::source_location& where) {
  Fiber& f = *g_current;
  f.state = State::AtBarrier;
  f.where = where;
  switch_to_scheduler(f, false);
}

std::uint64_t warp_collective(Collective kind, unsigned mask, std::uint64_t value, int arg,
                              int width, const std::source_location& where) {
  Fiber& f = *g_current;
  const unsigned lane = f.linear & 31u;
  if (!(mask >> lane & 1u)) {
    std::ostringstream m;
    m << collective_name(kind) << " at " << describe(where) << " called by lane " << lane
      << " with mask 0x" << std::hex << mask << ", which does not name the caller";
    fault(m.str(), &f);
  }
  if (width < 1 || width > warpSize || (width & (width - 1)) != 0)
    fault(std::string(collective_name(kind)) + " at " + describe(where) + ": width " +
              std::to_string(width) + " is not a power of two <= 32",
          &f);
  f.state = State::AtCollective;
  f.kind = kind;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.where = where;
  switch_to_scheduler(f, false);
  return f.result;
}

void run_launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes, KernelBody body,
                const void* bound_args) {
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  const bool bad_config = grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 ||
                          threads > kMaxThreadsPerBlock || block.z > 64 || grid.y > 65535 ||
                          grid.z > 65535 || grid.x > 0x7fffffffu ||
                          shared_bytes > kMaxSharedBytes;
  if (bad_config) {
    // What the CUDA runtime does: the launch does not happen, the error is reported later.
    g_last_error = cudaErrorInvalidConfiguration;
    std::fprintf(stderr, "CUDA emulator: kernel %s: invalid launch configuration grid (%u, %u, %u), block (%u, %u, %u), %zu dynamic shared bytes\n",
                 name, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes);
    return;
  }
  if (g_launch != nullptr) throw std::logic_error("CUDA emulator: a kernel launched a kernel");
  Launch launch;
  launch.name = name;
  launch.grid = grid;
  launch.block = block;
  launch.body = body;
  launch.args = bound_args;
  launch.dynamic_bytes = shared_bytes;
  if (shared_bytes > 0) launch.dynamic_shared.reset(new unsigned char[shared_bytes]);
  g_launch = &launch;
  ++g_stats.launches;
  if (std::find(g_launched.begin(), g_launched.end(), name) == g_launched.end())
    g_launched.emplace_back(name);
  std::mt19937_64 rng(g_schedule.seed);
  const std::uint64_t blocks = std::uint64_t(grid.x) * grid.y * grid.z;
  try {
    std::vector<unsigned> order = order_of(static_cast<unsigned>(blocks), rng);
    for (unsigned linear : order) {
      launch.block_index = uint3{linear % grid.x, (linear / grid.x) % grid.y, linear / (grid.x * grid.y)};
      run_block(static_cast<unsigned>(threads), rng);
      ++g_stats.blocks;
      g_stats.threads += threads;
    }
  } catch (...) {
    g_launch = nullptr;
    throw;
  }
  g_launch = nullptr;
}

}  // namespace pgsl::emu

cudaError_t cudaGetLastError() {
  const cudaError_t e = pgsl::emu::g_last_error;
  pgsl::emu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return pgsl::emu::g_last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

#if defined(PGSL_EMU_ASAN)
// Called by AddressSanitizer before its report: say which emulated thread it was.
extern "C" void __asan_on_error() {
  using namespace pgsl::emu;
  if (g_launch == nullptr) return;
  std::fprintf(stderr, "CUDA emulator: the access below was made by kernel %s, block %s, thread %s\n",
               g_launch->name, describe(g_launch->block_index).c_str(),
               g_current != nullptr ? describe(g_current->index).c_str() : "(none: the scheduler)");
}
#endif
