"""C++ for a traced rule (:mod:`._trace`): one call walks every tensor of a group, one pass each.

The generated ``dl_fused_step`` takes a table with one row per tensor (its element count, the address
of each of its tensors — parameter, gradient, buffers — its ``state['step']`` and the row of
hyper-parameters it uses) and, for each row in order:

1. increments ``state['step']`` in place in its own dtype (as ``state['step'] += 1`` does) and reads t;
2. when t or the hyper-parameter row changed, evaluates the scalar program in double precision, in the
   order Python evaluates it (``std::pow`` is the C library's ``pow``, as Python's ``**``);
3. runs the element program over the tensor in one vectorisable loop: read each input once, write each
   output once.

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

ABI_VERSION = 1
"""Bumped whenever the table layout or the generated code's meaning changes."""

META_FIXED = 4
"""Per row of the table: element count, address of state['step'] (0: none), its kind (0 none, 1 float32,
2 float64; a non-zero address with kind 0 is refused), hyper-parameter row; then one address per slot."""

PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <vector>
#include <algorithm>

namespace {
template <typename T> inline T dl_max(T a, T b) { return (a != a) ? a : ((b != b) ? b : (a > b ? a : b)); }
template <typename T> inline T dl_min(T a, T b) { return (a != a) ? a : ((b != b) ? b : (a < b ? a : b)); }
template <typename T> inline T dl_sign(T a) { return static_cast<T>(T(0) < a) - static_cast<T>(a < T(0)); }

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


def _element_code(program: Program) -> tuple[list[str], list[str]]:
    """(hoisted lines before the loop, lines inside the loop)."""
    hoisted: dict[str, str] = {}
    body: list[str] = []

    def arg(operand: tuple[str, int]) -> str:
        kind, index = operand
        if kind == "e":
            return f"e{index}"
        name = f"c{index}"
        hoisted.setdefault(name, f"  const T {name} = static_cast<T>(s[{index}]);")
        return name

    for j, (op, args) in enumerate(program.element_ops):
        if op == "input":
            expr = f"x{args[0]}[i]"
        elif op == "add":
            expr = f"std::fma({arg(args[1])}, {arg(args[2])}, {arg(args[0])})"
        elif op in ("mul", "div"):
            expr = f"{arg(args[0])} {'*' if op == 'mul' else '/'} {arg(args[1])}"
        elif op == "rdiv":
            expr = f"(T(1) / {arg(args[0])}) * {arg(args[1])}"
        elif op in ("maximum", "minimum"):
            expr = f"dl_{op[:3]}({arg(args[0])}, {arg(args[1])})"
        elif op == "lerp":
            w = arg(args[2])
            small, coeff = f"small{j}", f"coeff{j}"
            hoisted[small] = f"  const bool {small} = std::fabs({w}) < T(0.5);"
            hoisted[coeff] = f"  const T {coeff} = {small} ? {w} : {w} - T(1);"
            start, end = arg(args[0]), arg(args[1])
            expr = f"std::fma({coeff}, {end} - {start}, {small} ? {start} : {end})"
        elif op == "addcmul":
            expr = f"std::fma({arg(args[3])} * {arg(args[1])}, {arg(args[2])}, {arg(args[0])})"
        elif op == "addcdiv":
            expr = f"{arg(args[0])} + ({arg(args[3])} * {arg(args[1])}) / {arg(args[2])}"
        elif op == "sqrt":
            expr = f"std::sqrt({arg(args[0])})"
        elif op == "rsqrt":
            expr = f"T(1) / std::sqrt({arg(args[0])})"
        elif op == "sign":
            expr = f"dl_sign({arg(args[0])})"
        elif op == "neg":
            expr = f"-{arg(args[0])}"
        elif op == "abs":
            expr = f"std::fabs({arg(args[0])})"
        elif op == "square":
            expr = f"{arg(args[0])} * {arg(args[0])}"
        elif op == "clone":
            expr = arg(args[0])
        else:  # pragma: no cover - _trace only records the ops above
            raise AssertionError(op)
        body.append(f"    const T e{j} = {expr};")
    for slot, node in sorted(program.outputs.items()):
        body.append(f"    x{slot}[i] = e{node};")
    return list(hoisted.values()), body


def source(program: Program, slots: int) -> str:
    """The C++ of ``program`` for a group with ``slots`` tensors per row (param, grad, buffers)."""
    hoisted, body = _element_code(program)
    written = ", ".join("true" if k in program.outputs or k == 0 else "false" for k in range(slots))
    pointers = ", ".join(f"T* __restrict x{k}" for k in range(slots))
    args = ", ".join(f"reinterpret_cast<T*>(m[{META_FIXED + k}])" for k in range(slots))
    nscalars = max(1, len(program.scalar_ops))
    return "\n".join([
        PRELUDE,
        "namespace {",
        "void scalars(double* s, const double* h, double t) {",
        "  (void)h; (void)t;",
        *_scalar_code(program),
        "}",
        "template <typename T>",
        f"void loop(int64_t n, {pointers}, const double* s) {{",
        "  (void)s;",
        *hoisted,
        "#pragma GCC ivdep",
        "  for (int64_t i = 0; i < n; ++i) {",
        *body,
        "  }",
        "}",
        "template <typename T>",
        "int64_t run(int64_t n, int64_t stride, const int64_t* meta, const double* rows, int64_t nh,",
        "            double fixed_t, int8_t* reject, int32_t check_overlap) {",
        f"  static const bool written[{slots}] = {{{written}}};",
        f"  if (check_overlap) flag_overlaps(n, stride, meta, {slots}, sizeof(T), written, reject);",
        f"  double s[{nscalars}];",
        "  double last_t = NAN; int64_t last_row = -1; int64_t done = 0;",
        "  for (int64_t r = 0; r < n; ++r) {",
        "    if (reject[r]) continue;",
        "    const int64_t* m = meta + r * stride;",
        "    double t = fixed_t;",
        "    if (m[2] == 1) { float* p = reinterpret_cast<float*>(m[1]); *p = *p + 1.0f; t = *p; }",
        "    else if (m[2] == 2) { double* p = reinterpret_cast<double*>(m[1]); *p = *p + 1.0; t = *p; }",
        "    if (!(t == last_t) || m[3] != last_row) {",
        "      scalars(s, rows + m[3] * nh, t); last_t = t; last_row = m[3];",
        "    }",
        f"    loop<T>(m[0], {args}, s);",
        "    ++done;",
        "  }",
        "  return done;",
        "}",
        "}  // namespace",
        'extern "C" int64_t dl_fused_step(int64_t n, int64_t stride, const int64_t* meta, const double* rows,',
        "    int64_t nh, double fixed_t, int32_t is_double, int8_t* reject, int32_t check_overlap) {",
        "  return is_double ? run<double>(n, stride, meta, rows, nh, fixed_t, reject, check_overlap)",
        "                   : run<float>(n, stride, meta, rows, nh, fixed_t, reject, check_overlap);",
        "}",
        "",
    ])


def name_of(code: str, flags: Sequence[str]) -> str:
    """The extension's name: a digest of its source, its flags and the code generator's version."""
    digest = hashlib.sha256("\n".join([str(ABI_VERSION), code, *flags]).encode()).hexdigest()[:20]
    return f"descentlab_fused_{digest}"
