"""PII and secrets in code: find emails, IP addresses, keys/tokens and passwords, and replace them with placeholders.

StarCoder redacted PII before training (arXiv 2305.06161 §4; bigcode-dataset `pii/`): regexes for emails and IP
addresses (adapted from BigScience), detect-secrets for keys, and placeholders such as <EMAIL>, <KEY>, <PASSWORD>.
Arctic-SnowCoder says only that its corpus follows "a similar preprocessing pipeline [... PII redaction ...]"
(arXiv 2409.02326 §4). This module is a dependency-free regex + entropy version of that pipeline:

  email        RFC-5322-ish local@domain.tld. Left alone: reserved example/test domains (RFC 2606: example.com,
               *.test, *.invalid, *.localhost, ...), "domains" ending in a file extension (`icon@2x.png`),
               `git@host` (an ssh remote, not a person) and code such as `x@self.weight` (matrix product).
  ip_address   IPv4 and IPv6 (`ipaddress` validates). Only public addresses count (`is_global`, not multicast or
               reserved: private, loopback, link-local, documentation ranges are left alone), minus well-known public
               DNS servers (as BigCode's redaction). Version-number look-alikes are left alone: dotted quads with three
               or four single-digit parts (BigCode's `filter_versions` drops x.x.x.x) unless the line speaks of a
               dns/server/host/ip/addr, quads after "version"/"v"/"release", on lines naming an OID, a section or an
               RFC, and runs of more than four dotted numbers.
  key          known token formats (AWS access key ids, GitHub/GitLab/npm/Slack/Stripe/Google tokens, JWTs),
               private-key PEM blocks (the body), literals assigned to secret-named variables or keys (`api_key`,
               `secret`, `token`, `client_secret`, ...; >= `secret_min_length` chars with a digit, Shannon entropy
               >= `secret_min_entropy`), and generic base64-like literals in an assignment (>= `key_min_length`
               chars, upper+lower+digit, entropy >= `key_min_entropy` = 4.0 bits/char; detect-secrets'
               Base64HighEntropyString uses 4.5, which misses ~40% of random 32-char keys), unless the line speaks
               of a hash/digest/checksum (BigCode's `is_hash`), the value does not look random (mostly words, few
               upper/lower/digit changes, or a path/slug such as a hub id), or it is base64 of printable text.
  password     literals assigned to password-named variables or keys (`password`, `passwd`, `pwd`, `passphrase`),
               at least `password_min_length` chars with a digit or a symbol (or >= 12 chars).
Placeholder-like values (empty, whitespace, templates `{x}` `%s` `$X` `<x>`, `***`, "your_...", "example",
"changeme", "dummy", ..., UUIDs, sequential runs such as 123456 / abcdef) are never redacted.

`find_pii(text, cfg)` returns non-overlapping (start, end, kind) spans; `redact(text, spans)` replaces them with
`PLACEHOLDERS[kind]`; `redact_pii(text, cfg)` does both and counts matches per kind.
"""
from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import math
import re
from collections import Counter

from snowcoder.config import PIIConfig

PLACEHOLDERS: dict[str, str] = {"email": "<EMAIL>", "ip_address": "<IP_ADDRESS>", "key": "<KEY>",
                                "password": "<PASSWORD>"}
KINDS: tuple[str, ...] = tuple(PLACEHOLDERS)
Span = tuple[int, int, str]

# --------------------------------------------------------------------------- helpers


