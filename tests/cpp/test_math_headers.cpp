// Unit tests of the host-device math headers under csrc/include/pgsl/: the
// arithmetic the CPU and CUDA kernels share. Plain C++, no torch.
//   test_math_headers [group...]   (no group: all of them)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <limits>
#include <vector>

#include "check.h"
#include "pgsl/jsma.h"
#include "pgsl/pixel_unshuffle.h"
#include "pgsl/robust_pca.h"
#include "pgsl/shrinkage.h"
#include "pgsl/svd_jacobi.h"

namespace {

using pgsl::BlockReduce;

template <typename T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();
template <typename T>
constexpr T kInf = std::numeric_limits<T>::infinity();

// ---------------------------------------------------------------------------- soft_threshold

// The composite the kernels must match: sign(x) * max(|x| - tau, 0).
template <typename T>
T composite(T x, T tau) {
  const T sign = x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  return sign * std::fmax(std::fabs(x) - tau, T(0));
}

template <typename T>
void soft_threshold_value_cases() {
  using pgsl::soft_threshold_value;
  EXPECT_EQ(soft_threshold_value<T>(T(3), T(1)), T(2));
  EXPECT_EQ(soft_threshold_value<T>(T(-3), T(1)), T(-2));
  EXPECT_EQ(soft_threshold_value<T>(T(0.5), T(1)), T(0));
  EXPECT_EQ(soft_threshold_value<T>(T(-0.5), T(1)), T(0));
  // A shrunk negative value is -0.0, as sign(x) * 0 is in the composite.
  EXPECT(std::signbit(soft_threshold_value<T>(T(-0.5), T(1))));
  EXPECT(!std::signbit(soft_threshold_value<T>(T(0.5), T(1))));
  // zero
  EXPECT_EQ(soft_threshold_value<T>(T(0), T(1)), T(0));
  EXPECT_EQ(soft_threshold_value<T>(T(0), T(0)), T(0));
  // tau = 0 is the identity
  for (T x : {T(2.5), T(-2.5), T(1e-30), T(-7)}) EXPECT_EQ(soft_threshold_value<T>(x, T(0)), x);
  // the threshold boundary: |x| == tau gives 0, the next value above gives the gap
  EXPECT_EQ(soft_threshold_value<T>(T(1), T(1)), T(0));
  EXPECT_EQ(soft_threshold_value<T>(T(-1), T(1)), T(0));
  const T above = std::nextafter(T(1), T(2));
  EXPECT_EQ(soft_threshold_value<T>(above, T(1)), above - T(1));
  EXPECT_EQ(soft_threshold_value<T>(-above, T(1)), -(above - T(1)));
  EXPECT_EQ(soft_threshold_value<T>(std::nextafter(T(1), T(0)), T(1)), T(0));
  // NaN propagates (with any tau, including 0)
  EXPECT(std::isnan(soft_threshold_value<T>(kNaN<T>, T(1))));
  EXPECT(std::isnan(soft_threshold_value<T>(kNaN<T>, T(0))));
  EXPECT(std::isnan(soft_threshold_value<T>(-kNaN<T>, T(1))));
  // +-inf map to +-inf
  EXPECT_EQ(soft_threshold_value<T>(kInf<T>, T(1)), kInf<T>);
  EXPECT_EQ(soft_threshold_value<T>(-kInf<T>, T(1)), -kInf<T>);
  EXPECT_EQ(soft_threshold_value<T>(kInf<T>, T(0)), kInf<T>);
  // a huge tau zeroes everything finite
  EXPECT_EQ(soft_threshold_value<T>(T(5), T(1e30)), T(0));
  // agrees with the composite over a sweep of signs and magnitudes
  for (T tau : {T(0), T(0.25), T(1), T(3)})
    for (int k = -40; k <= 40; ++k) {
      const T x = T(k) * T(0.125);
      EXPECT_EQ(soft_threshold_value<T>(x, tau), composite<T>(x, tau));
    }
}

void soft_threshold_value_tests() {
  soft_threshold_value_cases<float>();
  soft_threshold_value_cases<double>();
}

template <typename T>
void soft_threshold_slope_cases() {
  using pgsl::soft_threshold_slope;
  EXPECT_EQ(soft_threshold_slope<T>(T(3), T(1)), T(1));
  EXPECT_EQ(soft_threshold_slope<T>(T(-3), T(1)), T(1));
  EXPECT_EQ(soft_threshold_slope<T>(T(0.5), T(1)), T(0));
  EXPECT_EQ(soft_threshold_slope<T>(T(-0.5), T(1)), T(0));
  // strictly outside [-tau, tau]: the boundary itself has slope 0
  EXPECT_EQ(soft_threshold_slope<T>(T(1), T(1)), T(0));
  EXPECT_EQ(soft_threshold_slope<T>(T(-1), T(1)), T(0));
  EXPECT_EQ(soft_threshold_slope<T>(std::nextafter(T(1), T(2)), T(1)), T(1));
  // tau = 0: 1 everywhere but at 0
  EXPECT_EQ(soft_threshold_slope<T>(T(0), T(0)), T(0));
  EXPECT_EQ(soft_threshold_slope<T>(T(1e-30), T(0)), T(1));
  EXPECT_EQ(soft_threshold_slope<T>(T(-1e-30), T(0)), T(1));
  // +-inf pass through; NaN compares false, so its slope is 0 (as x.abs() > tau in ops.py)
  EXPECT_EQ(soft_threshold_slope<T>(kInf<T>, T(1)), T(1));
  EXPECT_EQ(soft_threshold_slope<T>(-kInf<T>, T(1)), T(1));
  EXPECT_EQ(soft_threshold_slope<T>(kNaN<T>, T(1)), T(0));
}

void soft_threshold_slope_tests() {
  soft_threshold_slope_cases<float>();
  soft_threshold_slope_cases<double>();
}

// ---------------------------------------------------------------------------- pixel_unshuffle

void unshuffle_channel_tests() {
  // torch.nn.functional.pixel_unshuffle's order: channel c*f*f + i*f + j.
  for (int64_t f = 1; f <= 4; ++f) {
    const int64_t channels = 3;
    std::vector<int> hits(channels * f * f, 0);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < f; ++i)
        for (int64_t j = 0; j < f; ++j) {
          const int64_t out = pgsl::unshuffle_channel(c, i, j, f);
          EXPECT_EQ(out, c * f * f + i * f + j);
          if (out >= 0 && out < channels * f * f) ++hits[out];
        }
    for (int h : hits) EXPECT_EQ(h, 1);  // a bijection onto [0, C*f*f)
  }
  EXPECT_EQ(pgsl::unshuffle_channel(0, 0, 0, 2), int64_t{0});
  EXPECT_EQ(pgsl::unshuffle_channel(0, 0, 1, 2), int64_t{1});
  EXPECT_EQ(pgsl::unshuffle_channel(0, 1, 0, 2), int64_t{2});
  EXPECT_EQ(pgsl::unshuffle_channel(1, 0, 0, 2), int64_t{4});
  EXPECT_EQ(pgsl::unshuffle_channel(2, 2, 1, 3), int64_t{2 * 9 + 2 * 3 + 1});
}

