// The pgsl_ext ops called from C++ through the dispatcher, on CPU tensors,
// against ATen composites. Linked with libpgsl_ext_ops, whose static
// registrations must have run for any of this to find the ops.
//   test_ops_dispatcher [group...]   (no group: all of them)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <tuple>

#include "check.h"

namespace {

using at::Tensor;

c10::OperatorHandle op(const char* name, const char* overload = "") {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
}

Tensor soft_threshold(const Tensor& x, double tau) {
  static const auto handle = op("pgsl_ext::soft_threshold").typed<Tensor(const Tensor&, double)>();
  return handle.call(x, tau);
}

Tensor soft_threshold(const Tensor& x, const Tensor& tau) {
  static const auto handle =
      op("pgsl_ext::soft_threshold", "Tensor").typed<Tensor(const Tensor&, const Tensor&)>();
  return handle.call(x, tau);
}

Tensor pixel_unshuffle_concat(const Tensor& x, const Tensor& saliency, int64_t factor,
                              c10::string_view reduce) {
  static const auto handle =
      op("pgsl_ext::pixel_unshuffle_concat")
          .typed<Tensor(const Tensor&, const Tensor&, int64_t, c10::string_view)>();
  return handle.call(x, saliency, factor, reduce);
}

std::tuple<Tensor, Tensor, Tensor> jsma_saliency_search(const Tensor& grad_class,
                                                        const Tensor& grad_others,
                                                        const Tensor& domain, bool targeted) {
  static const auto handle =
      op("pgsl_ext::jsma_saliency_search")
          .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                    bool)>();
  return handle.call(grad_class, grad_others, domain, targeted);
}

std::tuple<Tensor, Tensor> pixel_unshuffle_concat_backward(const Tensor& grad_out,
                                                           const Tensor& saliency, int64_t channels,
                                                           int64_t factor, c10::string_view reduce) {
  static const auto handle =
      op("pgsl_ext::pixel_unshuffle_concat_backward")
          .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, int64_t, int64_t,
                                            c10::string_view)>();
  return handle.call(grad_out, saliency, channels, factor, reduce);
}

// The same values in another layout: "contiguous", "transposed" (last two dims stored
// swapped) or "sliced" (every other element of a wider buffer).
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
  return t.contiguous();
}

const char* const kLayouts[] = {"contiguous", "transposed", "sliced"};

// ---------------------------------------------------------------------------- registration

void registration_tests() {
  for (const char* name : {"pgsl_ext::soft_threshold", "pgsl_ext::pixel_unshuffle_concat",
                           "pgsl_ext::pixel_unshuffle_concat_backward",
                           "pgsl_ext::jsma_saliency_search"}) {
    const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
    EXPECT(handle.has_value());
    if (!handle) continue;
    EXPECT(handle->hasKernelForDispatchKey(c10::DispatchKey::CPU));
#ifdef PGSL_WITH_CUDA
    // The CUDA kernels are registered whenever they were compiled, GPU or not.
    EXPECT(handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA));
#endif
  }
  const auto overload = c10::Dispatcher::singleton().findSchema({"pgsl_ext::soft_threshold", "Tensor"});
  EXPECT(overload.has_value());
  if (overload) EXPECT(overload->hasKernelForDispatchKey(c10::DispatchKey::CPU));
  EXPECT_EQ(op("pgsl_ext::pixel_unshuffle_concat").schema().arguments().size(), size_t{4});
}

// ---------------------------------------------------------------------------- soft_threshold

Tensor soft_threshold_composite(const Tensor& x, const Tensor& tau) {
  return at::sign(x) * (at::abs(x) - tau).clamp_min(0);
}

void soft_threshold_tests() {
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const auto options = at::TensorOptions().dtype(dtype);
    const Tensor base = at::randn({3, 59, 97}, options) * 2;
    for (const char* layout : kLayouts) {
      const Tensor x = with_layout(base, layout);
      for (double tau : {0.0, 0.3, 1.0, 100.0}) {
        const Tensor y = soft_threshold(x, tau);
        EXPECT(y.sizes() == x.sizes());
        EXPECT(y.strides() == at::empty_like(x).strides());  // the layout of x is kept
        EXPECT(at::equal(y, soft_threshold_composite(x, at::scalar_tensor(tau, options))));
      }
      // one threshold per matrix, broadcast over its rows and columns
      const Tensor tau = at::rand({3, 1, 1}, options);
      EXPECT(at::equal(soft_threshold(x, tau), soft_threshold_composite(x, tau)));
      const Tensor tau_row = at::rand({97}, options);  // one per column
      EXPECT(at::equal(soft_threshold(x, tau_row), soft_threshold_composite(x, tau_row)));
    }
  }
  // NaN stays NaN, +-inf stays +-inf
  const Tensor special = at::tensor({NAN, INFINITY, -INFINITY, 0.5f, -2.0f});
  const Tensor y = soft_threshold(special, 1.0);
  EXPECT(std::isnan(y[0].item<float>()));
  EXPECT_EQ(y[1].item<float>(), INFINITY);
  EXPECT_EQ(y[2].item<float>(), -INFINITY);
  EXPECT_EQ(y[3].item<float>(), 0.0f);
  EXPECT_EQ(y[4].item<float>(), -1.0f);
  // empty input
  EXPECT_EQ(soft_threshold(at::empty({0, 3}), 1.0).numel(), int64_t{0});
}

