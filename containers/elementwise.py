"""Elementwise functions of the array-API namespace (2024.12), plus ``where`` and ``astype``.

Every function is collective: every rank calls it in the same order and computes the tiles
it owns with the tiles' own array module (NumPy or CuPy). Operands are distributed arrays,
Python scalars (where the standard allows them: binary functions, ``clip``, ``where``) and
small NumPy/CuPy arrays, taken as held alike by every rank. They broadcast together; the
result takes the layout of the first distributed operand of the result's shape, and an
operand laid out otherwise is fetched, region by region, in one collective call (see
:mod:`gpupart.containers.tilewise`). Operands laid out alike exchange no message.

Result dtypes are NumPy's, found from the operands' dtypes and scalars only (never from
data), so every rank decides, and fails, alike. Where NumPy would silently do what the
standard does not define, these refuse with a TypeError instead:

* a result outside the standard's dtypes (NumPy's float16 from ``sqrt`` of ``int8`` or
  ``bool``): cast the input first;
* complex operands of ``less``, ``less_equal``, ``greater``, ``greater_equal``,
  ``maximum``, ``minimum`` and ``clip`` (complex numbers have no order);
* ``add`` of two booleans (NumPy's logical or): use ``logical_or``;
* ``astype`` from a complex to a real dtype (bool is fine): take ``real``, ``imag`` or
  ``abs`` first.

``pow`` of integers never fails on data: an element with a negative exponent, which the
standard leaves unspecified, is ``1 / x1**-x2`` truncated towards zero (1 for a base of 1,
±1 for -1, 0 otherwise). Division by zero and invalid operations give NumPy's values
without warnings.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import numpy as np
from gpupart.containers import tilewise
from gpupart.containers.darray import DistArray
from gpupart.containers.tilewise import STANDARD_DTYPES, Operand

__all__ = [
    "abs",
    "acos",
    "acosh",
    "add",
    "asin",
    "asinh",
    "astype",
    "atan",
    "atan2",
    "atanh",
    "bitwise_and",
    "bitwise_invert",
    "bitwise_left_shift",
    "bitwise_or",
    "bitwise_right_shift",
    "bitwise_xor",
    "ceil",
    "clip",
    "conj",
    "copysign",
    "cos",
    "cosh",
    "divide",
    "equal",
    "exp",
    "expm1",
    "floor",
    "floor_divide",
    "greater",
    "greater_equal",
    "hypot",
    "imag",
    "isfinite",
    "isinf",
    "isnan",
    "less",
    "less_equal",
    "log",
    "log1p",
    "log2",
    "log10",
    "logaddexp",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "maximum",
    "minimum",
    "multiply",
    "negative",
    "nextafter",
    "not_equal",
    "positive",
    "pow",
    "real",
    "reciprocal",
    "remainder",
    "round",
    "sign",
    "signbit",
    "sin",
    "sinh",
    "sqrt",
    "square",
    "subtract",
    "tan",
    "tanh",
    "trunc",
    "where",
]

Kernel = Callable[..., Any]


# -- dtype rules (metadata only) ----------------------------------------------------------


def _is_complex(op: Operand) -> bool:
    if op.kind == "scalar":
        return isinstance(op.value, complex)
    return op.dtype.kind == "c"


def _is_bool(op: Operand) -> bool:
    if op.kind == "scalar":
        return isinstance(op.value, bool)
    return op.dtype.kind == "b"


def _result_dtype(
    fn: str,
    ref: Callable[..., Any],
    operands: list[Operand],
    *,
    real_only: bool = False,
    numeric: bool = False,
) -> np.dtype:
    """Return NumPy's result dtype of ``ref`` on these operands, or raise naming them."""
    if real_only:
        for op in operands:
            if _is_complex(op):
                found = "a Python complex" if op.kind == "scalar" else str(op.dtype)
                raise TypeError(
                    f"{fn}: {op.name}: expected a real-valued dtype (complex numbers have no"
                    f" order), found {found}"
                )
    if numeric and builtins.all(_is_bool(op) for op in operands):
        raise TypeError(
            f"{fn}: expected at least one numeric operand, found only booleans"
            f" ({tilewise.describe(operands)}); use logical_or for booleans"
        )
    with np.errstate(all="ignore"):
        try:
            dtype = np.asarray(ref(*(op.dummy() for op in operands))).dtype
        except OverflowError as exc:
            raise OverflowError(f"{fn}: {exc} ({tilewise.describe(operands)})") from None
        except TypeError as exc:
            raise TypeError(
                f"{fn}: unsupported dtypes ({tilewise.describe(operands)}); NumPy says: {exc}"
            ) from None
    if dtype not in STANDARD_DTYPES:
        raise TypeError(
            f"{fn}: the result for {tilewise.describe(operands)} would be {dtype}, which is not"
            " one of the standard's dtypes; cast the input first (astype)"
        )
    return dtype


