// Every CUDA kernel of csrc/cuda/*.cu, compiled with the host compiler and run on
// the CUDA emulator (pgsl_cuda_emulator.h), against the CPU kernels of
// libpgsl_ext_ops: every launch under every test schedule (in order, reversed,
// two seeded shuffles; results must be bitwise identical), with the default grid
// cap and a lowered one (so grid-stride loops take several steps), under
// AddressSanitizer when the build enables it.
//
// The emulated entry points below do for CPU tensors what csrc/cuda/*_cuda.cpp
// do for CUDA tensors (the same checks.h / svt.h helpers, the same launchers),
// minus the device guard and stream.
//   test_kernels_emulated [group...]   (no group: all of them)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../check.h"
#include "jsma_saliency_search.h"
#include "launchers.h"
#include "small_matrix_group.cuh"
#include "pixel_unshuffle_concat.h"
#include "rpca.h"
#include "soft_threshold.h"
#include "svt.h"

namespace {

using at::Tensor;
namespace emu = pgsl::emu;

constexpr unsigned kDefaultGridCap = 0;  // the launchers' own (kMaxGridBlocks)
// Small enough that every multi-block case below runs its grid-stride loops.
constexpr unsigned kLoweredGridCap = 1;
const unsigned kGridCaps[] = {kDefaultGridCap, kLoweredGridCap};

const at::ScalarType kAllFloat[] = {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble};
const at::ScalarType kReal[] = {at::kFloat, at::kDouble};

std::string describe(at::IntArrayRef sizes, at::ScalarType dtype, const std::string& what) {
  std::ostringstream out;
  out << what << " " << sizes << " " << dtype << " grid cap " << emu::grid_cap();
  return out.str();
}

// The same bits (the same code on the same input must give exactly this).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (!at::isFloatingType(a.scalar_type())) return at::equal(a, b);
  const auto bits = a.element_size() == 2 ? at::kShort : a.element_size() == 4 ? at::kInt : at::kLong;
  return at::equal(a.contiguous().view(bits), b.contiguous().view(bits));
}

// Equal values, NaN matching NaN (NaN payloads differ between c10 and CUDA's conversions).
bool same_values(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (!at::isFloatingType(a.scalar_type())) return at::equal(a, b);
  const Tensor nan_a = a.isnan(), nan_b = b.isnan();
  return at::equal(nan_a, nan_b) && at::equal(a.masked_fill(nan_a, 0), b.masked_fill(nan_b, 0));
}

// Runs `run` under every test schedule; each schedule's outputs must have the
// bits of the first's. Returns the first's.
std::vector<Tensor> under_every_schedule(const std::function<std::vector<Tensor>()>& run,
                                         const std::string& what) {
  std::vector<Tensor> first;
  for (const emu::Schedule& schedule : emu::test_schedules()) {
    emu::set_schedule(schedule);
    std::vector<Tensor> result;
    try {
      result = run();
    } catch (const std::exception& e) {
      pgsl_test::fail(__FILE__, __LINE__, what + " under " + schedule.describe() + ": " + e.what());
      break;
    }
    if (first.empty()) {
      first = result;
      continue;
    }
    for (size_t i = 0; i < result.size(); ++i)
      if (!same_bits(result[i], first[i]))
        pgsl_test::fail(__FILE__, __LINE__, what + ": output " + std::to_string(i) + " under " +
                                                schedule.describe() + " differs from in-order");
  }
  emu::set_schedule({});
  return first;
}

void expect_same_values(const Tensor& emulated, const Tensor& cpu, const std::string& what) {
  if (!same_values(emulated, cpu)) {
    std::ostringstream out;
    out << what << ": emulated CUDA kernel differs from the CPU kernel";
    if (emulated.sizes() == cpu.sizes() && emulated.numel() > 0)
      out << " (max |diff| " << (emulated.to(at::kDouble) - cpu.to(at::kDouble)).abs().nan_to_num(0).max().item<double>()
          << ", NaN masks " << (at::equal(emulated.isnan(), cpu.isnan()) ? "equal" : "differ") << ")";
    pgsl_test::fail(__FILE__, __LINE__, out.str());
  }
}