// ---------------------------------------------------------------------------- pixel_unshuffle_concat

Tensor unshuffle_composite(const Tensor& x, const Tensor& saliency, int64_t f,
                           const std::string& reduce) {
  const Tensor pooled = reduce == "max" ? at::max_pool2d(saliency, {f, f}, {f, f})
                                        : at::avg_pool2d(saliency, {f, f}, {f, f});
  return at::cat({at::pixel_unshuffle(x, f), pooled}, 1);
}

void pixel_unshuffle_concat_tests() {
  at::manual_seed(1);
  struct Shape {
    int64_t b, c, h, w, f;
  };
  for (const Shape s : {Shape{2, 3, 6, 10, 2}, Shape{1, 5, 9, 15, 3}, Shape{3, 1, 4, 4, 4},
                        Shape{2, 2, 7, 5, 1}}) {
    for (auto dtype : {at::kFloat, at::kDouble}) {
      const auto options = at::TensorOptions().dtype(dtype);
      const Tensor x0 = at::randn({s.b, s.c, s.h, s.w}, options);
      const Tensor s0 = at::randn({s.b, 1, s.h, s.w}, options);
      for (const char* layout : kLayouts) {
        const Tensor x = with_layout(x0, layout), saliency = with_layout(s0, layout);
        const Tensor out = pixel_unshuffle_concat(x, saliency, s.f, "max");
        EXPECT(out.is_contiguous());
        // pure data movement and a max: exact
        EXPECT(at::equal(out, unshuffle_composite(x, saliency, s.f, "max")));
        // the mean sums in its own order: close, not exact
        const Tensor mean = pixel_unshuffle_concat(x, saliency, s.f, "mean");
        EXPECT(at::allclose(mean, unshuffle_composite(x, saliency, s.f, "mean"), 1e-6, 1e-6));
        EXPECT(at::equal(mean.narrow(1, 0, s.c * s.f * s.f), at::pixel_unshuffle(x, s.f)));
      }
    }
  }
  // NaN in a saliency block propagates, as in max_pool2d
  Tensor saliency = at::zeros({1, 1, 4, 4});
  saliency.index_put_({0, 0, 1, 2}, NAN);
  const Tensor out = pixel_unshuffle_concat(at::zeros({1, 1, 4, 4}), saliency, 2, "max");
  const Tensor pooled = out.select(1, 4);
  EXPECT(std::isnan(pooled[0][0][1].item<float>()));
  EXPECT_EQ(at::isnan(pooled).sum().item<int64_t>(), int64_t{1});
}

void pixel_unshuffle_concat_backward_tests() {
  at::manual_seed(2);
  const int64_t B = 2, C = 3, H = 6, W = 9, f = 3;
  const Tensor saliency = at::randn({B, 1, H, W}, at::kDouble);
  const Tensor grad_out = at::randn({B, C * f * f + 1, H / f, W / f}, at::kDouble);
  for (const char* reduce : {"max", "mean"}) {
    const auto [grad_x, grad_s] = pixel_unshuffle_concat_backward(grad_out, saliency, C, f, reduce);
    // the gradient of a permutation is the inverse permutation: exact
    EXPECT(at::equal(grad_x, at::pixel_shuffle(grad_out.narrow(1, 0, C * f * f), f)));
    const Tensor g = grad_out.narrow(1, C * f * f, 1);
    Tensor expected;
    if (std::string(reduce) == "max") {
      const auto [pooled, indices] = at::max_pool2d_with_indices(saliency, {f, f}, {f, f});
      expected = at::max_pool2d_with_indices_backward(g, saliency, {f, f}, {f, f}, {0, 0}, {1, 1},
                                                      false, indices);
      EXPECT(at::equal(grad_s, expected));  // random data: no ties
    } else {
      expected = at::avg_pool2d_backward(g, saliency, {f, f}, {f, f}, {0, 0}, /*ceil_mode=*/false,
                                         /*count_include_pad=*/true, c10::nullopt);
      EXPECT(at::allclose(grad_s, expected, 1e-12, 1e-12));
    }
  }
}