// Block argmax over a contiguous row-major f x f block.
template <typename T>
int64_t argmax_of(const std::vector<T>& block, int64_t f) {
  return pgsl::block_argmax<T, T>(block.data(), f, 1, f);
}

void block_argmax_tests() {
  const float nan = kNaN<float>, inf = kInf<float>;
  EXPECT_EQ(argmax_of<float>({1, 5, 3, 2}, 2), int64_t{1});
  EXPECT_EQ(argmax_of<float>({9, 5, 3, 2}, 2), int64_t{0});
  EXPECT_EQ(argmax_of<float>({1, 5, 3, 8}, 2), int64_t{3});
  EXPECT_EQ(argmax_of<float>({-4, -2, -3, -9}, 2), int64_t{1});
  EXPECT_EQ(argmax_of<float>({42}, 1), int64_t{0});
  // ties keep the first, row-major
  EXPECT_EQ(argmax_of<float>({7, 7, 7, 7}, 2), int64_t{0});
  EXPECT_EQ(argmax_of<float>({1, 9, 9, 0}, 2), int64_t{1});
  EXPECT_EQ(argmax_of<float>({1, 2, 9, 9}, 2), int64_t{2});
  EXPECT_EQ(argmax_of<float>({0, 0, 0, 3, 1, 3, 3, 0, 2}, 3), int64_t{3});
  EXPECT_EQ(argmax_of<float>({-inf, -inf, -inf, -inf}, 2), int64_t{0});
  EXPECT_EQ(argmax_of<float>({-inf, 1, inf, inf}, 2), int64_t{2});
  // the first NaN wins, wherever the maximum is
  EXPECT_EQ(argmax_of<float>({nan, 1, 2, 3}, 2), int64_t{0});
  EXPECT_EQ(argmax_of<float>({1, nan, 5, nan}, 2), int64_t{1});
  EXPECT_EQ(argmax_of<float>({9, 1, nan, 2}, 2), int64_t{2});
  EXPECT_EQ(argmax_of<float>({inf, 1, 2, nan}, 2), int64_t{3});
  EXPECT_EQ(argmax_of<double>({0, 1, 2, 3, 4, 5, 6, nan, nan}, 3), int64_t{7});

  // Strided blocks: a 3x3 block at (1, 2) of a 5 x 7 row-major buffer (sh = 7, sw = 1),
  // every other column of it (sw = 2), and the transposed view (sh = 1, sw = 7).
  std::vector<double> buffer(5 * 7, 100.0);  // out-of-block values are larger: never read
  const int64_t W = 7, f = 3;
  double* origin = buffer.data() + 1 * W + 2;
  for (int64_t i = 0; i < f; ++i)
    for (int64_t j = 0; j < f; ++j) origin[i * W + j] = 0.0;
  origin[2 * W + 1] = 5.0;  // block (i=2, j=1)
  EXPECT_EQ((pgsl::block_argmax<double, double>(origin, W, 1, f)), int64_t{2 * f + 1});
  EXPECT_EQ((pgsl::block_argmax<double, double>(origin, 1, W, f)), int64_t{1 * f + 2});
  std::vector<double> wide(3 * 12, 100.0);  // sh = 12, sw = 2
  for (int64_t i = 0; i < f; ++i)
    for (int64_t j = 0; j < f; ++j) wide[i * 12 + j * 2] = double(i == 1 && j == 2 ? 3 : -1);
  EXPECT_EQ((pgsl::block_argmax<double, double>(wide.data(), 12, 2, f)), int64_t{1 * f + 2});
  wide[0 * 12 + 1 * 2] = kNaN<double>;
  EXPECT_EQ((pgsl::block_argmax<double, double>(wide.data(), 12, 2, f)), int64_t{1});
}