void expect_close(const Tensor& emulated, const Tensor& cpu, double rtol, const std::string& what) {
  // Relative to each matrix's largest entry; NaN where and only where the CPU has NaN.
  const bool nan_same = at::equal(emulated.isnan(), cpu.isnan());
  const Tensor e = emulated.to(at::kDouble).nan_to_num(0), c = cpu.to(at::kDouble).nan_to_num(0);
  const double scale = c.numel() > 0 ? std::max(1.0, c.abs().max().item<double>()) : 1.0;
  const double err = c.numel() > 0 ? (e - c).abs().max().item<double>() / scale : 0.0;
  if (!nan_same || !(err <= rtol)) {
    std::ostringstream out;
    out << what << ": emulated CUDA kernel vs CPU kernel: relative error " << err << " > " << rtol
        << (nan_same ? "" : ", NaN masks differ");
    pgsl_test::fail(__FILE__, __LINE__, out.str());
  }
}

c10::OperatorHandle op(const char* name, const char* overload = "") {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
}

// The same values in another layout (as in test_ops_dispatcher.cpp), plus "offset":
// a contiguous view one element into its buffer (not 16-byte aligned).
Tensor with_layout(const Tensor& t, const std::string& layout) {
  if (layout == "transposed") return t.transpose(-1, -2).contiguous().transpose(-1, -2);
  if (layout == "sliced") {
    std::vector<int64_t> wide_shape(t.sizes().begin(), t.sizes().end());
    wide_shape.back() = 2 * wide_shape.back() + 1;
    Tensor wide = at::full(wide_shape, NAN, t.options());
    Tensor view = wide.slice(-1, 1, c10::nullopt, 2);
    view.copy_(t);
    return view;
  }
  if (layout == "offset") {
    Tensor buffer = at::empty({t.numel() + 1}, t.options());
    Tensor view = buffer.slice(0, 1).view(t.sizes());
    view.copy_(t);
    return view;
  }
  return t.contiguous();
}

// Inputs with NaN, +-inf and exact ties sprinkled in (only for B > 0).
Tensor awkward(at::IntArrayRef sizes, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  Tensor x = at::randn(sizes, at::kDouble) * 2;
  if (x.numel() >= 8) {
    Tensor flat = x.view(-1);
    flat[1] = NAN;
    flat[3] = INFINITY;
    flat[5] = -INFINITY;
    flat[6] = flat[7] = 0.25;  // a tie
  }
  return x.to(dtype);
}

// Checks that every launch of `kernels` (base names) happened in this process.
void expect_launched(std::initializer_list<const char*> kernels) {
  for (const char* kernel : kernels) {
    bool seen = false;
    for (const std::string& name : emu::launched_kernels())
      seen = seen || name.rfind(std::string(kernel) + "<", 0) == 0 || name == kernel;
    if (!seen) pgsl_test::fail(__FILE__, __LINE__, std::string("kernel never launched: ") + kernel);
  }
}

// ---------------------------------------------------------------------------- soft_threshold
// As soft_threshold_cuda.cpp's run(); `index64` forces the 64-bit index path.
Tensor soft_threshold_emulated(const Tensor& x, const Tensor* tau, double tau_value, bool index64) {
  Tensor out = at::empty_like(x);
  auto iter = pgsl::soft_threshold_iterator(out, x, tau);
  EXPECT(iter.ndim() <= pgsl::kMaxDims);
  pgsl::ElementwiseParams p = pgsl::elementwise_params(iter, out);
  p.index32 = p.index32 && !index64;
  EXPECT_EQ(pgsl::launch_soft_threshold(pgsl::scalar_kind(x.scalar_type()), p, out.data_ptr(),
                                        x.const_data_ptr(), tau ? tau->const_data_ptr() : nullptr,
                                        tau_value, nullptr),
            cudaSuccess);
  return out;
}