// ---------------------------------------------------------------------------- errors

// Runs f, which must throw a c10::Error whose message names `argument` (in backticks).
void expect_error_naming(const char* what, const std::function<void()>& f,
                         const std::string& argument) {
  try {
    f();
    pgsl_test::fail(__FILE__, __LINE__, std::string(what) + ": no error");
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (message.find("`" + argument + "`") == std::string::npos)
      pgsl_test::fail(__FILE__, __LINE__,
                      std::string(what) + ": message does not name `" + argument + "`: " + message);
  }
}

void error_tests() {
  const Tensor x = at::randn({2, 3, 4, 4}), s = at::randn({2, 1, 4, 4});
  expect_error_naming("negative tau", [&] { soft_threshold(x, -1.0); }, "tau");
  expect_error_naming("NaN tau", [&] { soft_threshold(x, NAN); }, "tau");
  expect_error_naming("integer x", [&] { soft_threshold(at::ones({3}, at::kInt), 1.0); }, "x");
  expect_error_naming("negative tau tensor", [&] { soft_threshold(x, at::full({1}, -0.5)); }, "tau");
  expect_error_naming("tau not broadcastable", [&] { soft_threshold(x, at::ones({3, 1})); }, "tau");
  expect_error_naming("3-d x", [&] { pixel_unshuffle_concat(x[0], s, 2, "max"); }, "x");
  const Tensor two_channels = at::cat({s, s}, 1);
  expect_error_naming(
      "2-channel saliency", [&] { pixel_unshuffle_concat(x, two_channels, 2, "max"); }, "saliency");
  expect_error_naming("saliency dtype", [&] { pixel_unshuffle_concat(x, s.to(at::kDouble), 2, "max"); },
                      "saliency");
  expect_error_naming("factor 0", [&] { pixel_unshuffle_concat(x, s, 0, "max"); }, "factor");
  expect_error_naming("indivisible size", [&] { pixel_unshuffle_concat(x, s, 3, "max"); }, "x");
  expect_error_naming("unknown reduce", [&] { pixel_unshuffle_concat(x, s, 2, "min"); }, "reduce");
  expect_error_naming("grad_out shape",
                      [&] { pixel_unshuffle_concat_backward(at::zeros({2, 5, 2, 2}), s, 3, 2, "max"); },
                      "grad_out");
  // The type errors are c10::TypeError, the value errors c10::ValueError (Python's TypeError
  // and ValueError).
  bool type_error = false, value_error = false;
  try {
    soft_threshold(at::ones({3}, at::kLong), 1.0);
  } catch (const c10::TypeError&) {
    type_error = true;
  } catch (const c10::Error&) {
  }
  try {
    pixel_unshuffle_concat(x, s, 2, "median");
  } catch (const c10::ValueError&) {
    value_error = true;
  } catch (const c10::Error&) {
  }
  EXPECT(type_error);
  EXPECT(value_error);
}

// ---------------------------------------------------------------------------- cuda

// The CUDA kernels against the CPU kernels (the same shared math). Skipped, visibly, without a
// GPU; PGSL_REQUIRE_CUDA=1 makes that a failure, as in the Python tests.
// ---------------------------------------------------------------------------- jsma_saliency_search

// Hand-checked rows through the dispatcher (the Python tests compare against brute force).
void jsma_saliency_search_tests() {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  // targeted: pairs among features 1, 3, 4 tie at a = 4, b = -4; (1, 3) has the smallest key.
  const Tensor gc = at::tensor({5.0, 2.0, -1.0, 2.0, 2.0, 0.0}, f64).reshape({1, 6});
  const Tensor go = at::tensor({3.0, -2.0, 1.0, -2.0, -2.0, 0.0}, f64).reshape({1, 6});
  Tensor domain = at::ones({1, 6}, at::kBool);
  auto [p, q, found] = jsma_saliency_search(gc, go, domain, true);
  EXPECT_EQ(p.item<int64_t>(), int64_t{1});
  EXPECT_EQ(q.item<int64_t>(), int64_t{3});
  EXPECT(found.item<bool>());
  // PGSL's non-targeted conditions (a < 0, b > 0): (2, 5), with a = -1, b = 1, is the only
  // valid pair of these gradients.
  std::tie(p, q, found) = jsma_saliency_search(gc, go, domain, false);
  EXPECT(found.item<bool>());
  EXPECT_EQ(p.item<int64_t>(), int64_t{2});
  EXPECT_EQ(q.item<int64_t>(), int64_t{5});
  // an empty domain: no pair, p = q = -1
  std::tie(p, q, found) = jsma_saliency_search(gc, go, at::zeros({1, 6}, at::kBool), true);
  EXPECT(!found.item<bool>());
  EXPECT_EQ(p.item<int64_t>(), int64_t{-1});
  EXPECT_EQ(q.item<int64_t>(), int64_t{-1});
  // a float mask is an error naming `domain`
  bool threw = false;
  try {
    jsma_saliency_search(gc, go, domain.to(at::kFloat), true);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("`domain` to be a bool tensor") != std::string::npos;
  }
  EXPECT(threw);
}

