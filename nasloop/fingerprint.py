"""Code fingerprints for the novelty index: token streams, k-token shingles, MinHash.

Two token modes:

* ``CANONICAL`` (default): comments, docstrings, layout, ``;`` and trailing commas are dropped;
  identifiers become ``ID`` unless they are Python keywords or builtins, names of the candidate
  contract, or torch / nn / functional / optim names (``torch_names.txt``) -- after ``self.``
  only contract and nn.Module API names are kept; numbers become ``NUM`` and string literals
  ``STR``; operators are kept. Renaming variables or reformatting leaves the stream unchanged,
  so such a copy is not "new".
* ``RAW``: the paper's mode, whitespace-split tokens of the code as it is.

The lexer is a single regular expression and never raises: broken code, unterminated strings and
any Unicode give some token stream, in time linear in the input.

MinHash: datasketch's ``affine64`` scheme with the fixed seed ``MINHASH_SEED``, so fingerprints
are comparable across processes and restarts. For speed the shingle hashes are computed in numpy
(each distinct token hashed once with BLAKE2b, a window of k token hashes combined by a
polynomial mod 2^64) and datasketch's permutation formula is applied to all of them at once.
The result is exactly what ``datasketch.MinHash(num_perm, seed=MINHASH_SEED, scheme="affine64",
hashfunc=shingle_hash).update_batch(shingles(tokens, k))`` gives (a test checks this), so the
Jaccard estimate of two fingerprints is ``mean(hv1 == hv2)`` and they work with ``MinHashLSH``.

Everything here is pure and safe to call from many threads (the caches only memoise).
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
from enum import StrEnum
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np
from datasketch import MinHash

MINHASH_SEED = 1
MINHASH_SCHEME = "affine64"


class TokenMode(StrEnum):
    CANONICAL = "canonical"
    RAW = "raw"


# Names of the candidate contract, and nn.Module / Tensor methods and layer keyword arguments
# that carry structure.
_CONTRACT_NAMES = """
supported_hyperparameters Net train_setup learn forward __init__ in_shape out_shape prm device
criteria optimizer super self torch nn F functional optim init lr_scheduler to zero_grad
backward step parameters named_parameters modules children train eval view reshape size
flatten permute transpose contiguous unsqueeze squeeze expand item detach add_module
register_buffer append extend __name__ __main__ in_channels out_channels in_features
out_features num_features kernel_size stride padding dilation groups bias inplace dim lr
momentum weight_decay
""".split()  # noqa: SIM905


def _load_torch_names() -> frozenset[str]:
    path = Path(__file__).with_name("torch_names.txt")
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


KEPT_NAMES: frozenset[str] = (
    frozenset(
        [*keyword.kwlist, *(n for n in dir(builtins) if not n.startswith("_")), *_CONTRACT_NAMES]
    )
    | _load_torch_names()
)
# After ``self.`` a name is the author's attribute (``self.relu = nn.ReLU()``) and becomes ID,
# unless it belongs to the candidate contract or the nn.Module API.
SELF_KEPT_NAMES: frozenset[str] = frozenset(
    """
    device criteria optimizer forward train_setup learn parameters named_parameters modules
    named_modules children named_children train eval to cuda cpu apply state_dict
    load_state_dict zero_grad register_buffer register_parameter add_module training half float
    double requires_grad_
    """.split()  # noqa: SIM905
)

_STRING = r"""
    [rRbBuUfFtT]{0,2}
    (?: '''[^'\\]*(?:(?:\\.?|'(?!''))[^'\\]*)*(?:'''|\Z)
      | \"\"\"[^"\\]*(?:(?:\\.?|"(?!""))[^"\\]*)*(?:\"\"\"|\Z)
      | '[^'\\\r\n]*(?:\\.?[^'\\\r\n]*)*'?
      | "[^"\\\r\n]*(?:\\.?[^"\\\r\n]*)*"?
    )"""
_NUMBER = r"""
    (?: 0[xX][0-9a-fA-F_]+ | 0[bB][01_]+ | 0[oO][0-7_]+
      | (?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?[jJ]? )"""
# Ordered by frequency; a name directly followed by a quote is a string prefix (rb"...").
_OPERATOR = r"""
    (?: -> | \.\.\. | (?:\*\*|//|>>|<<|[-+*/%&|^@<>=!:])=? | \.(?!\d) | [^\s\w'"\#.] )"""
# Layout and comments are skipped in front of every token; what follows is one token (group 1),
# a trailing comma before a closing bracket (group 1 empty, like the end) or the end of the
# text. Every position matches, so the scan is linear on any input. No possessive quantifier or
# atomic group: CPython before 3.11.3 (Debian 12's 3.11.2) matches some of them wrongly. Each
# repeat is written so that backtracking cannot change the match instead (a comment runs to the
# end of its line, a name to the end of its word), and after the layout skip one alternative
# always matches, so nothing backtracks into it.
_TOKEN_RE = re.compile(
    rf"""
    [^\S\r\n]*(?:(?:\\\r?\n|\#[^\r\n]*)[^\S\r\n]*)*
    (?: ,(?=(?:\s|\\|\#[^\r\n]*(?![^\r\n]))*[)\]}}]) | (
      [^\W\d]\w*(?![\w'"])
    | {_OPERATOR}
    | {_NUMBER}
    | \r?\n|\r
    | {_STRING}
    | \w+
    | \Z
    ))""",
    re.VERBOSE | re.DOTALL,
)
_NL = ""  # stand-in for a newline, ";" and the end; falsy, so filter(None, ...) drops it
_DIGITS = frozenset("0123456789")
_DEPTH = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def _canonical(text: str) -> str:
    c = text[:1]
    if not c or c in "\r\n;":  # a ";" separates statements like a newline does
        return _NL
    if c in "'\"":
        return "STR"
    if c in _DIGITS or (c == "." and text[1:2] in _DIGITS):
        return "NUM"
    if c.isalnum() or c == "_":
        if "'" in text or '"' in text:
            return "STR"
        return text if text in KEPT_NAMES else "ID"
    return text


class _CanonicalCache(dict[str, str]):
    """Lexeme -> canonical token, computed on first use; string literals are not kept."""

    limit = 100_000

    def __missing__(self, text: str) -> str:
        token = _canonical(text)
        if token != "STR":
            if len(self) >= self.limit:
                self.clear()
            self[text] = token
        return token


_CANONICAL = _CanonicalCache()


def tokens(code: str, mode: TokenMode = TokenMode.CANONICAL) -> list[str]:
    """The token stream of ``code`` in ``mode``; never raises (garbage gives some stream)."""
    if TokenMode(mode) is TokenMode.RAW:
        return code.split()
    toks = list(map(_CANONICAL.__getitem__, _TOKEN_RE.findall(code)))
    if "STR" in toks:
        _drop_string_statements(toks)
    toks = list(filter(None, toks))
    _normalise_self_attributes(toks)
    return toks


def _normalise_self_attributes(toks: list[str]) -> None:
    """``self . NAME`` -> ``self . ID`` for kept names that are not contract / nn.Module API."""
    end = len(toks) - 2
    i = -1
    try:
        while True:
            i = toks.index("self", i + 1)
            if i < end and toks[i + 1] == ".":
                name = toks[i + 2]
                if name in KEPT_NAMES and name not in SELF_KEPT_NAMES:
                    toks[i + 2] = "ID"
    except ValueError:
        return


def _drop_string_statements(toks: list[str]) -> None:
    """Blank out statements made of string literals only (docstrings and the like).

    ``toks`` still holds the newline stand-ins (newlines and ``;``); a statement runs from one
    to the next at bracket depth 0.
    """
    n = len(toks)
    depth: np.ndarray | None = None
    i = toks.index("STR")
    while True:
        j = i
        while j < n and toks[j] == "STR":
            j += 1
        if (i == 0 or toks[i - 1] == _NL) and (j == n or toks[j] == _NL):
            if depth is None:  # bracket depth after each token, floored at 0 like a parser
                walk = np.cumsum(np.fromiter(map(_DEPTH.get, toks, repeat(0, n)), np.int64, n))
                depth = walk - np.minimum(np.minimum.accumulate(walk), 0)
            if i == 0 or depth[i - 1] == 0:
                toks[i:j] = [_NL] * (j - i)
        try:
            i = toks.index("STR", j)
        except ValueError:
            return


def shingles(toks: list[str], k: int) -> list[bytes]:
    """The k-token shingles of ``toks`` (tokens joined by a space, UTF-8).

    Fewer than k tokens give one shingle of all of them; no tokens give none. Tokens never hold
    whitespace, so the encoding is unambiguous.
    """
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    if not toks:
        return []
    count = max(len(toks) - k + 1, 1)
    return [_encode(" ".join(toks[i : i + k])) for i in range(count)]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(_encode(token), digest_size=8).digest(), "little")


_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the shingle polynomial
_MASK64 = (1 << 64) - 1


def shingle_hash(shingle: bytes) -> int:
    """The 64-bit hash of one shingle from :func:`shingles` (the reference for the fast path)."""
    h = 0
    for tok in shingle.split(b" "):
        h = (h * int(_MULT) + _token_hash(tok.decode("utf-8", "surrogatepass"))) & _MASK64
    return h


class _TokenHashCache(dict[str, int]):
    """Token -> 64-bit hash, computed on first use; bounded (raw mode has no fixed vocabulary)."""

    limit = 200_000

    def __missing__(self, token: str) -> int:
        if len(self) >= self.limit:
            self.clear()
        value = self[token] = _token_hash(token)
        return value


_TOKEN_HASHES = _TokenHashCache()


def shingle_hashes(toks: list[str], k: int) -> np.ndarray:
    """``[shingle_hash(s) for s in shingles(toks, k)]`` as uint64, vectorised."""
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    n = len(toks)
    th = np.fromiter(map(_TOKEN_HASHES.__getitem__, toks), dtype=np.uint64, count=n)
    if n == 0:
        return th
    width = min(k, n)
    count = n - width + 1
    h = th[:count].copy()
    for j in range(1, width):  # Horner: h = h * MULT + t, wrapping mod 2^64
        h *= _MULT
        h += th[j : j + count]
    return h


@lru_cache(maxsize=16)
def permutations(num_perm: int) -> np.ndarray:
    """datasketch's (a, b) permutation parameters for ``num_perm`` at the fixed seed."""
    perms = MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations
    perms.setflags(write=False)
    return perms


_FMIX = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_CHUNK = 1024  # shingles per block of the (shingles x num_perm) product


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, datasketch's pre-mix for the affine schemes."""
    s, m1, m2 = _FMIX
    h = h ^ (h >> s)
    h = h * m1
    h = h ^ (h >> s)
    h = h * m2
    return h ^ (h >> s)


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for a non-empty vector, by sort and compare (numpy 2's
    ``unique`` costs ~2.5 times as much on a thousand elements)."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def minhash_of_hashes(hashes: np.ndarray, num_perm: int) -> np.ndarray:
    """MinHash hash values (uint64, shape (num_perm,)) of a set of 64-bit element hashes."""
    if len(hashes) == 0:
        raise ValueError("cannot fingerprint an empty set")
    a, b = permutations(num_perm)
    # A MinHash is of a set: repeated shingles (common in code) change nothing, so drop them.
    mixed = _fmix64(_distinct(np.asarray(hashes, dtype=np.uint64)))[:, None]
    out = np.full(num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
    # One reused block buffer: numpy temporaries of this size cost more than the arithmetic.
    buf = np.empty((min(len(mixed), _CHUNK), num_perm), dtype=np.uint64)
    for i in range(0, len(mixed), _CHUNK):
        block = buf[: len(mixed) - i] if len(mixed) - i < _CHUNK else buf
        np.multiply(mixed[i : i + _CHUNK], a, out=block)  # a * h + b mod 2^64
        np.add(block, b, out=block)
        np.minimum(out, block.min(axis=0), out=out)
    return out


def minhash(
    code: str,
    mode: TokenMode = TokenMode.CANONICAL,
    shingle_size: int = 7,
    num_perm: int = 128,
) -> np.ndarray:
    """The MinHash fingerprint of ``code``: uint64 hash values of shape (num_perm,).

    Raises ValueError when the code yields no tokens.
    """
    toks = tokens(code, mode)
    if not toks:
        raise ValueError(f"code yields no tokens in {TokenMode(mode).value} mode")
    return minhash_of_hashes(shingle_hashes(toks, shingle_size), num_perm)


def jaccard(hv1: np.ndarray, hv2: np.ndarray) -> float:
    """The MinHash estimate of the Jaccard similarity of two fingerprints."""
    if hv1.shape != hv2.shape:
        raise ValueError(f"fingerprint shapes differ: {hv1.shape} vs {hv2.shape}")
    return float(np.count_nonzero(hv1 == hv2)) / len(hv1)