void soft_threshold_tests() {
  static const auto scalar_op = op("pgsl_ext::soft_threshold").typed<Tensor(const Tensor&, double)>();
  static const auto tensor_op =
      op("pgsl_ext::soft_threshold", "Tensor").typed<Tensor(const Tensor&, const Tensor&)>();
  for (unsigned cap : kGridCaps) {
    emu::set_grid_cap(cap);
    for (at::ScalarType dtype : kAllFloat) {
      for (const std::vector<int64_t>& shape : {std::vector<int64_t>{0, 7}, {3, 13, 37}}) {
        const Tensor base = awkward(shape, dtype, 1);
        const Tensor tau_tensor = (shape.size() == 3 ? at::rand({3, 1, 1}) : at::rand({7})).to(dtype);
        for (const char* layout : {"contiguous", "transposed", "sliced", "offset"}) {
          const Tensor x = with_layout(base, layout);
          const std::string what = describe(x.sizes(), dtype, std::string("soft_threshold ") + layout);
          for (double tau : {0.0, 0.3}) {
            const auto out = under_every_schedule(
                [&] { return std::vector<Tensor>{soft_threshold_emulated(x, nullptr, tau, false)}; }, what);
            if (!out.empty()) expect_same_values(out[0], scalar_op.call(x, tau), what + " tau " + std::to_string(tau));
          }
          const Tensor tau_cast = pgsl::check_tau_tensor(x, tau_tensor, "test");
          const auto out = under_every_schedule(
              [&] { return std::vector<Tensor>{soft_threshold_emulated(x, &tau_cast, 0.0, false)}; }, what);
          if (!out.empty()) expect_same_values(out[0], tensor_op.call(x, tau_tensor), what + " tensor tau");
          const auto out64 = under_every_schedule(
              [&] { return std::vector<Tensor>{soft_threshold_emulated(x, &tau_cast, 0.0, true)}; }, what);
          if (!out64.empty()) expect_same_values(out64[0], tensor_op.call(x, tau_tensor), what + " 64-bit index");
        }
      }
    }
  }
  emu::set_grid_cap(kDefaultGridCap);
  expect_launched({"shrink_dense", "shrink_strided"});
}

// ---------------------------------------------------------------------------- pixel_unshuffle_concat
Tensor unshuffle_emulated(const Tensor& x, const Tensor& saliency, int64_t factor, const char* reduce) {
  const pgsl::UnshuffleParams p = pgsl::unshuffle_params(x, saliency, factor, reduce, "test");
  Tensor out = at::empty({p.batch, p.out_channels(), p.out_height(), p.out_width()}, x.options());
  EXPECT_EQ(pgsl::launch_pixel_unshuffle_concat(pgsl::scalar_kind(x.scalar_type()), p, x.const_data_ptr(),
                                                saliency.const_data_ptr(), out.data_ptr(), nullptr),
            cudaSuccess);
  return out;
}

std::vector<Tensor> unshuffle_backward_emulated(const Tensor& grad_out, const Tensor& saliency,
                                                int64_t channels, int64_t factor, const char* reduce) {
  const pgsl::UnshuffleBackward r =
      pgsl::prepare_unshuffle_backward(grad_out, saliency, channels, factor, reduce, "test");
  EXPECT_EQ(pgsl::launch_pixel_unshuffle_concat_backward(
                pgsl::scalar_kind(r.grad.scalar_type()), r.params, r.grad.const_data_ptr(),
                saliency.const_data_ptr(), r.grad_x.data_ptr(), r.grad_s.data_ptr(), nullptr),
            cudaSuccess);
  return {r.grad_x, r.grad_s};
}

Tensor image_layout(const Tensor& t, const std::string& layout) {
  if (layout == "channels_last") return t.contiguous(at::MemoryFormat::ChannelsLast);
  return with_layout(t, layout);
}