def _run(
    fn: str,
    kernel: Kernel,
    operands: list[Operand],
    ref: Callable[..., Any],
    *,
    real_only: bool = False,
    numeric: bool = False,
) -> DistArray:
    dtype = _result_dtype(fn, ref, operands, real_only=real_only, numeric=numeric)
    return tilewise.apply(fn, kernel, operands, dtype)


def _xp_kernel(npname: str) -> Kernel:
    """Return a kernel calling ``xp.<npname>`` (a name NumPy and CuPy share)."""

    def kernel(xp: Any, *pieces: Any) -> Any:
        return getattr(xp, npname)(*pieces)

    return kernel


# -- the function factories ---------------------------------------------------------------


def _unary(
    api: str, npname: str | None = None, kernel: Kernel | None = None
) -> Callable[[Any], DistArray]:
    """Make the array-API function ``api(x, /)`` running NumPy's/CuPy's ``npname`` per tile."""
    npname = npname or api
    ref = getattr(np, npname)
    kernel = kernel or _xp_kernel(npname)

    def fn(x: Any, /) -> DistArray:
        op = tilewise.operand(api, "x", x, scalar=False, array=False)
        return _run(api, kernel, [op], ref)

    fn.__name__ = fn.__qualname__ = api
    fn.__doc__ = f"Return ``{api}`` of each element of ``x`` (collective; ``{npname}`` per tile)."
    return fn


def _binary(
    api: str,
    npname: str | None = None,
    *,
    real_only: bool = False,
    numeric: bool = False,
) -> Callable[[Any, Any], DistArray]:
    """Make the array-API function ``api(x1, x2, /)`` (arrays or scalars; broadcasting)."""
    npname = npname or api
    ref = getattr(np, npname)
    kernel = _xp_kernel(npname)

    def fn(x1: Any, x2: Any, /) -> DistArray:
        ops = [tilewise.operand(api, "x1", x1), tilewise.operand(api, "x2", x2)]
        return _run(api, kernel, ops, ref, real_only=real_only, numeric=numeric)

    fn.__name__ = fn.__qualname__ = api
    fn.__doc__ = (
        f"Return ``{api}(x1, x2)`` elementwise, broadcast (collective; ``{npname}`` per tile)."
    )
    return fn


def _real_part(xp: Any, t: Any) -> Any:
    return xp.real(t).copy()


def _imag_part(xp: Any, t: Any) -> Any:
    return xp.imag(t).copy()


# -- unary functions ----------------------------------------------------------------------

abs = _unary("abs", "absolute")
acos = _unary("acos", "arccos")
acosh = _unary("acosh", "arccosh")
asin = _unary("asin", "arcsin")
asinh = _unary("asinh", "arcsinh")
atan = _unary("atan", "arctan")
atanh = _unary("atanh", "arctanh")
bitwise_invert = _unary("bitwise_invert", "invert")
ceil = _unary("ceil")
conj = _unary("conj", "conjugate")
cos = _unary("cos")
cosh = _unary("cosh")
exp = _unary("exp")
expm1 = _unary("expm1")
floor = _unary("floor")
imag = _unary("imag", kernel=_imag_part)
isfinite = _unary("isfinite")
isinf = _unary("isinf")
isnan = _unary("isnan")
log = _unary("log")
log1p = _unary("log1p")
log2 = _unary("log2")
log10 = _unary("log10")
logical_not = _unary("logical_not")
negative = _unary("negative")
positive = _unary("positive")
real = _unary("real", kernel=_real_part)
reciprocal = _unary("reciprocal")
round = _unary("round")
sign = _unary("sign")
signbit = _unary("signbit")
sin = _unary("sin")
sinh = _unary("sinh")
sqrt = _unary("sqrt")
square = _unary("square")
tan = _unary("tan")
tanh = _unary("tanh")
trunc = _unary("trunc")

# -- binary functions ---------------------------------------------------------------------

add = _binary("add", numeric=True)
atan2 = _binary("atan2", "arctan2")
bitwise_and = _binary("bitwise_and")
bitwise_left_shift = _binary("bitwise_left_shift", "left_shift")
bitwise_or = _binary("bitwise_or")
bitwise_right_shift = _binary("bitwise_right_shift", "right_shift")
bitwise_xor = _binary("bitwise_xor")
copysign = _binary("copysign")
divide = _binary("divide")
equal = _binary("equal")
floor_divide = _binary("floor_divide")
greater = _binary("greater", real_only=True)
greater_equal = _binary("greater_equal", real_only=True)
hypot = _binary("hypot")
less = _binary("less", real_only=True)
less_equal = _binary("less_equal", real_only=True)
logaddexp = _binary("logaddexp")
logical_and = _binary("logical_and")
logical_or = _binary("logical_or")
logical_xor = _binary("logical_xor")
maximum = _binary("maximum", real_only=True)
minimum = _binary("minimum", real_only=True)
multiply = _binary("multiply")
nextafter = _binary("nextafter")
not_equal = _binary("not_equal")
remainder = _binary("remainder")
subtract = _binary("subtract")


