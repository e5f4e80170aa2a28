// Autograd of soft_threshold, pixel_unshuffle_concat, svt and rpca, registered
// at the Autograd key in C++: a Python autograd kernel
// (torch.library.register_autograd) costs ~6 us per call even when nothing
// requires grad, which is as much as the whole op on a small tensor. The
// backward formulas are written with ATen ops or with
// pixel_unshuffle_concat_backward, whose own autograd is below, so double
// backward works for both differentiable ops. svt and rpca have no derivative:
// they run on inputs that require grad, and a backward through them raises.
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

namespace pgsl {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor soft_threshold_below(const at::Tensor& x, double tau) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pgsl_ext::soft_threshold", "")
                       .typed<at::Tensor(const at::Tensor&, double)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, tau);
}

at::Tensor soft_threshold_tensor_below(const at::Tensor& x, const at::Tensor& tau) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pgsl_ext::soft_threshold", "Tensor")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, tau);
}

// d/dx: 1 where |x| > tau; d/dtau: -sign(x) there, summed over tau's broadcast dims.
struct SoftThreshold : torch::autograd::Function<SoftThreshold> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double tau) {
    ctx->save_for_backward({x});
    ctx->saved_data["tau"] = tau;
    return soft_threshold_below(x, tau);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const double tau = ctx->saved_data["tau"].toDouble();
    return {grads[0].mul(x.abs().gt(tau)), at::Tensor()};
  }
};

struct SoftThresholdTensor : torch::autograd::Function<SoftThresholdTensor> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& tau) {
    ctx->save_for_backward({x, tau});
    return soft_threshold_tensor_below(x, tau);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &tau = saved[1];
    const at::Tensor passed = x.abs().gt(tau);
    at::Tensor grad_x, grad_tau;
    if (ctx->needs_input_grad(0)) grad_x = grads[0].mul(passed);
    if (ctx->needs_input_grad(1))
      grad_tau = at::sum_to(grads[0].mul(x.sign()).mul(passed).neg(), tau.sizes()).to(tau.scalar_type());
    return {grad_x, grad_tau};
  }
};

// The inverse permutation for x; the block's gradient to its first arg-max (or evenly, for
// the mean) for saliency: the backward op, differentiable in turn (below).
struct PixelUnshuffleConcat : torch::autograd::Function<PixelUnshuffleConcat> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& saliency,
                            int64_t factor, c10::string_view reduce) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("pgsl_ext::pixel_unshuffle_concat", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t,
                                           c10::string_view)>();
    ctx->save_for_backward({saliency});
    ctx->saved_data["channels"] = x.dim() > 1 ? x.size(1) : int64_t{0};
    ctx->saved_data["factor"] = factor;
    ctx->saved_data["reduce"] = std::string(reduce);
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, saliency, factor, reduce);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("pgsl_ext::pixel_unshuffle_concat_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, int64_t, int64_t, c10::string_view)>();
    const at::Tensor saliency = ctx->get_saved_variables()[0];
    auto [grad_x, grad_s] =
        op.call(grads[0], saliency, ctx->saved_data["channels"].toInt(),
                ctx->saved_data["factor"].toInt(), ctx->saved_data["reduce"].toStringRef());
    return {grad_x, grad_s, at::Tensor(), at::Tensor()};
  }
};

using UnshuffleBackwardOp = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                int64_t, int64_t, c10::string_view);

at::Tensor unshuffle_jvp(const at::Tensor& tangent_x, const at::Tensor& tangent_s,
                         const at::Tensor& saliency, int64_t channels, int64_t factor,
                         c10::string_view reduce);

// The backward op is linear in grad_out, so its derivative w.r.t. grad_out is the forward's
// Jacobian (unshuffle_jvp). Its routing (the arg-max, or the mean) is piecewise constant in
// saliency: no gradient flows there, as for max_pool2d's backward.
struct PixelUnshuffleConcatBackward : torch::autograd::Function<PixelUnshuffleConcatBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_out,
                               const at::Tensor& saliency, int64_t channels, int64_t factor,
                               c10::string_view reduce) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("pgsl_ext::pixel_unshuffle_concat_backward", "")
                         .typed<UnshuffleBackwardOp>();
    ctx->save_for_backward({saliency});
    ctx->saved_data["channels"] = channels;
    ctx->saved_data["factor"] = factor;
    ctx->saved_data["reduce"] = std::string(reduce);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_s] = op.call(grad_out, saliency, channels, factor, reduce);
    return {grad_x, grad_s};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor saliency = ctx->get_saved_variables()[0];
    const at::Tensor grad_grad_out =
        unshuffle_jvp(grads[0], grads[1], saliency, ctx->saved_data["channels"].toInt(),
                      ctx->saved_data["factor"].toInt(), ctx->saved_data["reduce"].toStringRef());
    return {grad_grad_out, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The forward's Jacobian applied to (tangent_x, tangent_s), in differentiable ATen ops: the
// unshuffle of tangent_x, and per block the sum of tangent_s weighted by the routing that the
// backward op gives for a gradient of ones in the saliency channel (one-hot at the arg-max for
// "max", 1/f^2 for "mean"). An undefined tangent counts as zeros.
at::Tensor unshuffle_jvp(const at::Tensor& tangent_x, const at::Tensor& tangent_s,
                         const at::Tensor& saliency, int64_t channels, int64_t factor,
                         c10::string_view reduce) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pgsl_ext::pixel_unshuffle_concat_backward", "")
                       .typed<UnshuffleBackwardOp>();
  const int64_t b = saliency.size(0), h = saliency.size(2) / factor, w = saliency.size(3) / factor;
  at::Tensor part_x = tangent_x.defined()
                          ? tangent_x.reshape({b, channels, h, factor, w, factor})
                                .permute({0, 1, 3, 5, 2, 4})
                                .reshape({b, channels * factor * factor, h, w})
                          : at::zeros({b, channels * factor * factor, h, w}, saliency.options());
  at::Tensor part_s;
  if (tangent_s.defined()) {
    at::Tensor ones_in_saliency_channel = at::zeros({b, channels * factor * factor + 1, h, w}, saliency.options());
    ones_in_saliency_channel.select(1, channels * factor * factor).fill_(1);
    at::Tensor routing;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      routing = std::get<1>(op.call(ones_in_saliency_channel, saliency.detach(), channels, factor, reduce));
    }
    part_s = (tangent_s * routing).reshape({b, 1, h, factor, w, factor}).sum({3, 5});
  } else {
    part_s = at::zeros({b, 1, h, w}, saliency.options());
  }
  return at::cat({part_x, part_s}, 1);
}