void pixel_unshuffle_concat_tests() {
  static const auto forward =
      op("pgsl_ext::pixel_unshuffle_concat")
          .typed<Tensor(const Tensor&, const Tensor&, int64_t, c10::string_view)>();
  static const auto backward =
      op("pgsl_ext::pixel_unshuffle_concat_backward")
          .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, int64_t, int64_t, c10::string_view)>();
  for (unsigned cap : kGridCaps) {
    emu::set_grid_cap(cap);
    for (at::ScalarType dtype : kAllFloat) {
      for (const std::vector<int64_t>& shape : {std::vector<int64_t>{0, 3, 6, 6}, {2, 3, 6, 18}}) {
        const Tensor image = awkward(shape, dtype, 2);
        // Saliency rounded to quarters: ties inside blocks; NaN and inf in some blocks.
        const Tensor saliency_base = (awkward({shape[0], 1, shape[2], shape[3]}, at::kDouble, 3) * 4).round().div(4).to(dtype);
        for (const char* layout : {"contiguous", "channels_last", "sliced"}) {
          const Tensor x = image_layout(image, layout);
          const Tensor saliency = image_layout(saliency_base, std::string(layout) == "channels_last" ? "transposed" : layout);
          for (int64_t factor : {1, 2, 3}) {
            for (const char* reduce : {"max", "mean"}) {
              const std::string what = describe(x.sizes(), dtype, std::string("pixel_unshuffle_concat ") + layout +
                                                                      " f=" + std::to_string(factor) + " " + reduce);
              const auto out = under_every_schedule(
                  [&] { return std::vector<Tensor>{unshuffle_emulated(x, saliency, factor, reduce)}; }, what);
              if (out.empty()) continue;
              expect_same_values(out[0], forward.call(x, saliency, factor, reduce), what);
              const Tensor grad = awkward(out[0].sizes(), dtype, 4);
              const auto grads = under_every_schedule(
                  [&] { return unshuffle_backward_emulated(grad, saliency, shape[1], factor, reduce); }, what + " backward");
              const auto [grad_x, grad_s] = backward.call(grad, saliency, shape[1], factor, reduce);
              if (grads.size() == 2) {
                expect_same_values(grads[0], grad_x, what + " backward grad_x");
                expect_same_values(grads[1], grad_s, what + " backward grad_s");
              }
            }
          }
        }
      }
    }
  }
  emu::set_grid_cap(kDefaultGridCap);
  // unshuffle_*<T, int64_t> needs an index span >= 2^31: not reachable at test sizes.
  expect_launched({"unshuffle_forward", "unshuffle_backward"});
}

// ---------------------------------------------------------------------------- jsma_saliency_search
std::vector<Tensor> jsma_emulated(const Tensor& gc, const Tensor& go, const Tensor& domain, bool targeted) {
  // As jsma_saliency_search_cuda.cpp.
  const pgsl::JsmaSearchParams params = pgsl::jsma_search_params(gc, go, domain, targeted, "test");
  const int64_t batch = params.batch;
  Tensor p_out = at::full({batch}, -1, gc.options().dtype(at::kLong));
  Tensor q_out = at::full({batch}, -1, gc.options().dtype(at::kLong));
  Tensor found = at::zeros({batch}, gc.options().dtype(at::kBool));
  if (batch == 0 || params.n < 2) return {p_out, q_out, found};
  Tensor workspace = at::empty({3, batch, params.n}, gc.options());
  EXPECT_EQ(pgsl::launch_jsma_saliency_search(pgsl::scalar_kind(gc.scalar_type()), params, gc.const_data_ptr(),
                                              go.const_data_ptr(), domain.const_data_ptr<bool>(),
                                              workspace.data_ptr(), p_out.data_ptr<int64_t>(),
                                              q_out.data_ptr<int64_t>(), found.data_ptr<bool>(), nullptr),
            cudaSuccess);
  return {p_out, q_out, found};
}

void jsma_saliency_search_tests() {
  static const auto search =
      op("pgsl_ext::jsma_saliency_search")
          .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, bool)>();
  for (unsigned cap : kGridCaps) {
    emu::set_grid_cap(cap);
    for (at::ScalarType dtype : kReal) {
      for (const std::vector<int64_t>& shape : {std::vector<int64_t>{0, 5}, {2, 1}, {3, 7}, {3, 300}}) {
        at::manual_seed(5);
        // Small integers: many pairs tie on the score, and the tie rule decides.
        const Tensor gc_base = at::randint(-2, 3, shape, at::kDouble).to(dtype);
        const Tensor go_base = at::randint(-2, 3, shape, at::kDouble).to(dtype);
        const Tensor domain_base = at::rand(shape) < 0.8;
        if (shape[0] == 3 && shape[1] == 300) {
          gc_base[1][3] = NAN;
          go_base[1][4] = INFINITY;
          gc_base[2] = at::randn({shape[1]}).to(dtype);  // a row without ties
        }
        for (const char* layout : {"contiguous", "transposed", "sliced"}) {
          const Tensor gc = with_layout(gc_base, layout), go = with_layout(go_base, layout);
          const Tensor domain = with_layout(domain_base.to(at::kFloat), layout).to(at::kBool);
          for (bool targeted : {true, false}) {
            const std::string what = describe(gc.sizes(), dtype, std::string("jsma_saliency_search ") + layout +
                                                                     (targeted ? " targeted" : " non-targeted"));
            const auto out = under_every_schedule([&] { return jsma_emulated(gc, go, domain, targeted); }, what);
            const auto [p, q, found] = search.call(gc, go, domain, targeted);
            if (out.size() == 3) {
              if (!(at::equal(out[0], p) && at::equal(out[1], q) && at::equal(out[2], found)))
                pgsl_test::fail(__FILE__, __LINE__, what + ": emulated CUDA kernel picks other pairs than the CPU kernel");
            }
          }
        }
      }
    }
  }
  emu::set_grid_cap(kDefaultGridCap);
  expect_launched({"jsma_search_rows"});
}