void cuda_tests() {
  const char* require = std::getenv("PGSL_REQUIRE_CUDA");
#ifdef PGSL_WITH_CUDA
  const char* missing = at::hasCUDA() ? nullptr : "no CUDA device is visible";
#else
  const char* missing = "this build has no CUDA kernels";
#endif
  if (missing != nullptr) {
    if (require != nullptr && std::string(require) == "1")
      pgsl_test::fail(__FILE__, __LINE__, std::string("PGSL_REQUIRE_CUDA=1, but ") + missing);
    else
      pgsl_test::skip(std::string(missing) + " (PGSL_REQUIRE_CUDA=1 fails instead)");
    return;
  }
  at::manual_seed(3);
  for (auto dtype : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    const Tensor matrices = at::randn({5, 59, 97}).to(dtype) * 2;
    const Tensor tau = at::rand({5, 1, 1}).to(dtype);
    const Tensor image = at::randn({2, 3, 12, 18}).to(dtype);
    const Tensor saliency = at::randn({2, 1, 12, 18}).to(dtype);
    for (const std::string layout : kLayouts) {
      const auto cpu = [&](const Tensor& t) { return with_layout(t, layout); };
      const auto cuda = [&](const Tensor& t) { return with_layout(t.to(at::kCUDA), layout); };
      EXPECT(at::equal(soft_threshold(cuda(matrices), 0.7).cpu(), soft_threshold(cpu(matrices), 0.7)));
      EXPECT(at::equal(soft_threshold(cuda(matrices), tau.to(at::kCUDA)).cpu(),
                       soft_threshold(cpu(matrices), tau)));
      for (int64_t f : {2, 3}) {
        EXPECT(at::equal(pixel_unshuffle_concat(cuda(image), cuda(saliency), f, "max").cpu(),
                         pixel_unshuffle_concat(cpu(image), cpu(saliency), f, "max")));
        const Tensor mean_cuda = pixel_unshuffle_concat(cuda(image), cuda(saliency), f, "mean");
        const Tensor mean_cpu = pixel_unshuffle_concat(cpu(image), cpu(saliency), f, "mean");
        EXPECT(at::allclose(mean_cuda.cpu().to(at::kDouble), mean_cpu.to(at::kDouble), 1e-2, 1e-2));
      }
    }
  }
  const Tensor x = at::randn({1, 1, 4, 4}, at::kCUDA), saliency_on_cpu = at::randn({1, 1, 4, 4});
  expect_error_naming(
      "saliency on another device", [&] { pixel_unshuffle_concat(x, saliency_on_cpu, 2, "max"); },
      "saliency");
  // jsma_saliency_search: the CUDA kernel picks the CPU kernel's pairs, bit for bit.
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const Tensor gc = at::randn({64, 300}).to(dtype), go = at::randn({64, 300}).to(dtype);
    const Tensor domain = at::rand({64, 300}) < 0.9;
    for (bool targeted : {true, false}) {
      const auto [p, q, found] = jsma_saliency_search(gc, go, domain, targeted);
      const auto [pc, qc, fc] = jsma_saliency_search(gc.to(at::kCUDA), go.to(at::kCUDA),
                                                     domain.to(at::kCUDA), targeted);
      EXPECT(at::equal(pc.cpu(), p) && at::equal(qc.cpu(), q) && at::equal(fc.cpu(), found));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  static const pgsl_test::Group groups[] = {
      {"registration", registration_tests},
      {"soft_threshold", soft_threshold_tests},
      {"pixel_unshuffle_concat", pixel_unshuffle_concat_tests},
      {"pixel_unshuffle_concat_backward", pixel_unshuffle_concat_backward_tests},
      {"jsma_saliency_search", jsma_saliency_search_tests},
      {"errors", error_tests},
      {"cuda", cuda_tests},
  };
  try {
    return pgsl_test::run_groups(groups, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uncaught exception: %s\n", e.what());
    return 1;
  }
}