void block_mean_tests() {
  const std::vector<float> block{1, 2, 3, 4};
  EXPECT_EQ((pgsl::block_mean<float, float>(block.data(), 2, 1, 2)), 2.5f);
  EXPECT_EQ((pgsl::block_mean<float, double>(block.data(), 2, 1, 2)), 2.5);
  EXPECT_EQ((pgsl::block_mean<float, float>(block.data(), 2, 1, 1)), 1.0f);  // f = 1: the value
  // Summed in Acc, row-major: in float 1e8 + 1 rounds back to 1e8, in double it does not.
  const std::vector<float> cancel{1e8f, 1.0f, -1e8f, 1.0f};
  EXPECT_EQ((pgsl::block_mean<float, float>(cancel.data(), 2, 1, 2)), 0.25f);
  EXPECT_EQ((pgsl::block_mean<float, double>(cancel.data(), 2, 1, 2)), 0.5);
  // NaN and inf propagate
  const std::vector<float> with_nan{1, kNaN<float>, 2, 3}, with_inf{1, kInf<float>, 2, 3};
  EXPECT(std::isnan((pgsl::block_mean<float, float>(with_nan.data(), 2, 1, 2))));
  EXPECT_EQ((pgsl::block_mean<float, float>(with_inf.data(), 2, 1, 2)), kInf<float>);
  // strided: the transposed view of a 3x3 block has the same mean
  std::vector<double> b3(3 * 5, 1000.0);
  double sum = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) sum += (b3[i * 5 + j] = double(i * 3 + j) * 0.5);
  EXPECT_EQ((pgsl::block_mean<double, double>(b3.data(), 5, 1, 3)), sum / 9);
  EXPECT_EQ((pgsl::block_mean<double, double>(b3.data(), 1, 5, 3)), sum / 9);
}