// ---------------------------------------------------------------------------- svt, rpca
// As svt_cuda.cpp's small_svt_cuda and rpca_cuda.cpp's small_rpca_cuda, with the design given
// (small_matrix_design() there reads it from the environment).
template <pgsl::SmallMatrixDesign Design>
void small_svt_emulated(const Tensor& x3, const pgsl::SvtParams& p) {
  Tensor workspace = at::empty({pgsl::small_svt_workspace(p, Design)}, x3.options());
  EXPECT_EQ(pgsl::launch_small_svt(p, Design, workspace.data_ptr(), nullptr), cudaSuccess);
}

template <pgsl::SmallMatrixDesign Design>
void small_rpca_emulated(const Tensor& x3, const pgsl::RpcaParams& p) {
  Tensor workspace = at::empty({pgsl::small_rpca_workspace(p, Design)}, x3.options());
  EXPECT_EQ(pgsl::launch_small_rpca(p, Design, workspace.data_ptr(), nullptr), cudaSuccess);
}

// The launch settings the svt and rpca kernels run under: the thread design at both grid
// caps; the group design with its matrices in shared memory (4 per block, then fewer per
// block at a lowered shared-memory cap) and in its global workspace (a cap of 1 byte), the
// grid capped at one block where the batch spans several. The emulator runs a warp's
// collectives lane by lane, so the group runs keep the emulated work down: a batch just
// large enough for several grid-stride steps, rpca capped at 40 iterations (some matrices
// converge, some stop at the cap), and only the default placement over every rpca option.
struct SmallMatrixRun {
  pgsl::SmallMatrixDesign design;
  unsigned grid_cap, shared_cap;
  int64_t svt_batch, rpca_batch;  // of the multi-block shape
  int64_t rpca_max_iter;
  bool every_rpca_option;         // else fixed mu and a cold start only
  std::string describe() const {
    return std::string(design == pgsl::SmallMatrixDesign::kGroup ? ", group design" : ", thread design") +
           ", shared cap " + std::to_string(shared_cap);  // describe() names the grid cap
  }
};
const SmallMatrixRun kSmallMatrixRuns[] = {
    {pgsl::SmallMatrixDesign::kThread, kDefaultGridCap, 0, 70, 66, 1000, true},
    {pgsl::SmallMatrixDesign::kThread, kLoweredGridCap, 0, 70, 66, 1000, true},
    {pgsl::SmallMatrixDesign::kGroup, kDefaultGridCap, 0, 9, 6, 40, true},
    {pgsl::SmallMatrixDesign::kGroup, kLoweredGridCap, 1000, 9, 6, 40, false},
    {pgsl::SmallMatrixDesign::kGroup, kLoweredGridCap, 1, 9, 6, 40, false},
};

// Tolerances: the thread design runs the CPU kernel's per-matrix code (one lane instead of a
// SIMD group), the group design the same maths with round-robin rotations and sums split
// over lanes; and nvcc contracts multiply-adds into FMAs on a GPU.
double svt_rtol(at::ScalarType dtype) { return dtype == at::kFloat ? 1e-5 : 1e-12; }

Tensor matrices(at::IntArrayRef shape, at::ScalarType dtype, const std::string& layout, uint64_t seed) {
  at::manual_seed(seed);
  Tensor x = at::randn(shape, at::kDouble);
  if (shape[0] >= 3) {
    x[1][0][0] = NAN;  // a non-finite matrix is confined to itself
    x[2][shape[1] - 1][shape[2] - 1] = INFINITY;
  }
  return with_layout(x.to(dtype), layout);
}

