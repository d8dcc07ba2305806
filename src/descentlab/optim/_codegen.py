"""C++ for a traced rule (:mod:`._trace`): one call walks every tensor of a group, one pass each.

The generated ``dl_fused_step`` takes a table with one row per tensor (its element count, the address
of each of its tensors — parameter, gradient, buffers — its ``state['step']`` and the row of
hyper-parameters it uses), column-major (:data:`META_FIXED`), and

1. for each row in order, increments ``state['step']`` in place in its own dtype (as
   ``state['step'] += 1`` does) and records t — once per row, on the calling thread, before any update;
2. splits the rows' elements, taken in order as one sequence, into one run per thread (``threads``, at
   most one per ``grain`` elements), each cut moved down to a multiple of ``BLOCK`` from its row's
   start, and on each thread (OpenMP, on the runtime torch has loaded) for each piece of a row:
   evaluates the scalar program in double precision when t or the hyper-parameter row changed, in the
   order Python evaluates it (``std::pow`` is the C library's ``pow``, as Python's ``**``), and runs
   the element program over the piece in one vectorisable loop: read each input once, write each
   output once. Every block is the one a single thread would compute, so the bits do not depend on
   the thread count.

Each element op is the formula of torch's CPU kernel for it (torch 2.13, AVX2/AVX-512 builds), in the
tensor's dtype, with its scalar cast to that dtype as torch casts it: ``add(x, y, alpha)`` is
``fma(y, alpha, x)``; ``lerp`` is ``fma(w < 0.5 ? w : w - 1, end - x, w < 0.5 ? x : end)``;
``addcmul`` is ``fma(v·a, b, x)`` and ``addcdiv`` ``x + (v·a)/b``; ``sqrt``, ``/`` are IEEE.
Compiled with ``-ffp-contract=off`` (no multiply-add the source does not spell) and ``-fno-math-errno``
(so ``sqrt`` vectorises; it changes no result), so the numbers are the core's to the bit; the fused
path checks that on each new kernel before using it (:mod:`._fused`).

Before any update, rows whose memory overlaps another row's (or whose parameter overlaps its own
gradient or buffers) are flagged and skipped: the caller steps them on the core, in order.

Built with ``torch.utils.cpp_extension.load`` (a plain shared library, no Python binding, so it
compiles in about a second) into torch's extension cache and called through ``ctypes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ._trace import Program

ABI_VERSION = 10
"""Bumped whenever the table layout or the generated code's meaning changes."""

META_FIXED = 4
"""The table is column-major (column c of row r at ``c * rows + r``: one column per field, built in
Python from whole lists at once; a one-row table reads the same either way). Per row: element count,
address of state['step'] (0: none), its kind (0 none, 1 float32, 2 float64; a non-zero address with kind 0
is refused), hyper-parameter row; then one address per slot."""

PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
template <typename T> inline T dl_max(T a, T b) { return (a != a) ? a : ((b != b) ? b : (a > b ? a : b)); }
template <typename T> inline T dl_min(T a, T b) { return (a != a) ? a : ((b != b) ? b : (a < b ? a : b)); }
// torch.clamp with one bound: a NaN bound gives NaN, a NaN stays, and an element equal to the bound is kept
// (clamp(-0.0, min=0.0) is -0.0, where maximum would give the bound)
template <typename T> inline T dl_clamp_min(T a, T low) { return (low != low) ? low : (a < low ? low : a); }
template <typename T> inline T dl_clamp_max(T a, T high) { return (high != high) ? high : (a > high ? high : a); }
template <typename T> inline T dl_sign(T a) { return static_cast<T>(T(0) < a) - static_cast<T>(a < T(0)); }

constexpr int64_t BLOCK = 512, EMULATED_BLOCK = 128;

constexpr unsigned long long EMULATE_ROOT = 1ull << 40, IEEE_ROOT = 1ull << 41;