void block_reduce_tests() {
  const std::vector<float> block{1, 6, 3, 2};
  EXPECT_EQ((pgsl::block_reduce<float, float>(block.data(), 2, 1, 2, BlockReduce::Max)), 6.0f);
  EXPECT_EQ((pgsl::block_reduce<float, float>(block.data(), 2, 1, 2, BlockReduce::Mean)), 3.0f);
  // Max returns the stored element; Mean rounds the Acc mean back to T once.
  const std::vector<float> thirds{1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  EXPECT_EQ((pgsl::block_reduce<float, double>(thirds.data(), 3, 1, 3, BlockReduce::Mean)),
           static_cast<float>(1.0 / 9.0));
  const std::vector<float> with_nan{1, kNaN<float>, 9, 2};
  EXPECT(std::isnan((pgsl::block_reduce<float, float>(with_nan.data(), 2, 1, 2, BlockReduce::Max))));
  // strided (sh = 4, sw = 2): picks the block's values only
  const std::vector<double> strided{1, -1, 8, -1, -1, -1, -1, -1, 3, -1, 4, -1};
  EXPECT_EQ((pgsl::block_reduce<double, double>(strided.data(), 8, 2, 2, BlockReduce::Max)), 8.0);
  EXPECT_EQ((pgsl::block_reduce<double, double>(strided.data(), 8, 2, 2, BlockReduce::Mean)), 4.0);
}

// ---------------------------------------------------------------------------- jsma

// jsma_pair: validity is "both oriented sums > 0 and a finite score"; the score is
// su * sv in T, equal to the spec's -a * b.
template <typename T>
void jsma_pair_cases() {
  T score;
  EXPECT(pgsl::jsma_pair<T>(T(1), T(2), T(3), T(4), score));
  EXPECT_EQ(score, T(4) * T(6));
  EXPECT(!pgsl::jsma_pair<T>(T(1), T(2), T(-1), T(4), score));  // su == 0: not > 0
  EXPECT(!pgsl::jsma_pair<T>(T(1), T(-2), T(3), T(1), score));  // sv < 0
  EXPECT(!pgsl::jsma_pair<T>(kNaN<T>, T(2), T(3), T(4), score));
  EXPECT(!pgsl::jsma_pair<T>(T(1), kInf<T>, T(3), T(4), score));
  EXPECT(!pgsl::jsma_pair<T>(-kInf<T>, -kInf<T>, T(3), T(4), score));  // outside the domain
  const T big = std::numeric_limits<T>::max() / 2;
  bool overflow = false;
  EXPECT(!pgsl::jsma_pair_overflow<T>(big, big, big, big, score, overflow));
  EXPECT(overflow);
  EXPECT(!pgsl::jsma_pair_overflow<T>(T(1), T(-1), T(0), T(0), score, overflow));
  EXPECT(!overflow);
  // underflow: a valid pair scoring exactly +0
  const T tiny = std::numeric_limits<T>::denorm_min();
  EXPECT(pgsl::jsma_pair<T>(tiny, tiny, T(0), T(0), score));
  EXPECT_EQ(score, T(0));
  EXPECT_EQ(pgsl::jsma_masked_score<T>(T(1), T(-2), T(3), T(1)), -kInf<T>);
  // the spec's form: a = gc_p + gc_q, b = go_p + go_q, score = -a * b, in both modes
  std::mt19937 rng(3);
  std::normal_distribution<T> normal;
  for (int k = 0; k < 2000; ++k) {
    const T gcp = normal(rng), gcq = normal(rng), gop = normal(rng), goq = normal(rng);
    for (bool targeted : {true, false}) {
      T up, vp, uq, vq;
      pgsl::jsma_orient<T>(gcp, gop, true, targeted, up, vp);
      pgsl::jsma_orient<T>(gcq, goq, true, targeted, uq, vq);
      const T a = gcp + gcq, b = gop + goq;
      const bool valid = targeted ? (a > 0 && b < 0) : (a < 0 && b > 0);
      EXPECT_EQ(pgsl::jsma_pair<T>(up, vp, uq, vq, score), valid);
      if (valid) EXPECT_EQ(score, -a * b);
    }
  }
}

void jsma_pair_tests() {
  jsma_pair_cases<float>();
  jsma_pair_cases<double>();
}

// jsma_orient: signs per mode; NaN/Inf and features outside the domain become (-inf, -inf).
void jsma_orient_tests() {
  float u, v;
  pgsl::jsma_orient<float>(2.0f, 3.0f, true, true, u, v);
  EXPECT_EQ(u, 2.0f);
  EXPECT_EQ(v, -3.0f);
  pgsl::jsma_orient<float>(2.0f, 3.0f, true, false, u, v);
  EXPECT_EQ(u, -2.0f);
  EXPECT_EQ(v, 3.0f);
  for (const float bad : {kNaN<float>, kInf<float>, -kInf<float>}) {
    pgsl::jsma_orient<float>(bad, 1.0f, true, true, u, v);
    EXPECT(u == -kInf<float> && v == -kInf<float>);
    pgsl::jsma_orient<float>(1.0f, bad, true, false, u, v);
    EXPECT(u == -kInf<float> && v == -kInf<float>);
  }
  pgsl::jsma_orient<float>(1.0f, 1.0f, false, true, u, v);
  EXPECT(u == -kInf<float> && v == -kInf<float>);
}

// jsma_bound(p) >= the score of every valid pair (p, q) when U >= u[q] and V >= v[q], and
// -inf exactly when no pair containing p can be valid.
void jsma_bound_tests() {
  std::mt19937 rng(7);
  std::cauchy_distribution<float> heavy;
  for (int row = 0; row < 200; ++row) {
    std::vector<float> u(40), v(40);
    for (size_t k = 0; k < u.size(); ++k) {
      u[k] = heavy(rng);
      v[k] = heavy(rng);
    }
    const float U = *std::max_element(u.begin(), u.end());
    const float V = *std::max_element(v.begin(), v.end());
    for (size_t p = 0; p < u.size(); ++p) {
      const float bound = pgsl::jsma_bound<float>(u[p], v[p], U, V);
      bool any = false;
      for (size_t q = 0; q < u.size(); ++q) {
        float score;
        if (q != p && pgsl::jsma_pair<float>(u[p], v[p], u[q], v[q], score)) {
          EXPECT(bound >= score);
          any = true;
        }
      }
      if (any) EXPECT(bound > -kInf<float>);
    }
  }
}

// The tie rule and the dominance order.
void jsma_order_tests() {
  using pgsl::jsma_better;
  EXPECT(jsma_better<float>(2.0f, 9, 1.0f, 0));
  EXPECT(!jsma_better<float>(1.0f, 0, 2.0f, 9));
  EXPECT(jsma_better<float>(2.0f, 3, 2.0f, 4));   // same score: the smaller key
  EXPECT(!jsma_better<float>(2.0f, 4, 2.0f, 3));
  EXPECT(!jsma_better<float>(2.0f, 4, 2.0f, 4));  // strict
  EXPECT(jsma_better<float>(0.0f, 5, -kInf<float>, pgsl::kJsmaNoKey));  // anything beats "none"
  EXPECT(!jsma_better<float>(-kInf<float>, pgsl::kJsmaNoKey, -kInf<float>, pgsl::kJsmaNoKey));
  EXPECT_EQ(pgsl::jsma_key(3, 7, 10), int64_t{37});
  EXPECT_EQ(pgsl::jsma_key(7, 3, 10), int64_t{37});
  const int64_t n = int64_t{3} * 224 * 224;
  EXPECT_EQ(pgsl::jsma_key(n - 2, n - 1, n), (n - 2) * n + (n - 1));  // past 32 bits
  using pgsl::jsma_dominates;
  EXPECT(jsma_dominates<float>(2, 2, 5, 1, 1, 0));
  EXPECT(jsma_dominates<float>(2, 1, 5, 1, 1, 0));
  EXPECT(!jsma_dominates<float>(2, 0, 5, 1, 1, 0));
  EXPECT(jsma_dominates<float>(1, 1, 0, 1, 1, 5));   // duplicates: the smaller index first
  EXPECT(!jsma_dominates<float>(1, 1, 5, 1, 1, 0));
  EXPECT(!jsma_dominates<float>(1, 1, 3, 1, 1, 3));  // irreflexive
  EXPECT(pgsl::jsma_worth_visiting<float>(2.0f, true, 2.0f));  // a tie may still win on its key
  EXPECT(!pgsl::jsma_worth_visiting<float>(std::nextafter(2.0f, 0.0f), true, 2.0f));
  EXPECT(!pgsl::jsma_worth_visiting<float>(-kInf<float>, false, 0.0f));
}

// unshuffle_run scatters a run of f inputs to f outputs channel_stride apart; shuffle_run
// gathers them back.
void run_tests() {
  {
    const int64_t f = 3, run_stride = 2, channel_stride = 5;
    std::vector<int> run{10, -1, 11, -1, 12, -1};
    std::vector<int> out(channel_stride * f, -7);
    pgsl::unshuffle_run<int>(run.data(), run_stride, out.data(), channel_stride, f);
    for (int64_t k = 0; k < channel_stride * f; ++k)
      EXPECT_EQ(out[k], k % channel_stride == 0 ? 10 + int(k / channel_stride) : -7);
    std::vector<int> back(run.size(), 0);
    pgsl::shuffle_run<int>(out.data(), channel_stride, back.data(), run_stride, f);
    for (int64_t j = 0; j < f; ++j) EXPECT_EQ(back[j * run_stride], run[j * run_stride]);
  }
  // A whole pixel_unshuffle of x (C, H, W) with the kernels' loop structure, then its inverse.
  const int64_t C = 2, H = 6, W = 9, f = 3, Ho = H / f, Wo = W / f, plane = Ho * Wo;
  std::vector<float> x(C * H * W), out(C * f * f * plane, kNaN<float>), back(x.size(), kNaN<float>);
  for (size_t k = 0; k < x.size(); ++k) x[k] = float(k) - 17.5f;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t wo = 0; wo < Wo; ++wo) {
        float* dst = out.data() + pgsl::unshuffle_channel(c, h % f, 0, f) * plane + (h / f) * Wo + wo;
        pgsl::unshuffle_run<float>(x.data() + (c * H + h) * W + wo * f, 1, dst, plane, f);
      }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < f; ++i)
      for (int64_t j = 0; j < f; ++j)
        for (int64_t ho = 0; ho < Ho; ++ho)
          for (int64_t wo = 0; wo < Wo; ++wo)
            EXPECT_EQ(out[pgsl::unshuffle_channel(c, i, j, f) * plane + ho * Wo + wo],
                     x[(c * H + ho * f + i) * W + wo * f + j]);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const float* src =
            out.data() + pgsl::unshuffle_channel(c, h % f, 0, f) * plane + (h / f) * Wo + wo;
        pgsl::shuffle_run<float>(src, plane, back.data() + (c * H + h) * W + wo * f, 1, f);
      }
  for (size_t k = 0; k < x.size(); ++k) EXPECT_SAME(back[k], x[k]);
}