def shannon_entropy(s: str) -> float:
    """Shannon entropy of the characters of `s`, in bits per character (0 for the empty string)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


_DUMMY_WORDS = ("example", "dummy", "placeholder", "changeme", "change_me", "change-me", "your", "xxx", "redacted",
                "password", "passwd", "passphrase", "secret", "token", "fake", "sample", "test", "foo", "none",
                "null", "undefined", "todo", "insert", "replace", "enter", "...", "\u2026")
_TEMPLATE_CHARS = set("{}$%<>*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")  # detect-secrets
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl")


def _sequential(value: str, run: int = 6) -> bool:
    """Contains `run` consecutive characters of 0123456789, the alphabet or a keyboard row (detect-secrets'
    is_sequential_string): "sk-1234567890", "ABCDEFGHIJ...", "qwerty123"."""
    low = value.lower()
    return any(seq[i:i + run] in low for seq in _SEQUENCES for i in range(len(seq) - run + 1))


def is_placeholder(value: str) -> bool:
    """True for values that stand for a secret rather than being one: empty or spaced text, templates ({x}, %s,
    $X, <x>), masks (***, xxxx, sk-...abc), well-known dummies (example, changeme, your_key_here, ...), sequential
    runs (123456, abcdef), paths and URLs."""
    low = value.lower()
    return (
        not value
        or any(c.isspace() for c in value)
        or any(c in _TEMPLATE_CHARS for c in value)
        or len(set(value)) <= 2
        or any(w in low for w in _DUMMY_WORDS)
        or "://" in value
        or value.startswith(("/", "./", "../", "~/"))
        or _sequential(value)
        or _UUID.fullmatch(value) is not None
    )


_WORDISH = re.compile(r"[A-Z][a-z]{2,}|[a-z]{4,}|[A-Z]{4,}")


def is_wordlike(value: str, fraction: float = 0.7) -> bool:
    """Mostly made of words (CamelCase names, alphabets): Capitalised words and runs of >= 4 letters of one case
    cover more than `fraction` of it. In random base64 strings of 32-64 characters they cover 31% (median), 58-66%
    (99th percentile)."""
    return sum(len(w) for w in _WORDISH.findall(value)) > fraction * len(value)


def _char_class(c: str) -> int:
    return 0 if c.isupper() else 1 if c.islower() else 2 if c.isdigit() else 3


def class_changes(value: str) -> float:
    """Fraction of adjacent characters of different classes (upper, lower, digit, other): 0.65 in random base64
    (0.42 at the 1st percentile), lower in names such as "ELBSecurityPolicy-TLS13-1-2-2021-06"."""
    if len(value) < 2:
        return 0.0
    classes = [_char_class(c) for c in value]
    return sum(a != b for a, b in zip(classes, classes[1:])) / (len(value) - 1)


def looks_random(value: str) -> bool:
    """A base64-like literal that may be a key: not mostly words, not name-like (few character-class changes), not
    a path (a key is written in one base64 alphabet: '+' and '/' or '-' and '_', not both kinds), not a slug of
    short dash-separated pieces."""
    mixed_alphabets = any(c in value for c in "+/") and any(c in value for c in "-_")
    separators = sum(value.count(c) for c in "-_.")
    slug = separators >= 3 and len(value) / (separators + 1) < 7  # BSD-3-Clause-No-Nuclear-License-2014
    return not (mixed_alphabets or slug or is_wordlike(value) or class_changes(value) < 0.42)


def is_encoded_text(value: str) -> bool:
    """A base64 string that decodes to printable ASCII text ('VGhlc2Ug...' = 'These ...', '{"index": 11}'): encoded
    data, not a key (a key decodes to random bytes)."""
    core = value.rstrip("=")
    if len(core) < 8:
        return False
    try:
        raw = base64.b64decode(core + "=" * (-len(core) % 4), altchars=b"-_" if ("-" in core or "_" in core) else None)
    except (binascii.Error, ValueError):
        return False
    return bool(raw) and sum(32 <= b < 127 or b in (9, 10, 13) for b in raw) >= 0.95 * len(raw)


def _line_of(text: str, start: int, end: int) -> str:
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", end)
    return text[a: b if b >= 0 else len(text)]


# --------------------------------------------------------------------------- emails
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-@]|\.[A-Za-z0-9])")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net", "example.edu")
_RESERVED_TLDS = {"example", "test", "invalid", "localhost", "local"}
_FILE_TLDS = {  # "tlds" that are file extensions: icon@2x.png, lib@1x.js ...
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "css", "js", "mjs", "ts", "py", "rb",
    "go", "rs", "java", "json", "yaml", "yml", "xml", "html", "htm", "md", "txt", "sh", "map", "so", "dll", "exe",
    "zip", "gz", "tar", "lock", "toml", "ini", "cfg", "pdf", "mp3", "mp4", "wav", "ttf", "woff", "woff2", "eot",
}
_CODE_RECEIVERS = {"self", "this", "cls", "super", "np", "torch", "tf"}


def _emails(text: str) -> list[Span]:
    """local@domain.tld around each '@' (a scan for '@', not a regex over the whole file)."""
    spans = []
    at = text.find("@")
    while at >= 0:
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        while start < at and not text[start].isalnum():  # the local part starts with a letter or digit
            start += 1
        local = _EMAIL_LOCAL.fullmatch(text, start, at)
        before = text[start - 1] if start > 0 else ""
        dom = _EMAIL_DOMAIN.match(text, at + 1) if local and not (before.isalnum() or before in "_@") else None
        if dom:
            domain = dom.group().lower()
            labels = domain.split(".")
            if not (domain.endswith(_RESERVED_DOMAINS) or labels[-1] in _RESERVED_TLDS or labels[-1] in _FILE_TLDS
                    or labels[0] in _CODE_RECEIVERS or local.group().lower() == "git"):
                spans.append((start, dom.end(), "email"))
        at = text.find("@", at + 1)
    return spans


# --------------------------------------------------------------------------- IP addresses
_IPV4_TAIL = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}")  # starts with a literal: a fast scan
# only global unicast IPv6 (2000::/3) can be public: a first group of 4 hex digits 2xxx or 3xxx, then 2-7 more groups.
# The regex starts at the first colon (a literal: a fast scan); the first group is checked before it.
_IPV6_TAIL = re.compile(r":[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6}")
_IPV6_HEAD = re.compile(r"[23][0-9A-Fa-f]{3}")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|ver|release|rev|v)\W{0,3}$")
_NOT_IP_LINE = re.compile(r"(?i)objectidentifier|\boid\b|_oid|oid_|section|chapter|\u00a7|\brfc\b|release|version")
_IP_CONTEXT = re.compile(r"(?i)dns|server|host|\bip\b|addr")
PUBLIC_DNS_SERVERS = frozenset({  # BigCode pii_redaction.py POPULAR_DNS_SERVERS, plus their IPv6 twins
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "76.76.19.19", "76.223.122.150", "9.9.9.9", "149.112.112.112",
    "208.67.222.222", "208.67.220.220", "8.26.56.26", "8.20.247.20", "94.140.14.14", "94.140.15.15",
    "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "2620:fe::fe", "2620:fe::9",
})


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private)


def _ipv4_candidates(text: str):
    """(start, end) of dotted quads not glued to other words or numbers (1.2.3.4.5, v1.2.3.4a, 1.2.3.4.in-addr)."""
    for m in _IPV4_TAIL.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 3 and text[start - 1].isdigit():
            start -= 1
        end = m.end()
        if start == m.start() or (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._")):
            continue
        if end < len(text) and (text[end].isalnum() or text[end] == "_"
                                or text[end] == "." and end + 1 < len(text) and text[end + 1].isalnum()):
            continue
        yield start, end


def _ip_addresses(text: str) -> list[Span]:
    spans = []
    for start, end in _ipv4_candidates(text):
        s = text[start:end]
        try:
            ip = ipaddress.IPv4Address(s)
        except ValueError:  # 999.1.1.1, leading zeros ...
            continue
        if not _public(ip) or s in PUBLIC_DNS_SERVERS:
            continue
        line = _line_of(text, start, end)
        if _VERSION_BEFORE.search(text[max(text.rfind("\n", 0, start) + 1, start - 30): start]) \
                or _NOT_IP_LINE.search(line):  # a version, an OID, a section number
            continue
        if sum(len(part) == 1 for part in s.split(".")) >= 3 and not _IP_CONTEXT.search(line):
            continue  # 1.2.3.4, 3.0.5.130, 2.4.8.19: a version / section number unless the line talks of hosts
        spans.append((start, end, "ip_address"))
    for m in _IPV6_TAIL.finditer(text):
        start, end = m.start() - 4, m.end()
        if start < 0 or not _IPV6_HEAD.fullmatch(text, start, m.start()) \
                or start > 0 and (text[start - 1].isalnum() or text[start - 1] in ":._") \
                or end < len(text) and (text[end].isalnum() or text[end] in ":_"):
            continue
        try:
            ip = ipaddress.IPv6Address(text[start:end])
        except ValueError:  # times (2023:10:05), MAC-like runs ...
            continue
        if _public(ip) and str(ip) not in PUBLIC_DNS_SERVERS:
            spans.append((start, end, "ip_address"))
    return spans


# --------------------------------------------------------------------------- keys and passwords
# Known token formats. Each pattern starts with a literal (no leading \b: that defeats the regex engine's fast
# prefix scan), the word boundary before it is checked in Python.
_KNOWN_TOKENS: list[re.Pattern] = [
    # AWS access key ids; Google API keys
    re.compile(r"A(?:(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[0-9A-Z]{16}(?![0-9A-Za-z_])|Iza[0-9A-Za-z_\-]{35}(?![\w\-]))"),
    # GitHub tokens, GitHub fine-grained tokens, GitLab personal access tokens
    re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{36,255}(?![0-9A-Za-z_])|ithub_pat_[A-Za-z0-9_]{60,255}(?![0-9A-Za-z_])"
               r"|lpat-[A-Za-z0-9_\-]{20,})"),
    re.compile(r"npm_[A-Za-z0-9]{36}(?![0-9A-Za-z_])"),  # npm tokens
    re.compile(r"xox[abposr]-[A-Za-z0-9\-]{10,250}"),  # Slack tokens
    re.compile(r"k_(?:live|test)_[A-Za-z0-9]{16,99}(?![0-9A-Za-z_])"),  # Stripe keys (sk_/rk_: see _LEAD)
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JSON Web Tokens
]
_LEAD = {"k": "rs"}  # a token whose match starts at "k_" begins one character earlier, with one of these


_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?P<label>(?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----(?P<body>[\s\S]*?)"
    r"-----END (?P=label)PRIVATE KEY(?: BLOCK)?-----"
)
# a secret-named variable or key, an assignment operator (with an optional type annotation), a string literal
_SECRET_ASSIGN = re.compile(
    r"(?P<kw>client[_\-]?secret|secret[_\-]?key|private[_\-]?key|access[_\-]?key|auth[_\-]?key|api[_\-]?key|"
    r"pass(?:word|wd|phrase)?|pwd|secret|token|credential)s?(?![A-Za-z0-9_])"
    r"[\"'\]]{0,2}\s*(?:(?::\s*[A-Za-z_][\w.\[\]]*\s*)?:?=(?!=)|=>|:)\s*[bBrRuU]{0,2}"
    r"(?:\"(?P<v1>[^\"\n\\]{1,256})\"|'(?P<v2>[^'\n\\]{1,256})'|`(?P<v3>[^`\n\\]{1,256})`)",
    re.IGNORECASE,
)
_HASH_WORDS = re.compile(r"(?i)sha|md5|hash|digest|checksum|integrity|fingerprint|signature|nonce|uuid|guid|crc")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


@functools.lru_cache(maxsize=8)
def _literal_res(min_length: int) -> tuple[re.Pattern, ...]:
    """Quoted base64-like literals of at least `min_length` characters: one pattern per quote character, each
    starting with a literal (a fast scan, unlike one pattern starting with a character class)."""
    return tuple(re.compile(q + r"(?P<value>[A-Za-z0-9+/_\-]{%d,}={0,2})" % min_length + q) for q in "\"'`")


def _keyword_boundary(text: str, start: int) -> bool:
    """The secret keyword starts an identifier word: after a non-alphanumeric character (`db_password`,
    `API_KEY`) or at a camelCase hump (`dbPassword`), not inside a word (`bypass`, `compass`)."""
    if start == 0 or not text[start - 1].isalnum():
        return True
    return text[start - 1].islower() and text[start].isupper()


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:[.:][A-Za-z_]\w*)+")  # module.attr, pkg.mod:Class
_NOT_SECRET_NAMES = ("public", "page", "next", "cursor", "continuation", "sync")  # publicKeyToken, next_page_token


def _is_password(value: str, cfg: PIIConfig) -> bool:
    if len(value) < cfg.password_min_length or is_placeholder(value) or _ENV_NAME.fullmatch(value) \
            or _DOTTED_NAME.fullmatch(value):
        return False
    return len(value) >= 12 or any(not c.isalpha() for c in value)


def _is_secret(value: str, cfg: PIIConfig) -> bool:
    if len(value) < cfg.secret_min_length or is_placeholder(value) or _ENV_NAME.fullmatch(value) \
            or _DOTTED_NAME.fullmatch(value) or is_wordlike(value) or is_encoded_text(value):
        return False
    return any(c.isdigit() for c in value) and shannon_entropy(value) >= cfg.secret_min_entropy


def _identifier_before(text: str, kw_start: int) -> str:
    """The whole (dotted) name the secret keyword ends: `self.next_page_` + `token`."""
    a = kw_start
    while a > 0 and kw_start - a < 64 and (text[a - 1].isalnum() or text[a - 1] in "_.-"):
        a -= 1
    return text[a:kw_start].lower()


def _assignment_before(text: str, quote_at: int) -> bool:
    """Whether the literal starting at `quote_at` is the right-hand side of an assignment (`x = "..."`,
    `"x": "..."`, `x := `, `x => `), not an argument or a comparison (`==`, `!=`, `<=`, `>=`)."""
    before = text[max(0, quote_at - 40): quote_at].rstrip("bBrRuU").rstrip()
    if before.endswith(("==", "!=", "<=", ">=")):
        return False
    return before.endswith(("=", ":", "=>"))


_SECRET_WORDS = ("secret", "pass", "pwd", "token", "credential", "key")  # the word that ends (or is) a keyword
_KEY_PREFIXES = ("api", "access", "auth", "private", "secret")  # "key" is a keyword only after one of these


def _secret_assignments(text: str):
    """_SECRET_ASSIGN matches, tried only where a keyword occurs (str.find on the lowercased text: six scans at
    C speed instead of a case-insensitive regex over the whole file)."""
    low = text.lower()
    seen = set()
    for word in _SECRET_WORDS:
        pos = low.find(word)
        while pos >= 0:
            start = pos
            if word == "key":  # api_key, accessKey, private-key ...: the keyword starts at the prefix
                head = low[max(0, pos - 8):pos]
                head = head[:-1] if head.endswith(("_", "-")) else head
                prefix = next((p for p in _KEY_PREFIXES if head.endswith(p)), None)
                start = pos - (len(low[max(0, pos - 8):pos]) - len(head)) - len(prefix) if prefix else -1
            if start >= 0 and _keyword_boundary(text, start):
                m = _SECRET_ASSIGN.match(text, start)
                if m is not None:
                    group = next(g for g in ("v1", "v2", "v3") if m.group(g) is not None)
                    if m.span(group) not in seen:
                        seen.add(m.span(group))
                        yield m, group
            pos = low.find(word, pos + 1)


def _keys_and_passwords(text: str, cfg: PIIConfig) -> list[Span]:
    spans: list[Span] = []
    if cfg.secrets and "PRIVATE KEY" in text:
        for m in _PRIVATE_KEY.finditer(text):
            body = m.group("body")
            stripped = body.strip()
            if len(stripped) >= 32 and shannon_entropy(stripped) >= 3.0:
                a = m.start("body") + (len(body) - len(body.lstrip()))
                spans.append((a, a + len(stripped), "key"))
    if cfg.secrets:
        for rx in _KNOWN_TOKENS:
            for m in rx.finditer(text):
                start = m.start()
                lead = _LEAD.get(text[start])
                if lead is not None:
                    if start == 0 or text[start - 1] not in lead:
                        continue
                    start -= 1
                value = text[start:m.end()]
                if (start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")) \
                        and "EXAMPLE" not in value.upper() and shannon_entropy(value) >= 3.0:
                    spans.append((start, m.end(), "key"))
    for m, group in _secret_assignments(text):
        value = m.group(group)
        kind = "password" if m.group("kw").lower().startswith(("pass", "pwd")) else "key"
        if kind == "password" and cfg.passwords and _is_password(value, cfg) \
                or kind == "key" and cfg.secrets and _is_secret(value, cfg) \
                and not any(w in _identifier_before(text, m.start("kw")) for w in _NOT_SECRET_NAMES):
            spans.append((m.start(group), m.end(group), kind))
    if cfg.secrets:
        for m in (m for rx in _literal_res(cfg.key_min_length) for m in rx.finditer(text)):
            value = m.group("value")
            if not (any(c.isupper() for c in value) and any(c.islower() for c in value)
                    and any(c.isdigit() for c in value)):
                continue
            if shannon_entropy(value) < cfg.key_min_entropy or not _assignment_before(text, m.start()):
                continue
            if is_placeholder(value) or not looks_random(value) or is_encoded_text(value) \
                    or _HASH_WORDS.search(_line_of(text, m.start(), m.end())):
                continue
            spans.append((m.start("value"), m.end("value"), "key"))
    return spans


# --------------------------------------------------------------------------- API
def find_pii(text: str, cfg: PIIConfig) -> list[Span]:
    """Non-overlapping (start, end, kind) spans of PII in `text`, sorted by start. Where detections overlap, the
    earlier detector wins: keys and passwords, then emails, then IP addresses."""
    if not cfg.enabled:
        return []
    found: list[Span] = []
    if cfg.secrets or cfg.passwords:
        found += _keys_and_passwords(text, cfg)
    if cfg.emails:
        found += _emails(text)
    if cfg.ip_addresses:
        found += _ip_addresses(text)
    kept: list[Span] = []
    for span in found:  # in priority order; O(n^2) on a handful of spans per file
        if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
            kept.append(span)
    return sorted(kept)


def redact(text: str, spans: list[Span] | list[list]) -> str:
    """`text` with each (start, end, kind) span (sorted, non-overlapping) replaced by PLACEHOLDERS[kind]."""
    out, pos = [], 0
    for start, end, kind in spans:
        out.append(text[pos:start])
        out.append(PLACEHOLDERS[kind])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_pii(text: str, cfg: PIIConfig) -> tuple[str, dict[str, int]]:
    """(`text` with its PII replaced by placeholders, number of replacements per kind)."""
    spans = find_pii(text, cfg)
    return redact(text, spans), dict(Counter(kind for _, _, kind in spans))