#if defined(__AVX2__)
// MKL's float32 high-accuracy vector root on its SSE/AVX code paths (the one torch's sqrt runs where MKL
// does not take its AVX2 path, e.g. on AMD CPUs): y = rsqrt(x) (the hardware estimate), s = x*y, h = y/2,
// r = 1/2 - s*h, s' = s + s*r, h' = h + h*r, d = x - s'*s', root = s' + d*h' -- one Newton step on the
// root and its half-reciprocal, then one correction, every product and sum rounded to float32 apart
// (no fused multiply-add). Not correctly rounded (up to 1 ulp); the same bits as MKL's, checked over
// every float32 of [1, 4) against torch.sqrt before it is used (_selfcheck.root_problem).
inline __m256 emulated_root8(__m256 x) {
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 y = _mm256_rsqrt_ps(x);
  __m256 s = _mm256_mul_ps(x, y);
  __m256 h = _mm256_mul_ps(y, half);
  const __m256 r = _mm256_sub_ps(half, _mm256_mul_ps(s, h));
  s = _mm256_add_ps(_mm256_mul_ps(s, r), s);
  h = _mm256_add_ps(_mm256_mul_ps(h, r), h);
  const __m256 d = _mm256_sub_ps(x, _mm256_mul_ps(s, s));
  return _mm256_add_ps(_mm256_mul_ps(d, h), s);
}

// Lanes outside [2^-96, 2^126): zero, subnormal, negative, huge, infinite, NaN. There the emulation's
// intermediates could underflow (and a flush-to-zero mode would change them) or overflow, and a
// denormals-are-zero mode would change even the IEEE root (MKL's function sets its own mode): such a
// block goes to MKL.
inline __m256i outside_root_range(__m256 x) {
  const __m256i low = _mm256_set1_epi32(0x0f800000 - 1), high = _mm256_set1_epi32(0x7e7fffff);
  const __m256i bits = _mm256_castps_si256(x);
  return _mm256_or_si256(_mm256_cmpgt_epi32(low, bits), _mm256_cmpgt_epi32(bits, high));
}

inline __m256 root8(__m256 x, bool emulate) { return emulate ? emulated_root8(x) : _mm256_sqrt_ps(x); }

// The roots of in[0..m) into out, emulated or IEEE; false (out then unspecified) when any input is
// outside the range.
inline bool vector_root(int m, const float* in, float* out, bool emulate) {
  __m256i outside = _mm256_setzero_si256();
  int i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256 x = _mm256_loadu_ps(in + i);
    outside = _mm256_or_si256(outside, outside_root_range(x));
    _mm256_storeu_ps(out + i, root8(x, emulate));
  }
  if (i < m) {  // the tail, padded with ones (each lane's root is its own)
    alignas(32) float a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[8];
    for (int k = 0; i + k < m; ++k) a[k] = in[i + k];
    const __m256 x = _mm256_load_ps(a);
    outside = _mm256_or_si256(outside, outside_root_range(x));
    _mm256_store_ps(b, root8(x, emulate));
    for (int k = 0; i + k < m; ++k) out[i + k] = b[k];
  }
  return _mm256_testz_si256(outside, outside);
}
#endif

// Square roots of one block: torch's vector function fn (MKL's, called with torch's mode), in float32
// its emulation (mode has EMULATE_ROOT) or the IEEE root where that is torch's (IEEE_ROOT) -- a block
// with an input outside their range goes to fn -- or, with no fn, the IEEE root.
template <typename T>
inline void block_sqrt(int m, const T* in, T* out, void* fn, unsigned long long mode) {
#if defined(__AVX2__)
  if constexpr (std::is_same<T, float>::value) {
    if ((mode & (EMULATE_ROOT | IEEE_ROOT)) && vector_root(m, in, out, mode & EMULATE_ROOT)) return;
  }
#endif
  mode &= ~(EMULATE_ROOT | IEEE_ROOT);
  if (fn != nullptr) {
    reinterpret_cast<void (*)(int, const T*, T*, unsigned long long)>(fn)(m, in, out, mode);
  } else {
    for (int i = 0; i < m; ++i) out[i] = std::sqrt(in[i]);
  }
}

struct Span { uintptr_t start, end; int64_t row; bool written; };