void svt_tests() {
  for (const SmallMatrixRun& run : kSmallMatrixRuns) {
    emu::set_grid_cap(run.grid_cap);
    emu::set_shared_cap(run.shared_cap);
    for (at::ScalarType dtype : kReal) {
      for (const std::vector<int64_t>& shape :
           {std::vector<int64_t>{0, 4, 4}, {5, 7, 3}, {3, 4, 9}, {run.svt_batch, 5, 5}}) {
        for (const char* layout : {"contiguous", "transposed", "sliced"}) {
          const Tensor x = matrices(shape, dtype, layout, 6);
          const Tensor tau = at::rand({shape[0]}).to(dtype);
          const std::string what = describe(x.sizes(), dtype, std::string("svt ") + layout) + run.describe();
          const auto out = under_every_schedule(
              [&] {
                if (run.design == pgsl::SmallMatrixDesign::kGroup)
                  return std::vector<Tensor>{
                      pgsl::svt_op<&small_svt_emulated<pgsl::SmallMatrixDesign::kGroup>>(x, 0.5, std::nullopt, 10, 2,
                                                                                          std::nullopt),
                      pgsl::svt_tensor_op<&small_svt_emulated<pgsl::SmallMatrixDesign::kGroup>>(
                          x, tau, std::nullopt, 10, 2, std::nullopt)};
                return std::vector<Tensor>{
                    pgsl::svt_op<&small_svt_emulated<pgsl::SmallMatrixDesign::kThread>>(x, 0.5, std::nullopt, 10, 2,
                                                                                         std::nullopt),
                    pgsl::svt_tensor_op<&small_svt_emulated<pgsl::SmallMatrixDesign::kThread>>(
                        x, tau, std::nullopt, 10, 2, std::nullopt)};
              },
              what);
          if (out.size() != 2) continue;
          expect_close(out[0], pgsl::svt_op<&pgsl::small_svt_cpu>(x, 0.5, std::nullopt, 10, 2, std::nullopt),
                       svt_rtol(dtype), what + " tau 0.5");
          expect_close(out[1], pgsl::svt_tensor_op<&pgsl::small_svt_cpu>(x, tau, std::nullopt, 10, 2, std::nullopt),
                       svt_rtol(dtype), what + " tensor tau");
        }
      }
    }
  }
  emu::set_grid_cap(kDefaultGridCap);
  emu::set_shared_cap(0);
  expect_launched({"small_svt_kernel", "group_svt_kernel"});
}

void rpca_tests() {
  for (const SmallMatrixRun& run : kSmallMatrixRuns) {
    emu::set_grid_cap(run.grid_cap);
    emu::set_shared_cap(run.shared_cap);
    for (at::ScalarType dtype : kReal) {
      for (const std::vector<int64_t>& shape :
           {std::vector<int64_t>{0, 4, 4}, {4, 6, 5}, {3, 5, 8}, {run.rpca_batch, 4, 3}}) {
        const Tensor x = matrices(shape, dtype, "transposed", 7);
        // A warm start with its own strides (the kernel reads it through its own geometry).
        const Tensor init = with_layout(0.1 * at::randn(shape, at::kDouble).to(dtype), "sliced");
        for (const char* method : {"alternating", "apg"}) {
          for (std::optional<double> mu : {std::optional<double>(0.55), std::optional<double>()}) {
            for (bool warm : {false, true}) {
              if (!run.every_rpca_option && (!mu || warm)) continue;
              const std::optional<Tensor> start = warm ? std::optional<Tensor>(init) : std::nullopt;
              const std::string what =
                  describe(x.sizes(), dtype, std::string("rpca ") + method + (mu ? " mu=0.55" : " continuation") +
                                                 (warm ? " init" : "")) + run.describe();
              const auto out = under_every_schedule(
                  [&] {
                    using pgsl::SmallMatrixDesign;
                    const auto [low, sparse, iters, conv] =
                        run.design == SmallMatrixDesign::kGroup
                            ? pgsl::rpca_op<&small_svt_emulated<SmallMatrixDesign::kGroup>,
                                            &small_rpca_emulated<SmallMatrixDesign::kGroup>>(
                                  x, start, mu, std::nullopt, run.rpca_max_iter, 1e-7, std::nullopt, method, std::nullopt)
                            : pgsl::rpca_op<&small_svt_emulated<SmallMatrixDesign::kThread>,
                                            &small_rpca_emulated<SmallMatrixDesign::kThread>>(
                                  x, start, mu, std::nullopt, run.rpca_max_iter, 1e-7, std::nullopt, method, std::nullopt);
                    return std::vector<Tensor>{low, sparse, iters, conv};
                  },
                  what);
              if (out.size() != 4) continue;
              const auto [low, sparse, iters, conv] = pgsl::rpca_op<&pgsl::small_svt_cpu, &pgsl::small_rpca_cpu>(
                  x, start, mu, std::nullopt, run.rpca_max_iter, 1e-7, std::nullopt, method, std::nullopt);
              // More tolerance than svt: the iteration amplifies rounding differences.
              const double rtol = dtype == at::kFloat ? 1e-3 : 1e-9;
              expect_close(out[0], low, rtol, what + " low_rank");
              expect_close(out[1], sparse, rtol, what + " sparse");
              if (!at::equal(out[3], conv)) pgsl_test::fail(__FILE__, __LINE__, what + ": converged flags differ");
              const int64_t iter_diff = x.size(0) > 0 ? (out[2] - iters).abs().max().item<int64_t>() : 0;
              if (iter_diff > 2)
                pgsl_test::fail(__FILE__, __LINE__, what + ": iteration counts differ by " + std::to_string(iter_diff));
            }
          }
        }
      }
    }
  }
  emu::set_grid_cap(kDefaultGridCap);
  emu::set_shared_cap(0);
  expect_launched({"small_rpca_kernel", "group_rpca_kernel"});
}