// ---------------------------------------------------------------------------- Jacobi SVT

template <typename T>
void jacobi_rotation_cases() {
  // The rotation makes the pair orthogonal: a_i' . a_j' = 0.
  const T ai[3] = {T(1), T(2), T(3)}, aj[3] = {T(2), T(0), T(-1.5)};
  T alpha = 0, beta = 0, gamma = 0;
  for (int r = 0; r < 3; ++r) {
    alpha += ai[r] * ai[r];
    beta += aj[r] * aj[r];
    gamma += ai[r] * aj[r];
  }
  T c, s;
  EXPECT(pgsl::jacobi_rotation<T>(alpha, beta, gamma, pgsl::jacobi_tolerance<T>(3), c, s));
  EXPECT(std::fabs(c * c + s * s - T(1)) < T(8) * pgsl::Epsilon<T>::value);
  T dot = 0;
  for (int r = 0; r < 3; ++r) dot += (c * ai[r] - s * aj[r]) * (s * ai[r] + c * aj[r]);
  EXPECT(std::fabs(dot) < T(64) * pgsl::Epsilon<T>::value);
  // Orthogonal columns, and zero columns, are left alone (c = 1, s = 0).
  EXPECT(!pgsl::jacobi_rotation<T>(T(4), T(9), T(0), pgsl::jacobi_tolerance<T>(3), c, s));
  EXPECT_EQ(c, T(1));
  EXPECT_EQ(s, T(0));
  EXPECT(!pgsl::jacobi_rotation<T>(T(0), T(0), T(0), pgsl::jacobi_tolerance<T>(3), c, s));
}

