// A tiny test harness: EXPECT* macros count failures instead of aborting, and
// run_groups() runs the groups named on the command line (all when none), so
// ctest can list one entry per group. No external framework.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>

namespace pgsl_test {

inline int& failures() {
  static int count = 0;
  return count;
}

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::fprintf(stderr, "%s:%d: FAILED %s\n", file, line, what.c_str());
}

template <typename A, typename B>
std::string describe(const char* a_text, const A& a, const char* op, const char* b_text, const B& b) {
  std::ostringstream out;
  out.precision(17);
  out << a_text << " " << op << " " << b_text << " (got " << a << " vs " << b << ")";
  return out.str();
}

// Equal as values, with NaN equal to NaN: what the kernels promise for NaN inputs.
template <typename T>
bool same_value(T a, T b) {
  return (a != a && b != b) || a == b;
}

// Set by a group that cannot run here (e.g. no GPU); the run then exits with kSkipped, which
// ctest reports as skipped (SKIP_RETURN_CODE), not passed.
constexpr int kSkipped = 77;
inline std::string& skip_reason() {
  static std::string reason;
  return reason;
}
inline void skip(const std::string& reason) { skip_reason() = reason; }

struct Group {
  const char* name;
  void (*run)();
};

// Runs the named groups (or all), prints a summary, returns the exit status.
// `--expect-groups a b ...` instead checks that a..., the groups the build
// registers with ctest, are exactly the groups defined here.
template <size_t N>
int run_groups(const Group (&groups)[N], int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--expect-groups") == 0) {
    bool same = argc - 2 == static_cast<int>(N);
    for (const Group& g : groups) {
      bool listed = false;
      for (int a = 2; a < argc; ++a) listed = listed || std::strcmp(argv[a], g.name) == 0;
      if (!listed) std::fprintf(stderr, "group %s is not registered with ctest\n", g.name);
      same = same && listed;
    }
    if (!same) std::fprintf(stderr, "the ctest group list and the groups in the source differ\n");
    return same ? 0 : 1;
  }
  int ran = 0;
  for (const Group& g : groups) {
    bool selected = argc < 2;
    for (int a = 1; a < argc; ++a) selected = selected || std::strcmp(argv[a], g.name) == 0;
    if (!selected) continue;
    const int before = failures();
    skip_reason().clear();
    g.run();
    if (!skip_reason().empty() && failures() == before)
      std::printf("[skip] %s: %s\n", g.name, skip_reason().c_str());
    else
      std::printf("[%s] %s\n", failures() == before ? "pass" : "FAIL", g.name);
    ++ran;
  }
  if (ran != (argc < 2 ? static_cast<int>(N) : argc - 1)) {
    std::fprintf(stderr, "unknown test group; groups are:");
    for (const Group& g : groups) std::fprintf(stderr, " %s", g.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  if (failures() > 0) std::fprintf(stderr, "%d check(s) failed\n", failures());
  if (failures() == 0 && ran == 1 && !skip_reason().empty()) return kSkipped;
  return failures() == 0 ? 0 : 1;
}

}  // namespace pgsl_test

#define EXPECT(cond)                                                  \
  do {                                                                \
    if (!(cond)) ::pgsl_test::fail(__FILE__, __LINE__, "EXPECT(" #cond ")"); \
  } while (0)

// a == b, printing both on failure.
#define EXPECT_EQ(a, b)                                                       \
  do {                                                                        \
    const auto pgsl_a_ = (a);                                                 \
    const auto pgsl_b_ = (b);                                                 \
    if (!(pgsl_a_ == pgsl_b_))                                                \
      ::pgsl_test::fail(__FILE__, __LINE__,                                   \
                        ::pgsl_test::describe(#a, pgsl_a_, "==", #b, pgsl_b_)); \
  } while (0)

// The same value, NaN counting as the same as NaN.
#define EXPECT_SAME(a, b)                                                     \
  do {                                                                        \
    const auto pgsl_a_ = (a);                                                 \
    const auto pgsl_b_ = (b);                                                 \
    if (!::pgsl_test::same_value(pgsl_a_, pgsl_b_))                           \
      ::pgsl_test::fail(__FILE__, __LINE__,                                   \
                        ::pgsl_test::describe(#a, pgsl_a_, "same as", #b, pgsl_b_)); \
  } while (0)