// ---------------------------------------------------------------------------- small-matrix layout
// Resident warps per SM on an H100 (sm_90: 64 warps, 32 blocks, 64K registers allocated per
// warp in units of 256, 228 KB of shared memory of which 1 KB is reserved per block): the
// occupancy calculator's formula, for bench/RESULTS.md's model.
int h100_resident_warps(int warps_per_block, int registers_per_thread, int64_t shared_bytes_per_block) {
  const int registers_per_warp = (registers_per_thread * 32 + 255) / 256 * 256;
  const int by_registers = 65536 / (registers_per_warp * warps_per_block);
  const int by_shared = int(233472 / (shared_bytes_per_block + 1024));
  const int by_warps = 64 / warps_per_block;
  return std::min({by_registers, by_shared, by_warps, 32}) * warps_per_block;
}

void small_matrix_layout_tests() {
  pgsl::SmallMatrixDesign design = pgsl::SmallMatrixDesign::kThread;
  EXPECT(pgsl::parse_small_matrix_design("group", design) && design == pgsl::SmallMatrixDesign::kGroup);
  EXPECT(pgsl::parse_small_matrix_design("thread", design) && design == pgsl::SmallMatrixDesign::kThread);
  EXPECT(!pgsl::parse_small_matrix_design("Group", design) && !pgsl::parse_small_matrix_design("", design));
  // The PGSL batch: 128 digits x 64 channels of 14 x 14 float32 maps.
  const pgsl::SmallBatchGeometry pgsl_batch{8192, 14, 14, 196, 14, 1};
  const pgsl::GroupLayout svt = pgsl::group_layout(pgsl_batch, 4, 0);
  const pgsl::GroupLayout rpca = pgsl::group_layout(pgsl_batch, 4, 5);  // the alternating method
  for (const pgsl::GroupLayout& layout : {svt, rpca}) {
    EXPECT(layout.shared);
    EXPECT_EQ(layout.groups_per_block, pgsl::kGroupsPerBlock);
    EXPECT_EQ(layout.blocks, 2048u);
    EXPECT_EQ(layout.workspace_elements(), int64_t{0});
    // 64 registers: the float32 kernels' __launch_bounds__ cap, which tests/test_build.py
    // checks ptxas keeps without a stack frame.
    EXPECT(h100_resident_warps(layout.groups_per_block, 64, layout.shared_bytes(4)) >= 32);
  }
  EXPECT_EQ(rpca.shared_bytes(4), int64_t{4 * (15 * 14 + 15 * 14 + 5 * 196) * 4});
  // A matrix too large for a block's shared memory goes to the workspace, one slice per warp.
  const pgsl::SmallBatchGeometry large{70, 64, 64, 4096, 64, 1};
  const pgsl::GroupLayout spilled = pgsl::group_layout(large, 8, 7);
  EXPECT(!spilled.shared);
  EXPECT_EQ(spilled.shared_bytes(8), int64_t{0});
  EXPECT_EQ(spilled.workspace_elements(), int64_t{spilled.blocks} * pgsl::kGroupsPerBlock * spilled.elements);
}