void jacobi_rotation_tests() {
  jacobi_rotation_cases<float>();
  jacobi_rotation_cases<double>();
}

// Each round of the round-robin ordering is a set of disjoint pairs, and a sweep's rounds meet
// every pair of columns exactly once (the group design's sweeps rest on both).
void round_robin_pair_tests() {
  for (int n_even = 2; n_even <= pgsl::kJacobiMaxN; n_even += 2) {
    std::vector<int> met(n_even * n_even, 0);
    for (int round = 0; round + 1 < n_even; ++round) {
      std::vector<int> used(n_even, 0);
      for (int p = 0; p < n_even / 2; ++p) {
        int i = -1, j = -1;
        pgsl::round_robin_pair(n_even, round, p, i, j);
        EXPECT(0 <= i && i < j && j < n_even);
        if (!(0 <= i && i < j && j < n_even)) return;
        used[i] += 1;
        used[j] += 1;
        met[i * n_even + j] += 1;
      }
      for (int c = 0; c < n_even; ++c) EXPECT_EQ(used[c], 1);
    }
    for (int i = 0; i < n_even; ++i)
      for (int j = i + 1; j < n_even; ++j) EXPECT_EQ(met[i * n_even + j], 1);
  }
}

void svt_scalars_tests() {
  EXPECT_EQ(pgsl::svt_shrink_factor<double>(4.0, 1.0), 0.75);
  EXPECT_EQ(pgsl::svt_shrink_factor<double>(1.0, 1.0), 0.0);
  EXPECT_EQ(pgsl::svt_shrink_factor<double>(0.0, 0.0), 0.0);  // no 0/0
  // Exact power-of-two rescale into [0.5, 1).
  for (double v : {1e-300, 3e-20, 0.75, 1.0, 5.0, 1e20, 1e300}) {
    const double scaled = v * pgsl::exact_scale_for<double>(v);
    EXPECT(scaled >= 0.5 && scaled < 1.0);
  }
  EXPECT_EQ(pgsl::exact_scale_for<float>(0.0f), 1.0f);
  // The scale stays a normal number: the top binade lands in [2, 4), subnormals in [2^-22, 1).
  EXPECT_EQ(pgsl::exact_scale_for<float>(3e38f) * 3e38f < 4.0f, true);
  EXPECT_EQ(pgsl::exact_scale_for<float>(3e38f) >= std::numeric_limits<float>::min(), true);
  for (float v : {1e-45f, 1e-41f, 1e-39f}) {
    const float scale = pgsl::exact_scale_for<float>(v);
    EXPECT(std::isfinite(scale) && v * scale >= 0x1p-22f && v * scale < 1.0f);
  }
  EXPECT(std::isfinite(pgsl::exact_scale_for<double>(4.9e-324)));
}