void flag_overlaps(int64_t n, int64_t stride, const int64_t* meta, int64_t slots, int64_t itemsize,
                   const bool* written, int8_t* reject) {
  std::vector<Span> spans;
  spans.reserve(static_cast<size_t>(n * slots));
  for (int64_t r = 0; r < n; ++r) {
    const int64_t* m = meta + r * stride;
    if (m[0] <= 0) continue;
    for (int64_t k = 0; k < slots; ++k) {
      uintptr_t a = static_cast<uintptr_t>(m[4 + k]);
      spans.push_back(Span{a, a + static_cast<uintptr_t>(m[0] * itemsize), r, written[k]});
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
  std::vector<Span> active;
  for (const Span& s : spans) {
    active.erase(std::remove_if(active.begin(), active.end(), [&](const Span& a) { return a.end <= s.start; }),
                 active.end());
    for (const Span& a : active) {
      if (a.written || s.written) { reject[a.row] = 1; reject[s.row] = 1; }
    }
    active.push_back(s);
  }
}
}  // namespace
"""


def _c_double(value: float) -> str:
    if value != value:
        return "NAN"
    if value in (float("inf"), float("-inf")):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return f"{float(value).hex()}"


def _scalar_code(program: Program) -> list[str]:
    lines = []
    for i, (op, args) in enumerate(program.scalar_ops):
        if op == "hyper":
            expr = f"h[{args[0]}]"
        elif op == "step":
            expr = "t"
        elif op == "const":
            expr = _c_double(args[0])
        elif op == "neg":
            expr = f"-s[{args[0]}]"
        elif op == "abs":
            expr = f"std::fabs(s[{args[0]}])"
        elif op == "pow":
            expr = f"std::pow(s[{args[0]}], s[{args[1]}])"
        else:
            expr = f"s[{args[0]}] {dict(add='+', sub='-', mul='*', div='/')[op]} s[{args[1]}]"
        lines.append(f"  s[{i}] = {expr};")
    return lines


def _stages(program: Program, staged: bool) -> tuple[dict[int, int], set[int], dict[int, int]]:
    """Each element node's stage, the nodes kept in a block buffer, and the stage each output slot is
    written in. A square root is computed between stages, by one call over the block (torch's own vector
    ``sqrt``, see the module docstring), so a node's stage is that of its latest input, plus one after a
    square root; a node read in a later stage (or by a square root, or stored from an earlier stage)
    lives in a buffer of one block. An output is written in the stage that computes it unless a later
    stage still reads the slot's old value (then in the last): fewer buffers for the last stage."""
    ops = program.element_ops
    stage: dict[int, int] = {}
    for j, (op, args) in enumerate(ops):
        deps = [index for kind, index in args if kind == "e"] if op != "input" else []
        level = max((stage[d] for d in deps), default=0)
        stage[j] = level + 1 if op == "sqrt" and staged else level
    last = max(stage.values(), default=0)
    buffered = {j for j, (op, _) in enumerate(ops) if op == "sqrt" and staged}
    for j, (op, args) in enumerate(ops):
        if op == "input":
            continue
        for kind, d in args:
            if kind == "e" and ops[d][0] != "input" and (stage[d] < stage[j] or (op == "sqrt" and staged)):
                buffered.add(d)
    read_until: dict[int, int] = {}  # slot -> the last stage that reads its old value
    for j, (op, args) in enumerate(ops):
        for kind, d in args if op != "input" else []:
            if kind == "e" and ops[d][0] == "input":
                slot = ops[d][1][0]
                read_until[slot] = max(read_until.get(slot, 0), stage[j])
    stores: dict[int, int] = {}
    for slot, node in program.outputs.items():
        early = stage[node] if ops[node][0] != "input" else last
        stores[slot] = early if read_until.get(slot, 0) <= early else last
        if ops[node][0] != "input" and stage[node] < stores[slot]:
            buffered.add(node)
    return stage, buffered, stores


def _expression(op: str, a: list[str], j: int, hoisted: dict[str, str]) -> str:
    """One element op as torch's CPU kernel computes it (module docstring)."""
    if op == "add":
        return f"std::fma({a[1]}, {a[2]}, {a[0]})"
    if op in ("mul", "div"):
        return f"{a[0]} {'*' if op == 'mul' else '/'} {a[1]}"
    if op == "rdiv":
        return f"(T(1) / {a[0]}) * {a[1]}"
    if op in ("clamp_min", "clamp_max"):
        return f"dl_{op}({a[0]}, {a[1]})"
    if op in ("maximum", "minimum"):
        return f"dl_{op[:3]}({a[0]}, {a[1]})"
    if op == "lerp":
        small, coeff = f"small{j}", f"coeff{j}"
        hoisted[small] = f"  const bool {small} = std::fabs({a[2]}) < T(0.5);"
        hoisted[coeff] = f"  const T {coeff} = {small} ? {a[2]} : {a[2]} - T(1);"
        return f"std::fma({coeff}, {a[1]} - {a[0]}, {small} ? {a[0]} : {a[1]})"
    if op == "addcmul":
        return f"std::fma({a[3]} * {a[1]}, {a[2]}, {a[0]})"
    if op == "addcdiv":
        return f"{a[0]} + ({a[3]} * {a[1]}) / {a[2]}"
    if op == "sqrt":
        return f"std::sqrt({a[0]})"
    if op == "rsqrt":
        return f"T(1) / std::sqrt({a[0]})"
    simple = {"sign": "dl_sign({})", "neg": "-{}", "abs": "std::fabs({})", "square": "{0} * {0}", "clone": "{}"}
    return simple[op].format(a[0])


def _loop_code(program: Program, slots: int, staged: bool) -> list[str]:
    """``staged_loop<T>`` (``staged``: block by block, stage by stage, square roots by torch's vector
    function between stages) or ``ieee_loop<T>`` (one loop, ``std::sqrt`` inline): the element program
    over one tensor."""
    ops = program.element_ops
    stage, buffered, stores = _stages(program, staged)
    last = max(stage.values(), default=0)
    hoisted: dict[str, str] = {}

    def scalar(index: int) -> str:
        hoisted.setdefault(f"c{index}", f"  const T c{index} = static_cast<T>(s[{index}]);")
        return f"c{index}"

    lines = [f"  alignas(64) T b{j}[BLOCK];" for j in sorted(buffered)]
    lines += (["  // the emulated root takes blocks of EMULATED_BLOCK: its compute between two stages then overlaps",
               "  // their memory traffic better (docs/performance.md, benchmarks/one_tensor_step.py)",
               "  const int64_t block = (mode & (EMULATE_ROOT | IEEE_ROOT)) ? EMULATED_BLOCK : BLOCK;"] if staged
              else ["  const int64_t block = BLOCK;"])
    lines += ["  for (int64_t base = 0; base < n; base += block) {",
              "    const int m = static_cast<int>(std::min<int64_t>(block, n - base));",
              *(f"    T* __restrict y{k} = x{k} + base;" for k in range(slots))]
    for level in range(last + 1):
        for j, (op, args) in enumerate(ops):
            if op == "sqrt" and staged and stage[j] == level:
                lines.append(f"    block_sqrt<T>(m, b{args[0][1]}, b{j}, sq, mode);")
        body: list[str] = []
        loads: dict[int, str] = {}

        def ref(operand: tuple[str, int], level: int = level, loads: dict[int, str] = loads) -> str:
            kind, index = operand
            if kind == "s":
                return scalar(index)
            if ops[index][0] == "input":
                loads.setdefault(index, f"      const T e{index} = y{ops[index][1][0]}[i];")
                return f"e{index}"
            if (ops[index][0] == "sqrt" and staged) or stage[index] < level:
                return f"b{index}[i]"
            return f"e{index}"

        for j, (op, args) in enumerate(ops):
            if op == "input" or (op == "sqrt" and staged) or stage[j] != level:
                continue
            body.append(f"      const T e{j} = {_expression(op, [ref(a) for a in args], j, hoisted)};")
            if j in buffered:
                body.append(f"      b{j}[i] = e{j};")
        body += [f"      y{slot}[i] = {ref(('e', node))};" for slot, node in sorted(program.outputs.items())
                 if stores[slot] == level]
        if body:
            lines += ["#pragma GCC ivdep", "    for (int i = 0; i < m; ++i) {", *loads.values(), *body, "    }"]
    lines.append("  }")
    pointers = ", ".join(f"T* __restrict x{k}" for k in range(slots))
    return ["template <typename T>",
            f"void {'staged' if staged else 'ieee'}_loop(int64_t n, {pointers}, const double* s, void* sq, "
            "unsigned long long mode) {",
            "  (void)s; (void)sq; (void)mode;", *hoisted.values(), *lines, "}"]


def source(program: Program, slots: int) -> str:
    """The C++ of ``program`` for a group with ``slots`` tensors per row (param, grad, buffers)."""
    written = ", ".join("true" if k in program.outputs or k == 0 else "false" for k in range(slots))
    args = ", ".join(f"reinterpret_cast<T*>(m[{META_FIXED + k}]) + a" for k in range(slots))
    nscalars = max(1, len(program.scalar_ops))
    return "\n".join([
        PRELUDE,
        "namespace {",
        "void scalars(double* s, const double* h, double t) {",
        "  (void)h; (void)t;",
        *_scalar_code(program),
        "}",
        *_loop_code(program, slots, staged=True),
        *_loop_code(program, slots, staged=False),
        "template <typename T>",
        "struct Rows {",
        "  int64_t n, stride, nh; const int64_t* meta; const double* hyper; double fixed_t;",
        "  const int8_t* reject; const double* ts; const int64_t* ends; void* sq; unsigned long long mode;",
        "};",
        "// Thread k of count takes the elements from boundary k to boundary k + 1 of the group's element",
        "// sequence (rows in order, rejected rows empty); a boundary inside a row is rounded down to a",
        "// multiple of BLOCK from the row's start, so every block (and each square-root call over it) is",
        "// the one a single thread computes: the result is the same for any thread count.",
        "template <typename T>",
        "void boundary(const Rows<T>& w, int64_t k, int64_t count, int64_t* row, int64_t* offset) {",
        "  const int64_t total = w.n ? w.ends[w.n - 1] : 0;",
        "  const int64_t g = static_cast<int64_t>(static_cast<__int128>(total) * k / count);",
        "  const int64_t r = std::upper_bound(w.ends, w.ends + w.n, g) - w.ends;",
        "  *row = r;",
        "  if (r >= w.n) { *offset = 0; return; }",
        "  const int64_t start = w.ends[r] - w.meta[r * w.stride];",
        "  *offset = (g - start) / BLOCK * BLOCK;",
        "}",
        "template <typename T>",
        "void work(const Rows<T>& w, int64_t k, int64_t count) {",
        "  int64_t r0, a0, r1, a1;",
        "  boundary(w, k, count, &r0, &a0);",
        "  boundary(w, k + 1, count, &r1, &a1);",
        f"  double s[{nscalars}];",
        "  double last_t = NAN; int64_t last_row = -1;",
        "  for (int64_t r = r0; r <= r1 && r < w.n; ++r) {",
        "    if (w.reject[r]) continue;",
        "    const int64_t* m = w.meta + r * w.stride;",
        "    const int64_t a = r == r0 ? a0 : 0, b = r == r1 ? a1 : m[0];",
        "    if (a >= b) continue;",
        "    const double t = w.ts[r];",
        "    if (!(t == last_t) || m[3] != last_row) {",
        "      scalars(s, w.hyper + m[3] * w.nh, t); last_t = t; last_row = m[3];",
        "    }",
        f"    if ({'true' if any(op == 'sqrt' for op, _ in program.element_ops) else 'false'} && w.sq != nullptr) "
        f"staged_loop<T>(b - a, {args}, s, w.sq, w.mode);",
        f"    else ieee_loop<T>(b - a, {args}, s, w.sq, w.mode);",
        "  }",
        "}",
        "template <typename T>",
        "int64_t run(int64_t n, int64_t stride, const int64_t* columns, const double* rows, int64_t nh,",
        "            double fixed_t, int8_t* reject, int32_t check_overlap, void* sq, unsigned long long mode,",
        "            int64_t threads, int64_t grain) {",
        "  // the table arrives column by column (what Python builds fastest); rows from here on",
        "  std::vector<int64_t> table(static_cast<size_t>(n * stride));",
        "  for (int64_t c = 0; c < stride; ++c)",
        "    for (int64_t r = 0; r < n; ++r) table[r * stride + c] = columns[c * n + r];",
        "  const int64_t* meta = table.data();",
        f"  static const bool written[{slots}] = {{{written}}};",
        f"  if (check_overlap) flag_overlaps(n, stride, meta, {slots}, sizeof(T), written, reject);",
        "  // each row's state['step'] += 1, once, in row order, before any update (as torch's fused step)",
        "  std::vector<double> ts(static_cast<size_t>(n));",
        "  std::vector<int64_t> ends(static_cast<size_t>(n));",
        "  int64_t done = 0, total = 0;",
        "  for (int64_t r = 0; r < n; ++r) {",
        "    const int64_t* m = meta + r * stride;",
        "    if (!reject[r]) {",
        "      double t = fixed_t;",
        "      if (m[2] == 1) { float* p = reinterpret_cast<float*>(m[1]); *p = *p + 1.0f; t = *p; }",
        "      else if (m[2] == 2) { double* p = reinterpret_cast<double*>(m[1]); *p = *p + 1.0; t = *p; }",
        "      ts[r] = t; total += m[0] > 0 ? m[0] : 0; ++done;",
        "    }",
        "    ends[r] = total;",
        "  }",
        "  const Rows<T> w{n, stride, nh, meta, rows, fixed_t, reject, ts.data(), ends.data(), sq, mode};",
        "  int64_t count = threads > 1 ? threads : 1;",
        "  if (grain > 0) count = std::min<int64_t>(count, std::max<int64_t>(1, total / grain));",
        "#ifdef _OPENMP",
        "  if (count > 1) {",
        "#pragma omp parallel num_threads(static_cast<int>(count))",
        "    work(w, omp_get_thread_num(), omp_get_num_threads());",
        "    return done;",
        "  }",
        "#endif",
        "  work(w, 0, 1);",
        "  return done;",
        "}",
        "}  // namespace",
        'extern "C" int64_t dl_fused_step(int64_t n, int64_t stride, const int64_t* meta, const double* rows,',
        "    int64_t nh, double fixed_t, int32_t is_double, int8_t* reject, int32_t check_overlap,",
        "    void* sqrt_float, void* sqrt_double, unsigned long long mode, int64_t threads, int64_t grain) {",
        "  return is_double",
        "      ? run<double>(n, stride, meta, rows, nh, fixed_t, reject, check_overlap, sqrt_double, mode,",
        "                    threads, grain)",
        "      : run<float>(n, stride, meta, rows, nh, fixed_t, reject, check_overlap, sqrt_float, mode,",
        "                   threads, grain);",
        "}",
        "// the float32 square roots block_sqrt computes with this fn and mode, block by block (the self-check's)",
        'extern "C" void dl_float_roots(int64_t n, const float* in, float* out, void* fn, unsigned long long mode) {',
        "  const int64_t block = (mode & (EMULATE_ROOT | IEEE_ROOT)) ? EMULATED_BLOCK : BLOCK;",
        "  for (int64_t a = 0; a < n; a += block)",
        "    block_sqrt<float>(static_cast<int>(std::min<int64_t>(block, n - a)), in + a, out + a, fn, mode);",
        "}",
        "// the same call with its integer arguments in one array (ctypes converts 2 arguments, not 14)",
        'extern "C" int64_t dl_fused_call(const int64_t* a, double fixed_t) {',
        "  return dl_fused_step(a[0], a[1], reinterpret_cast<const int64_t*>(a[2]),",
        "      reinterpret_cast<const double*>(a[3]), a[4], fixed_t, static_cast<int32_t>(a[5]),",
        "      reinterpret_cast<int8_t*>(a[6]), static_cast<int32_t>(a[7]), reinterpret_cast<void*>(a[8]),",
        "      reinterpret_cast<void*>(a[9]), static_cast<unsigned long long>(a[10]), a[11], a[12]);",
        "}",
        "",
    ])


def name_of(code: str, flags: Sequence[str], prefix: str = "descentlab_fused") -> str:
    """The extension's name: a digest of its source, its flags and the code generator's version."""
    digest = hashlib.sha256("\n".join([str(ABI_VERSION), code, *flags]).encode()).hexdigest()[:20]
    return f"{prefix}_{digest}"