at::Tensor soft_threshold_autograd(const at::Tensor& x, double tau) {
  return SoftThreshold::apply(x, tau);
}
at::Tensor soft_threshold_tensor_autograd(const at::Tensor& x, const at::Tensor& tau) {
  return SoftThresholdTensor::apply(x, tau);
}
at::Tensor pixel_unshuffle_concat_autograd(const at::Tensor& x, const at::Tensor& saliency,
                                           int64_t factor, c10::string_view reduce) {
  return PixelUnshuffleConcat::apply(x, saliency, factor, reduce);
}
std::tuple<at::Tensor, at::Tensor> pixel_unshuffle_concat_backward_autograd(
    const at::Tensor& grad_out, const at::Tensor& saliency, int64_t channels, int64_t factor,
    c10::string_view reduce) {
  auto grads = PixelUnshuffleConcatBackward::apply(grad_out, saliency, channels, factor, reduce);
  return {grads[0], grads[1]};
}

// svt and rpca: the op below autograd, and a backward that raises NotImplementedError.
[[noreturn]] void not_differentiable(const char* name) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "pgsl_ext.ops.", name, " is not differentiable; detach its input");
}

using SvtOp = at::Tensor(const at::Tensor&, double, std::optional<int64_t>, int64_t, int64_t,
                         std::optional<at::Generator>);
using SvtTensorOp = at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                               int64_t, int64_t, std::optional<at::Generator>);
using RpcaOp = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, std::optional<double>,
    std::optional<double>, int64_t, double, std::optional<int64_t>, c10::string_view,
    std::optional<at::Generator>);

template <typename Tau>
struct SvtNotDifferentiable : torch::autograd::Function<SvtNotDifferentiable<Tau>> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, Tau tau,
                            std::optional<int64_t> rank, int64_t oversample, int64_t power_iters,
                            std::optional<at::Generator> generator) {
    using Op = std::conditional_t<std::is_same_v<Tau, double>, SvtOp, SvtTensorOp>;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("pgsl_ext::svt", std::is_same_v<Tau, double> ? "" : "Tensor")
                         .template typed<Op>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, tau, rank, oversample, power_iters, std::move(generator));
  }
  static variable_list backward(AutogradContext*, variable_list) { not_differentiable("svt"); }
};

struct RpcaNotDifferentiable : torch::autograd::Function<RpcaNotDifferentiable> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const std::optional<at::Tensor>& init, std::optional<double> mu,
                               std::optional<double> lam, int64_t max_iter, double tol,
                               std::optional<int64_t> rank, c10::string_view method,
                               std::optional<at::Generator> generator) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("pgsl_ext::rpca", "")
                         .typed<RpcaOp>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [low_rank, sparse, iterations, converged] =
        op.call(x, init, mu, lam, max_iter, tol, rank, method, std::move(generator));
    ctx->mark_non_differentiable({iterations, converged});
    return {low_rank, sparse, iterations, converged};
  }
  static variable_list backward(AutogradContext*, variable_list) { not_differentiable("rpca"); }
};

at::Tensor svt_autograd(const at::Tensor& x, double tau, std::optional<int64_t> rank,
                        int64_t oversample, int64_t power_iters,
                        std::optional<at::Generator> generator) {
  return SvtNotDifferentiable<double>::apply(x, tau, rank, oversample, power_iters, std::move(generator));
}
at::Tensor svt_tensor_autograd(const at::Tensor& x, const at::Tensor& tau,
                               std::optional<int64_t> rank, int64_t oversample,
                               int64_t power_iters, std::optional<at::Generator> generator) {
  return SvtNotDifferentiable<const at::Tensor&>::apply(x, tau, rank, oversample, power_iters,
                                                        std::move(generator));
}
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_autograd(
    const at::Tensor& x, const std::optional<at::Tensor>& init, std::optional<double> mu,
    std::optional<double> lam, int64_t max_iter, double tol, std::optional<int64_t> rank,
    c10::string_view method, std::optional<at::Generator> generator) {
  auto out = RpcaNotDifferentiable::apply(x, init, mu, lam, max_iter, tol, rank, method,
                                          std::move(generator));
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, Autograd, m) {
  m.impl("soft_threshold", &soft_threshold_autograd);
  m.impl("soft_threshold.Tensor", &soft_threshold_tensor_autograd);
  m.impl("pixel_unshuffle_concat", &pixel_unshuffle_concat_autograd);
  m.impl("pixel_unshuffle_concat_backward", &pixel_unshuffle_concat_backward_autograd);
  m.impl("svt", &svt_autograd);
  m.impl("svt.Tensor", &svt_tensor_autograd);
  m.impl("rpca", &rpca_autograd);
}

}  // namespace pgsl