// svt of U diag(s) V^T with known U, V: the result must be U diag(max(s - tau, 0)) V^T.
template <typename T, int L>
void svt_group_known_spectrum(bool wide) {
  const int64_t m = wide ? 3 : 5, n = wide ? 5 : 3;
  const int64_t M = 5, N = 3;
  // Columns of a 5 x 3 orthonormal U (scaled Hadamard-like rows) and V = 3 x 3 permutation-sign.
  const T u[5][3] = {{T(0.5), T(0.5), T(0.5)}, {T(0.5), T(-0.5), T(0.5)}, {T(0.5), T(0.5), T(-0.5)},
                     {T(0.5), T(-0.5), T(-0.5)}, {T(0), T(0), T(0)}};
  const T v[3][3] = {{T(0), T(1), T(0)}, {T(0), T(0), T(-1)}, {T(1), T(0), T(0)}};
  const T sigma[3] = {T(5), T(3), T(0.5)}, tau = T(1);
  auto entry = [&](int64_t r, int64_t c, bool shrink) {  // work coordinates, 5 x 3
    T acc = 0;
    for (int k = 0; k < 3; ++k) {
      const T s = shrink ? (sigma[k] > tau ? sigma[k] - tau : T(0)) : sigma[k];
      acc += u[r][k] * s * v[c][k];
    }
    return acc;
  };
  std::vector<T> A(M * N * L), V(N * N * L), out(L * m * n, T(-7));
  std::vector<T> taus(L, tau);
  std::vector<int> kept(L, -1);
  auto load = [&](int, int64_t r, int64_t c) { return entry(r, c, false); };
  auto store = [&](int l, int64_t r, int64_t c, T value) {
    // Work coordinates (r, c) of a wide input are its (c, r).
    out[l * m * n + (wide ? c * n + r : r * n + c)] = value;
  };
  const int sweeps = pgsl::svt_group<T, L>(M, N, load, store, taus.data(), A.data(), V.data(),
                                           kept.data(), pgsl::kJacobiMaxSweeps);
  EXPECT(sweeps >= 1 && sweeps < pgsl::kJacobiMaxSweeps);
  const T tol = T(16) * pgsl::Epsilon<T>::value * T(5);
  for (int l = 0; l < L; ++l) {
    EXPECT_EQ(kept[l], 2);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < N; ++c)
        EXPECT(std::fabs(out[l * m * n + (wide ? c * n + r : r * n + c)] - entry(r, c, true)) < tol);
  }
}

void svt_group_tests() {
  svt_group_known_spectrum<float, 1>(false);
  svt_group_known_spectrum<float, 16>(false);
  svt_group_known_spectrum<double, 1>(true);
  svt_group_known_spectrum<double, 8>(true);
}