// ---------------------------------------------------------------------------- the shim itself
// The emulator's __half / __nv_bfloat16 conversions round as c10's (the CPU kernels').
void half_conversion_tests() {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float emulated = __half2float(__half{static_cast<unsigned short>(bits)});
    const float c10_value = static_cast<float>(c10::Half(static_cast<uint16_t>(bits), c10::Half::from_bits()));
    EXPECT_SAME(emulated, c10_value);
    const float bf = __bfloat162float(__nv_bfloat16{static_cast<unsigned short>(bits)});
    EXPECT_SAME(bf, static_cast<float>(c10::BFloat16(static_cast<uint16_t>(bits), c10::BFloat16::from_bits())));
  }
  at::manual_seed(8);
  const Tensor samples = at::cat({at::randn({100000}) * 1000, at::randn({100000}) * 1e-5,
                                  at::tensor({65504.f, 65519.f, 65520.f, 65536.f, 6.1035156e-05f, 5.9604645e-08f,
                                              2.9802322e-08f, 2.9802326e-08f, 0.f, -0.f, INFINITY, -INFINITY})});
  const float* v = samples.const_data_ptr<float>();
  for (int64_t i = 0; i < samples.numel(); ++i) {
    EXPECT_EQ(__float2half_rn(v[i]).__x, c10::Half(v[i]).x);
    EXPECT_EQ(__float2bfloat16_rn(v[i]).__x, c10::BFloat16(v[i]).x);
  }
  EXPECT(std::isnan(__half2float(__float2half_rn(NAN))));
  EXPECT(std::isnan(__bfloat162float(__float2bfloat16_rn(NAN))));
}

// Every __global__ kernel in csrc/cuda/*.cu is one the groups above launch.
void kernels_covered_tests() {
  const std::set<std::string> tested = {"shrink_dense",      "shrink_strided",    "unshuffle_forward",
                                        "unshuffle_backward", "jsma_search_rows", "small_svt_kernel",
                                        "small_rpca_kernel",  "group_svt_kernel", "group_rpca_kernel"};
  const std::regex global(R"(__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\()");
  std::set<std::string> found;
  // Every .cu file the build compiles (CMake passes the glob), read for its kernels.
  std::stringstream files(PGSL_CU_FILES);
  int file_count = 0;
  for (std::string file; std::getline(files, file, ',');) {
    std::ifstream in(file);
    EXPECT(in.good());
    std::stringstream text;
    text << in.rdbuf();
    const std::string source = text.str();
    for (std::sregex_iterator it(source.begin(), source.end(), global), end; it != end; ++it)
      found.insert((*it)[1].str());
    ++file_count;
  }
  EXPECT(file_count >= 4);
  EXPECT_EQ(found.size(), tested.size());
  for (const std::string& kernel : found)
    if (!tested.count(kernel)) pgsl_test::fail(__FILE__, __LINE__, "kernel " + kernel + " has no emulated test");
}

}  // namespace

int main(int argc, char** argv) {
  static const pgsl_test::Group groups[] = {
      {"soft_threshold", soft_threshold_tests},
      {"pixel_unshuffle_concat", pixel_unshuffle_concat_tests},
      {"jsma_saliency_search", jsma_saliency_search_tests},
      {"svt", svt_tests},
      {"rpca", rpca_tests},
      {"small_matrix_layout", small_matrix_layout_tests},
      {"half_conversions", half_conversion_tests},
      {"kernels_covered", kernels_covered_tests},
  };
  try {
    const int status = pgsl_test::run_groups(groups, argc, argv);
    const emu::Stats& s = emu::stats();
    std::printf("emulated %lld launches, %lld blocks, %lld threads\n", static_cast<long long>(s.launches),
                static_cast<long long>(s.blocks), static_cast<long long>(s.threads));
    return status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uncaught exception: %s\n", e.what());
    return 1;
  }
}
