"""Fast, deterministic Gaussian noise and minibatch indices for samplers.

SGLD-type samplers add a fresh ``N(0, I)`` vector the size of the parameter
vector at every step.  On CPU ``jax.random.normal`` is expensive for this: it
costs roughly as much as (or more than) a minibatch gradient of a small MLP.
This module provides a cheaper generator with the same guarantees that matter
for MCMC.

Generator
---------
The bits come from **Threefry-2x32 with 20 rounds** (Salmon, Moraes, Dror &
Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11), the same
counter-based generator that backs ``jax.random``'s default implementation and
XLA's ``RngBitGenerator(THREE_FRY)``; the block function here is bit-exact with
``jax``'s reference ``threefry_2x32`` (checked in the tests).  Element ``j`` of
the stream of a key ``(k0, k1)`` uses the block
``threefry2x32(key=(k0, k1), counter=(j, TAG))`` with the fixed high counter
word ``TAG = 0x53474C44`` ("SGLD").  The tag separates this stream from the
counter blocks used by ``jax.random`` itself (``split``, ``bits``, ``normal``
use blocks whose words are small indices), so bits never overlap in practice
even if a key is both used here and split.

The two 32-bit words of each block give one normal deviate by Box-Muller,
``z = sqrt(-2 log u) cos(theta)``: 31 bits of the first word give
``u = (k + 1/2) 2^-31`` (never 0), the second word gives a uniform angle (sign
bit, octant bit, 30 bits for ``phi`` in ``[0, pi/4)``, where Cephes' float32
sin/cos polynomials are accurate to rounding).  This is exact in distribution
up to float32 rounding: no erfinv approximation, and the tails extend to
``|z| = sqrt(64 log 2) = 6.66`` (``P(|Z| > 6.66) = 3e-11``), beyond what 24-bit
uniforms allow (5.4).

Why not ``jax.random.normal`` / ``lax.rng_bit_generator``?  Measured inside a
jitted ``lax.scan`` on a 2-core CPU, D = 7510 floats per step (``/tmp``
benchmark, see the project notes): ``jax.random.normal`` costs ~70-150 us per
step; XLA's ``rng_bit_generator(THREE_FRY)`` is ~8x slower when the length is
not a multiple of 4, computes every block twice (once per output word, plus an
interleaving concatenate), and its ``vmap`` rule draws the bits of *all*
chains from the key of the first chain (chain ``i``'s noise would not be a
function of its own key); Philox / the default algorithm are slow on CPU.
Writing the Threefry rounds as element-wise ``jnp`` operations on a counter
``iota`` gives XLA one element-wise loop (about 4x cheaper than
``rng_bit_generator``'s bits) that fuses into the consumer (e.g. the parameter
update), needs no padding, and has a trivially correct ``vmap`` (the key words
broadcast).  XLA:CPU only vectorises such loops when the element count is
even (odd sizes are ~8x slower), so large odd draws are computed one element
longer in a separate loop and sliced (see ``_stream_normal``).  Box-Muller with one
output per block was ~15% cheaper than an
inverse-CDF transform (Giles' erfinv) and has better tails.

Properties
----------
* Deterministic: the same key gives the same numbers, on every backend.  The
  uint32 bits are exact; the float transform goes through XLA's ``log``,
  which may differ by ~1 ulp between differently compiled programs
  (vectorised vs scalar loops), as for any XLA float computation.
* Resolution: the tails use 31-bit uniforms; near ``r = 0`` the float32
  spacing of ``u`` (2^-24) quantises ``r^2`` by ~2^-24, i.e. the CDF error is
  below 2^-24 everywhere (at least 24-bit uniform resolution).
* Different keys (e.g. from ``jax.random.split``) give independent streams.
* Works under ``jax.jit``, ``jax.vmap`` (a batch of keys gives one independent
  stream per key) and inside ``lax.scan``.
* The numbers **differ** from ``jax.random.normal(key, ...)`` for the same key
  (different counter layout and transform).  ``method="jax"`` reproduces
  ``jax.random.normal`` exactly.
* ``method="auto"`` uses the fast path on CPU and ``jax.random.normal`` on
  other backends (where the latter is fast), decided at trace time from
  ``jax.default_backend()``.  Results therefore depend on the backend under
  ``"auto"``; pass ``method`` explicitly for backend-independent numbers.
* float64 (and any dtype other than float32 / float16 / bfloat16) always uses
  ``jax.random.normal``: the transform here is single precision only.
  float16 / bfloat16 are drawn in float32 and rounded.
* One key addresses at most ``2**32`` numbers on the fast path.

Streams and keys for kernels
----------------------------
A transition that needs several independent random quantities draws them
from *streams* of its one key rather than splitting it: ``normal(key,
stream=s)``, ``normal_like(key, tree, stream=s)``, ``uniform(key, shape,
stream=s)`` and ``uniform_at(key, counter)`` use disjoint Threefry counter
blocks (a different high counter word per kind and stream), so they are
independent. ``fold_in(key, t)`` derives per-step keys the same way.
``jax.random.split`` / ``fold_in`` / ``uniform`` lower on CPU to rolled
loops of a few kernels each; these are straight-line code that XLA fuses,
which cut the compiled NUTS program by ~15% (HLO size) and its compile time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["normal", "normal_like", "uniform", "uniform_indices", "uniform_at", "fold_in", "threefry_bits", "METHODS"]

#: Accepted values of ``method``.  ``"threefry"`` is an alias of ``"xla_threefry"``.
METHODS = ("auto", "jax", "xla_threefry", "threefry")

# High counter word of the normal stream ("SGLD") and of the index stream.
_TAG_NORMAL = 0x53474C44
_TAG_INDEX = 0x53474C49
_TAG_UNIFORM = 0x53474C55
_TAG_UNIFORM_VECTOR = 0x53474C56
_TAG_FOLD = 0x53474C46

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = 0x1BD11BDA

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(jnp.bfloat16))

# Cephes sinf / cosf minimax polynomials on [-pi/4, pi/4] (in z = x^2).
_SIN_COEFS = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS_COEFS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)
_QUARTER_PI_2M30 = np.float32(math.pi / 4 * 2.0**-30)

# Odd-sized draws at least this long are padded to an even length (see _stream_normal).
_ODD_PAD_THRESHOLD = 257


# --------------------------------------------------------------------------- keys


def _key_words(key: Any) -> tuple[jax.Array, jax.Array]:
    """Two uint32 words identifying ``key`` (typed key or raw ``uint32[2]``)."""
    if isinstance(key, jax.Array) or hasattr(key, "dtype"):
        dtype = key.dtype
    else:
        key = jnp.asarray(key)
        dtype = key.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"expected a single PRNG key, got key array of shape {key.shape}")
        data = jax.random.key_data(key)
        if data.shape != (2,):
            # Non-threefry implementations (e.g. "rbg"): derive two words with
            # the key's own generator.
            data = jax.random.bits(key, (2,), jnp.uint32)
    else:
        data = jnp.asarray(key)
        if data.dtype != jnp.uint32 or data.shape != (2,):
            raise ValueError(
                "expected a typed PRNG key (jax.random.key) or a raw uint32[2] key "
                f"(jax.random.PRNGKey); got dtype {data.dtype} and shape {data.shape}"
            )
    return data[0], data[1]


def _stream_tag(base: int, stream) -> Any:
    """The high counter word of sub-stream ``stream`` (an int or a traced integer) of a tag.

    Sub-streams differ in the upper 16 bits; the lower 16 bits keep the base
    tags of the different kinds of numbers apart.
    """
    if isinstance(stream, (int, np.integer)):
        if not 0 <= int(stream) < 2**16:
            raise ValueError(f"stream must be in [0, 65536), got {stream}")
        return int(base ^ (int(stream) << 16))
    return jnp.uint32(base) ^ (jnp.asarray(stream).astype(jnp.uint32) << np.uint32(16))


# ---------------------------------------------------------------------- threefry


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _threefry2x32(k0, k1, x0, x1, *, both: bool = False):
    """Threefry-2x32-20 block function (Random123 / ``jax.random`` compatible).

    ``k0, k1`` are the key words, ``x0, x1`` the counter words (broadcastable
    uint32 arrays).  Returns the first output word, or both if ``both``.
    """
    k2 = k0 ^ k1 ^ np.uint32(_KS_PARITY)
    ks = (k0, k1, k2)
    x0 = x0 + k0
    x1 = x1 + k1
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r)
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return (x0, x1) if both else x0


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _stream_words(k0, k1, start: int, size: int, tag: int, both: bool = True):
    """Threefry blocks ``(start + j, tag)``, ``j < size``, of key (k0, k1)."""
    if start + size > 2**32 - 1:
        raise ValueError("a single key addresses at most 2**32 numbers on the fast path")
    ctr = lax.iota(jnp.uint32, size)
    if start:
        ctr = ctr + np.uint32(start)
    return _threefry2x32(k0, k1, ctr, np.uint32(tag), both=both)


def threefry_bits(key, shape: Sequence[int] | int) -> jax.Array:
    """First Threefry output word of the blocks behind :func:`normal` (uint32)."""
    shape = _shape(shape)
    k0, k1 = _key_words(key)
    return _stream_words(k0, k1, 0, math.prod(shape), _TAG_NORMAL, both=False).reshape(shape)


# --------------------------------------------------------------------- transform


def _horner(coefs, x):
    p = np.float32(coefs[0]) * x + np.float32(coefs[1])
    for c in coefs[2:]:
        p = p * x + np.float32(c)
    return p


def _block_to_normal(a: jax.Array, b: jax.Array) -> jax.Array:
    """One float32 N(0,1) deviate per Threefry block (two uint32 words).

    Box-Muller, one output per block: ``z = r cos(theta)`` with
    ``r = sqrt(-2 log u)``, ``u = (k + 1/2) 2^-31`` from 31 bits of ``a``
    (``u`` in ``[2^-32, 1]``, never 0), and ``cos(theta)`` for ``theta``
    uniform on the circle built from ``b``: bit 31 is the sign, bit 30 picks
    ``cos(phi)`` or ``sin(phi)`` (= ``cos(pi/2 - phi)``), and bits 0-29 give
    ``phi`` uniform in ``[0, pi/4)``, where short minimax polynomials are
    accurate to float32 rounding.
    """
    u = ((a >> np.uint32(1)).astype(jnp.int32).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-31)
    r = jnp.sqrt(np.float32(-2.0) * jnp.log(u))
    phi = (b & np.uint32(0x3FFFFFFF)).astype(jnp.int32).astype(jnp.float32) * _QUARTER_PI_2M30
    z = phi * phi
    sin = phi + phi * z * _horner(_SIN_COEFS, z)
    cos = np.float32(1.0) - np.float32(0.5) * z + z * z * _horner(_COS_COEFS, z)
    v = jnp.where((b & np.uint32(0x40000000)) != 0, sin, cos)
    sign = b & np.uint32(0x80000000)
    return lax.bitcast_convert_type(lax.bitcast_convert_type(r * v, jnp.uint32) ^ sign, jnp.float32)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _stream_normal(k0, k1, start: int, size: int, tag: int = _TAG_NORMAL) -> jax.Array:
    """Elements ``[start, start + size)`` of the float32 normal stream of (k0, k1).

    XLA:CPU vectorises an element-wise loop only when its element count is
    even: an odd-sized draw fused into its (odd-sized) consumer runs ~8x
    slower.  Large odd draws are therefore generated one element longer inside
    a ``lax.cond`` whose predicate is always true but not constant-foldable,
    which materialises the padded draw in its own (vectorised) loop; the slice
    is then a cheap copy.  The numbers are the same either way.
    """
    if size % 2 == 1 and size >= _ODD_PAD_THRESHOLD:
        pred = (k0 | k1 | np.uint32(1)) != np.uint32(0)  # always true
        padded = lax.cond(
            pred,
            lambda a, b: _block_to_normal(*_stream_words(a, b, start, size + 1, tag)),
            lambda a, b: jnp.zeros((size + 1,), jnp.float32),
            k0,
            k1,
        )
        return padded[:size]
    a, b = _stream_words(k0, k1, start, size, tag)
    return _block_to_normal(a, b)


def _traced_stream_normal(k0, k1, size: int, tag: jax.Array) -> jax.Array:
    """Like :func:`_stream_normal` from 0 with a traced tag (no odd-size padding)."""
    a, b = _threefry2x32(k0, k1, lax.iota(jnp.uint32, size), tag, both=True)
    return _block_to_normal(a, b)


# ------------------------------------------------------------------------ helpers


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def _resolve(method: str, dtype) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "threefry":
        method = "xla_threefry"
    if np.dtype(dtype) not in _FAST_DTYPES:
        return "jax"
    if method == "auto":
        return "xla_threefry" if jax.default_backend() == "cpu" else "jax"
    return method


# ---------------------------------------------------------------------------- API


def normal(key, shape: Sequence[int] | int = (), dtype=jnp.float32, *, method: str = "auto", stream=0) -> jax.Array:
    """Standard normal draws of ``shape`` and ``dtype`` from ``key``.

    Args:
      key: a typed key (``jax.random.key``) or raw ``uint32[2]`` key
        (``jax.random.PRNGKey``).  Use ``jax.vmap`` for a batch of keys.
      shape: output shape.
      dtype: float32 (fast path), float16 / bfloat16 (fast path, drawn in
        float32), or float64 and others (always ``jax.random.normal``).
      method: ``"auto"`` (fast Threefry path on CPU, ``jax.random.normal``
        elsewhere), ``"xla_threefry"`` (force the fast path), or ``"jax"``
        (force ``jax.random.normal``; same numbers as it).
      stream: an integer in ``[0, 65536)``, possibly traced: independent
        sub-streams of one key (different counter blocks), so a kernel can
        draw several independent vectors from its key without splitting it.
        On the ``jax.random`` path a non-zero stream uses
        ``fold_in(key, stream)``.

    The fast path's numbers differ from ``jax.random.normal`` for the same key.
    """
    shape = _shape(shape)
    dtype = np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
    if _resolve(method, dtype) == "jax":
        if not (isinstance(stream, (int, np.integer)) and int(stream) == 0):
            key = jax.random.fold_in(key, stream)
        return jax.random.normal(key, shape, dtype)
    k0, k1 = _key_words(key)
    tag = _stream_tag(_TAG_NORMAL, stream)
    if isinstance(tag, int):
        z = _stream_normal(k0, k1, 0, math.prod(shape), tag)
    else:
        z = _traced_stream_normal(k0, k1, math.prod(shape), tag)
    return z.reshape(shape).astype(dtype)


def uniform(key, shape: Sequence[int] | int = (), dtype=jnp.float32, *, stream=0) -> jax.Array:
    """Uniform draws in ``(0, 1)`` (never 0 or 1) of ``shape`` from ``key``.

    Threefry-2x32-20 blocks ``(j, tag)`` of a tag of their own, so they are
    independent of :func:`normal`, :func:`uniform_at` and
    :func:`uniform_indices` drawn from the same key; ``stream`` (an integer
    in ``[0, 65536)``, possibly traced) selects independent sub-streams.
    float32 uses 24 bits, ``u = (k + 1/2) 2^-24``; float64 uses 53 bits from
    both words of the block. The hash is unrolled element-wise code (no loop),
    which XLA fuses into the consumer; ``jax.random.uniform`` lowers to a
    rolled loop on CPU.
    """
    shape = _shape(shape)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"uniform supports float32 and float64, got {dtype}")
    k0, k1 = _key_words(key)
    tag = _stream_tag(_TAG_UNIFORM_VECTOR, stream)
    tag = np.uint32(tag) if isinstance(tag, int) else tag
    ctr = lax.iota(jnp.uint32, math.prod(shape))
    if dtype == np.dtype(np.float32):
        a = _threefry2x32(k0, k1, ctr, tag)
        u = ((a >> np.uint32(8)).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-24)
    else:
        a, b = _threefry2x32(k0, k1, ctr, tag, both=True)
        hi = (a >> np.uint32(6)).astype(jnp.float64)  # 26 bits
        lo = (b >> np.uint32(5)).astype(jnp.float64)  # 27 bits
        u = (hi * 2.0**27 + lo + 0.5) * 2.0**-53
    return u.reshape(shape)


def fold_in(key, data) -> jax.Array:
    """A new key from ``key`` and the integer ``data`` (possibly traced).

    The same role as ``jax.random.fold_in``, computed with the unrolled
    Threefry block ``threefry2x32(key, (data, tag))`` (both output words form
    the new key), which fuses into straight-line code; ``jax.random.fold_in``
    lowers to a rolled loop on CPU that costs a few kernel launches per call.
    Keys of other implementations than the default ``threefry2x32`` fall back
    to ``jax.random.fold_in``. The derived keys differ from
    ``jax.random.fold_in``'s.
    """
    typed = jax.dtypes.issubdtype(getattr(key, "dtype", np.dtype(np.uint32)), jax.dtypes.prng_key)
    if typed and jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0)):
        return jax.random.fold_in(key, data)
    k0, k1 = _key_words(key)
    ctr = jnp.asarray(data).astype(jnp.uint32)
    a, b = _threefry2x32(k0, k1, ctr, np.uint32(_TAG_FOLD), both=True)
    words = jnp.stack([a, b])
    return jax.random.wrap_key_data(words) if typed else words


def normal_like(key, tree: Any, *, method: str = "auto", stream: int = 0) -> Any:
    """One ``N(0, 1)`` draw with the shape and dtype of every leaf of ``tree``.

    Leaves may be arrays or ``jax.ShapeDtypeStruct`` s.  On the fast path all
    leaves are consecutive pieces of the single stream of ``key``: the leaves,
    flattened in ``jax.tree_util`` order and concatenated, equal
    ``normal(key, (total,))`` (each piece is generated directly from its
    counter range, which is what slicing one long draw would give, but lets XLA
    fuse each piece into its own consumer).  Leaves whose dtype has no fast
    path (float64) are slices of one ``jax.random.normal`` call of their total
    size; with ``method="jax"`` every leaf is. ``stream`` (a Python int in
    ``[0, 65536)``) selects an independent sub-stream, as in :func:`normal`.
    """
    tag = _stream_tag(_TAG_NORMAL, stream)
    if not isinstance(tag, int):
        raise TypeError("normal_like needs a Python int stream")
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    specs = [
        (tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf)), np.dtype(leaf.dtype))
        for leaf in leaves
    ]
    out: list[Any] = [None] * len(leaves)

    fast = [i for i, (_, dt) in enumerate(specs) if _resolve(method, dt) == "xla_threefry"]
    slow = [i for i in range(len(specs)) if i not in set(fast)]

    if fast:
        k0, k1 = _key_words(key)
        offset = 0
        for i in fast:
            shape, dt = specs[i]
            size = math.prod(shape)
            out[i] = _stream_normal(k0, k1, offset, size, tag).reshape(shape).astype(dt)
            offset += size

    # One jax.random.normal call per dtype for the remaining leaves.
    by_dtype: dict[np.dtype, list[int]] = {}
    for i in slow:
        by_dtype.setdefault(specs[i][1], []).append(i)
    jax_key = key if stream == 0 or not by_dtype else jax.random.fold_in(key, stream)
    for dt, idx in by_dtype.items():
        sizes = [math.prod(specs[i][0]) for i in idx]
        flat = jax.random.normal(jax_key, (sum(sizes),), dt)
        offset = 0
        for i, size in zip(idx, sizes):
            out[i] = flat[offset : offset + size].reshape(specs[i][0])
            offset += size

    return jax.tree_util.tree_unflatten(treedef, out)


@jax.jit
def _mulhi_u32(x: jax.Array, m: jax.Array) -> jax.Array:
    """High 32 bits of the 64-bit product of uint32 ``x`` and ``m`` (no uint64)."""
    mask = np.uint32(0xFFFF)
    xl, xh = x & mask, x >> np.uint32(16)
    ml, mh = m & mask, m >> np.uint32(16)
    ll = xl * ml
    lh = xl * mh
    hl = xh * ml
    hh = xh * mh
    mid = (ll >> np.uint32(16)) + (lh & mask) + (hl & mask)
    return hh + (lh >> np.uint32(16)) + (hl >> np.uint32(16)) + (mid >> np.uint32(16))


def uniform_indices(key, num: int, maxval) -> jax.Array:
    """``num`` int32 indices in ``[0, maxval)``, i.i.d. uniform (with replacement).

    Uses Lemire's multiply-shift ``floor(bits * maxval / 2^32)`` on 32-bit
    Threefry words (the high half of the 64-bit product is computed from 16-bit
    limbs, so no x64 mode is needed).  Every index has probability
    ``floor(2^32/maxval)/2^32`` or ``ceil(2^32/maxval)/2^32``: the relative
    bias is below ``maxval / 2^32`` (about 1.4e-5 for 60,000 examples), far
    below the Monte Carlo error of any minibatch estimate.  ``maxval`` may be a
    Python int or a traced integer scalar in ``[1, 2^31)``.  The index stream
    is separate from the normal stream of the same key.  Same numbers on every
    backend.
    """
    num = int(num)
    k0, k1 = _key_words(key)
    bits = _stream_words(k0, k1, 0, num, _TAG_INDEX, both=False)
    m = jnp.asarray(maxval).astype(jnp.uint32)
    return _mulhi_u32(bits, m).astype(jnp.int32)


def uniform_at(key, counter, dtype=jnp.float32) -> jax.Array:
    """One uniform number in ``(0, 1)`` for the integer ``counter`` of ``key``.

    A single Threefry-2x32-20 block of ``(counter, tag)``: distinct counters of
    one key give independent numbers, so a loop can draw its ``i``-th number
    without splitting keys (NUTS uses it once per leapfrog step). 24 bits of
    the first output word give ``u = (k + 1/2) 2^-24``, never 0 or 1.
    ``counter`` may be traced.
    """
    k0, k1 = _key_words(key)
    ctr = jnp.asarray(counter).astype(jnp.uint32)
    bits = _threefry2x32(k0, k1, ctr, np.uint32(_TAG_UNIFORM))
    return ((bits >> np.uint32(8)).astype(dtype) + 0.5) * np.asarray(2.0**-24, dtype)
