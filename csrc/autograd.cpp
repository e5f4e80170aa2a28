// Autograd for the differentiable ops, registered at the Autograd key in C++:
// a Python autograd kernel (torch.library.register_autograd) costs ~6 us per
// call even when nothing requires grad, which is as much as the whole op on a
// small tensor. The backward formulas are written with ATen ops, so they are
// themselves differentiable (double backward of soft_threshold works).
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

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
// the mean) for saliency: the backward op, once differentiable.
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

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, Autograd, m) {
  m.impl("soft_threshold", &soft_threshold_autograd);
  m.impl("soft_threshold.Tensor", &soft_threshold_tensor_autograd);
  m.impl("pixel_unshuffle_concat", &pixel_unshuffle_concat_autograd);
}

}  // namespace pgsl