void svt_group_non_finite_lane_tests() {
  // Lane 1 holds a NaN: its output is all-NaN, lane 0's is unaffected.
  const int64_t M = 2, N = 2;
  const double x[2][4] = {{3, 0, 0, 1}, {3, 0, kNaN<double>, 1}};  // column-major M x N
  std::vector<double> A(M * N * 2), V(N * N * 2), out(8);
  const double taus[2] = {0.5, 0.5};
  auto load = [&](int l, int64_t r, int64_t c) { return x[l][c * M + r]; };
  auto store = [&](int l, int64_t r, int64_t c, double v) { out[l * 4 + c * M + r] = v; };
  pgsl::svt_group<double, 2>(M, N, load, store, taus, A.data(), V.data(), nullptr,
                             pgsl::kJacobiMaxSweeps);
  EXPECT(std::fabs(out[0] - 2.5) < 1e-15 && std::fabs(out[3] - 0.5) < 1e-15);
  EXPECT(out[1] == 0.0 && out[2] == 0.0);
  for (int k = 4; k < 8; ++k) EXPECT(std::isnan(out[k]));
}

void rpca_step_tests() {
  // For both methods: a zero matrix converges after one iteration with a zero residual (no
  // 0/0); a rank-one matrix keeps most of itself in L; a warm start at the solution converges
  // in one iteration.
  const int64_t M = 3, N = 2;
  const double rank_one[3][2] = {{1, 2}, {2, 4}, {3, 6}};
  const double lam = 1.0 / std::sqrt(3.0);
  auto zero = [](int64_t, int64_t) { return 0.0; };
  auto matrix = [&](int64_t r, int64_t c) { return rank_one[r][c]; };
  for (pgsl::RpcaMethod method : {pgsl::RpcaMethod::kAlternating, pgsl::RpcaMethod::kApg}) {
    std::vector<double> w(pgsl::RpcaLanes<double, 2>::workspace(M, N));
    pgsl::RpcaLanes<double, 2> s;
    s.bind(w.data(), M, N);
    pgsl::rpca_load_lane<double, 2>(s, 0, M, N, zero, zero, false, 0.55, false);
    pgsl::rpca_load_lane<double, 2>(s, 1, M, N, matrix, zero, false, 0.55, false);
    bool done[2] = {false, false}, converged[2] = {false, false};
    pgsl::rpca_step<double, 2>(method, s, M, N, lam, false, 1e-8, 5000, pgsl::kJacobiMaxSweeps, done,
                               converged);
    EXPECT(done[0] && converged[0]);
    EXPECT_EQ(s.iter[0], int64_t(1));
    int guard = 0;
    while (!done[1] && ++guard < 6000)
      pgsl::rpca_step<double, 2>(method, s, M, N, lam, false, 1e-8, 5000, pgsl::kJacobiMaxSweeps,
                                 done, converged);
    EXPECT(converged[1]);
    double low = 0, total = 0, solution[3][2];
    pgsl::rpca_store_lane<double, 2>(s, 1, M, N, [&](int64_t r, int64_t c, double l, double sp) {
      low += l * rank_one[r][c];
      total += rank_one[r][c] * rank_one[r][c];
      solution[r][c] = sp;
    });
    EXPECT(low > 0.8 * total);  // 0.85 for this matrix, as the Python reference gives
    if (method == pgsl::RpcaMethod::kAlternating) {
      pgsl::rpca_load_lane<double, 2>(s, 1, M, N, matrix, [&](int64_t r, int64_t c) { return solution[r][c]; },
                                      true, 0.55, false);
      pgsl::rpca_step<double, 2>(method, s, M, N, lam, false, 1e-8, 5000, pgsl::kJacobiMaxSweeps, done,
                                 converged);
      EXPECT(done[1] && converged[1]);
    }
  }
  EXPECT(pgsl::rpca_tolerance_floor(true) > pgsl::rpca_tolerance_floor(false));
}

}  // namespace

int main(int argc, char** argv) {
  static const pgsl_test::Group groups[] = {
      {"soft_threshold_value", soft_threshold_value_tests},
      {"soft_threshold_slope", soft_threshold_slope_tests},
      {"unshuffle_channel", unshuffle_channel_tests},
      {"block_argmax", block_argmax_tests},
      {"block_mean", block_mean_tests},
      {"block_reduce", block_reduce_tests},
      {"unshuffle_runs", run_tests},
      {"jsma_pair", jsma_pair_tests},
      {"jsma_orient", jsma_orient_tests},
      {"jsma_bound", jsma_bound_tests},
      {"jsma_order", jsma_order_tests},
      {"jacobi_rotation", jacobi_rotation_tests},
      {"round_robin_pair", round_robin_pair_tests},
      {"svt_scalars", svt_scalars_tests},
      {"svt_group", svt_group_tests},
      {"svt_group_non_finite_lane", svt_group_non_finite_lane_tests},
      {"rpca_step", rpca_step_tests},
  };
  return pgsl_test::run_groups(groups, argc, argv);
}