def pow(x1: Any, x2: Any, /) -> DistArray:
    """Return ``x1 ** x2`` elementwise, broadcast (collective; see the module on integers)."""
    ops = [tilewise.operand("pow", "x1", x1), tilewise.operand("pow", "x2", x2)]
    dtype = _result_dtype("pow", np.power, ops)
    if dtype.kind not in "iu":
        return tilewise.apply("pow", _xp_kernel("power"), ops, dtype)
    return tilewise.apply("pow", lambda xp, a, b: _integer_power(xp, a, b, dtype), ops, dtype)


def _integer_power(xp: Any, base: Any, exponent: Any, dtype: np.dtype) -> Any:
    """Return ``base ** exponent`` in ``dtype``; a negative exponent gives the truncated value.

    That is 1 for a base of 1, ±1 for -1 (as the exponent is even or odd), 0 otherwise.
    """
    base = xp.asarray(base).astype(dtype, copy=False)
    exponent = xp.asarray(exponent).astype(dtype, copy=False)
    if dtype.kind == "u":
        return xp.power(base, exponent)
    negative_ = exponent < 0
    powered = xp.power(base, xp.where(negative_, 0, exponent))
    sign = 1 - 2 * (exponent % 2)
    truncated = xp.where(base == 1, 1, xp.where(base == -1, sign, 0))
    return xp.where(negative_, truncated, powered)


# -- clip, where, astype ------------------------------------------------------------------


def clip(x: Any, /, min: Any = None, max: Any = None) -> DistArray:
    """Return ``x`` clamped to ``[min, max]`` elementwise, in ``x``'s dtype (collective).

    ``min``/``max`` are ``None`` (no bound), scalars or arrays broadcasting with ``x``; an
    integer bound outside ``x``'s integer dtype is taken as that dtype's limit.
    """
    xop = tilewise.operand("clip", "x", x, scalar=False, array=False)
    ops = [xop]
    has = []
    for name, bound in (("min", min), ("max", max)):
        if bound is None:
            continue
        op = tilewise.operand("clip", name, bound)
        if op.kind == "scalar" and xop.dtype.kind in "iu" and type(bound) is int:
            info = np.iinfo(xop.dtype)
            op = Operand(name, "scalar", builtins.min(builtins.max(bound, info.min), info.max))
        ops.append(op)
        has.append(name)
    _result_dtype(
        "clip", lambda d, *b: np.clip(d, **dict(zip(has, b, strict=True))), ops, real_only=True
    )

    def kernel(xp: Any, t: Any, *bounds: Any) -> Any:
        out = t
        for name, bound in zip(has, bounds, strict=True):
            out = xp.maximum(out, bound) if name == "min" else xp.minimum(out, bound)
        return out if bounds else out.copy()

    return tilewise.apply("clip", kernel, ops, xop.dtype)


def where(condition: Any, x1: Any, x2: Any, /) -> DistArray:
    """Return ``x1`` where ``condition`` holds, else ``x2``, broadcast (collective)."""
    ops = [
        tilewise.operand("where", "condition", condition, scalar=False),
        tilewise.operand("where", "x1", x1),
        tilewise.operand("where", "x2", x2),
    ]
    return _run("where", _xp_kernel("where"), ops, np.where)


def astype(x: Any, dtype: Any, /, *, copy: bool = True, device: Any = None) -> DistArray:
    """Return ``x`` cast to ``dtype``; ``x`` itself when it has it and ``copy`` is False."""
    op = tilewise.operand("astype", "x", x, scalar=False, array=False)
    if dtype is None:
        raise TypeError("astype: dtype: expected a dtype of the namespace, found None")
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"astype: dtype: expected a dtype of the namespace, found {dtype!r}"
        ) from None
    if target not in STANDARD_DTYPES:
        raise TypeError(f"astype: dtype: expected one of the standard's dtypes, found {target}")
    if not isinstance(copy, bool):
        raise TypeError(f"astype: copy: expected True or False, found {copy!r}")
    if device is not None and device != x.device:
        raise ValueError(f"astype: device: expected None or {x.device!r}, found {device!r}")
    if op.dtype.kind == "c" and target.kind not in "cb":
        raise TypeError(
            f"astype: casting {op.dtype} to {target} would drop the imaginary part, which the"
            " standard does not permit; take real(x), imag(x) or abs(x) first"
        )
    if target == x.dtype and not copy:
        return x

    def cast(t: Any) -> Any:
        with np.errstate(all="ignore"):
            return t.astype(target)

    return x.map_tiles(cast, target)
