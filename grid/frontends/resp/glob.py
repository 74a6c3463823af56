"""Redis's glob-style pattern matching (util.c stringmatchlen), for KEYS and SCAN MATCH.

Ported as it is rather than mapped onto fnmatch or a regex, because the corner
cases differ: `[^a]` negates (fnmatch uses `[!a]`), a backslash escapes anywhere,
an unterminated `[` matches what it has read so far, and `[z-a]` is `[a-z]`.
"""

from __future__ import annotations


def match(pattern: bytes, string: bytes) -> bool:
    """Whether `string` matches `pattern` as Redis's KEYS would say."""
    if pattern == b"*":
        return True
    return _match(pattern, 0, string, 0)


def _match(pat: bytes, p: int, s: bytes, i: int) -> bool:
    plen, slen = len(pat), len(s)

    def at(k: int) -> int:
        return pat[k] if k < plen else 0

    while p < plen and i < slen:
        c = pat[p]
        if c == 42:  # '*'
            while p + 1 < plen and pat[p + 1] == 42:
                p += 1
            if p + 1 == plen:
                return True
            while i < slen:
                if _match(pat, p + 1, s, i):
                    return True
                i += 1
            return False
        if c == 63:  # '?'
            i += 1
        elif c == 91:  # '['
            p += 1
            negate = at(p) == 94
            if negate:
                p += 1
            matched = False
            while True:
                if at(p) == 92 and plen - p >= 2:
                    p += 1
                    if pat[p] == s[i]:
                        matched = True
                elif at(p) == 93:
                    break
                elif p >= plen:
                    p -= 1
                    break
                elif plen - p >= 3 and pat[p + 1] == 45:
                    lo, hi = sorted((pat[p], pat[p + 2]))
                    p += 2
                    if lo <= s[i] <= hi:
                        matched = True
                elif pat[p] == s[i]:
                    matched = True
                p += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            i += 1
        else:
            if c == 92 and plen - p >= 2:  # '\\'
                p += 1
            if pat[p] != s[i]:
                return False
            i += 1
        p += 1
        if i == slen:
            while p < plen and pat[p] == 42:
                p += 1
            break
    return p >= plen and i == slen
