"""The one redaction function: secrets out of anything printed (logs, banners, errors).

Redis (and RTSP) URLs may carry a password in their userinfo (``redis://user:pw@host``, also
``redis://:pw@host``) or in the query (``?password=pw``); a string that does not parse as a URL
may still hold one. :func:`redact` replaces every such secret in a URL or in free text with
``***``; it never raises.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : everything between "//" and the last "@" before the host part is userinfo.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://|//)(?P<userinfo>[^\s/?#@]*(?::|%3[Aa])[^\s/?#]*)@")
# A URL with its scheme missing or mangled (``:pw@host``, ``user:pw@host``).
_BARE_USERINFO = re.compile(r"(?<![\w/:@])(?P<user>[^\s/:@'\"]*):(?P<pw>[^\s/@'\"]+)@(?=[\w\[])")
# key=value pairs whose key names a secret, in queries, option strings, or prose.
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|pass|secret|token|auth|api[_-]?key|access[_-]?key)\b\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&;,'\")]+)",
    re.IGNORECASE,
)


def redact(text: object) -> str:
    """``text`` (a URL, a message, anything ``str()`` can render) with every password as ``***``.

    Userinfo ``user:pw@`` becomes ``user:***@`` (the user name stays: it helps fixing ACL
    errors); ``password=pw`` (query or prose) becomes ``password=***``.
    """
    s = text if isinstance(text, str) else str(text)
    if "@" in s:
        s = _USERINFO.sub(_mask_userinfo, s)
        s = _BARE_USERINFO.sub(lambda m: f"{m.group('user')}:{MASK}@", s)
    return _SECRET_PARAM.sub(lambda m: m.group("key") + MASK, s)


def _mask_userinfo(m: re.Match) -> str:
    info = m.group("userinfo")
    sep = ":" if ":" in info else info[info.lower().index("%3a") : info.lower().index("%3a") + 3]
    user = info.split(sep, 1)[0]
    return f"{m.group('scheme')}{user}:{MASK}@"
